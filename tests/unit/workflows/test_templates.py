from typing import Any

import pytest

from jobsprint.workflows import TemplateError, check_template, evaluate, render, render_text, truthy
from jobsprint.workflows.templates import check_expression

pytestmark = pytest.mark.unit


@pytest.fixture
def ctx() -> dict[str, Any]:
    return {
        "input": {
            "n": 5,
            "price": 2.5,
            "ok": True,
            "none": None,
            "name": "Ada",
            "tags": ["a", "b"],
            "user": {"id": 7, "roles": ["admin"]},
            "email": {"from": "a@example.com", "to": "b@example.com"},
            "items": [{"id": 1, "qty": 2}, {"id": 2, "qty": 3}],
            "my-key": "dash",
        },
        "steps": {"fetch": {"output": {"status": 200, "body": {"tier": "vip"}}}},
        "execution": {"id": "exec_1", "workflowId": "wf_1", "startedAt": "2025-01-01T00:00:00Z"},
    }


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ input.n }}", 5),
        ("  {{ input.n }}\n", 5),
        ("{{input.n}}", 5),
        ("{{ input.price }}", 2.5),
        ("{{ input.ok }}", True),
        ("{{ input.none }}", None),
        ("{{ input.name }}", "Ada"),
        ("{{ input.tags }}", ["a", "b"]),
        ("{{ input.user }}", {"id": 7, "roles": ["admin"]}),
        ("{{ input.n + 1 }}", 6),
        ("{{ input.n / 2 }}", 2.5),
        ("{{ input.n > 3 }}", True),
        ("{{ input.items | map(attribute='id') | list }}", [1, 2]),
        ("{{ input.items | map(attribute='qty') | sum }}", 5),
        ("{{ input.items | map(attribute='id') }}", [1, 2]),
        ("{{ (1, 2) }}", [1, 2]),
        ("{{ {'a': input.n, 'b': [input.ok]} }}", {"a": 5, "b": [True]}),
        ("{{ range(3) }}", [0, 1, 2]),
        ("{{ input.email.from }}", "a@example.com"),
        ("{{ input['my-key'] }}", "dash"),
        ("{{ input.items.0.id }}", 1),
        ("{{ input.items[-1].qty }}", 3),
        ("{{ input.tags[0:1] }}", ["a"]),
        ("{{ steps.fetch.output.body.tier }}", "vip"),
        ("{{ steps['fetch'].output.status }}", 200),
        ("{{ execution.id }}", "exec_1"),
        ("{{ input.name.upper() }}", "ADA"),
        ("{{ input.name | lower }}", "ada"),
        ("{{ '{{' }}", "{{"),
        ("{{ {'a': {'b': 1}} }}", {"a": {"b": 1}}),
    ],
)
def test_single_expression_keeps_the_json_type(
    ctx: dict[str, Any], template: str, expected: Any
) -> None:
    result = render(template, ctx)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("n={{ input.n }}", "n=5"),
        ("{{ input.n }}{{ input.n }}", "55"),
        ("{{ input.n }} items", "5 items"),
        ("ok={{ input.ok }} none={{ input.none }}", "ok=true none=null"),
        ("tags: {{ input.tags }}", 'tags: ["a", "b"]'),
        ("user: {{ input.user }}", 'user: {"id": 7, "roles": ["admin"]}'),
        ("price {{ input.price }}", "price 2.5"),
        ("{{ input.name }} & {% raw %} {# c #}", "Ada & {% raw %} {# c #}"),
        ("line\r\nnext {{ input.n }}\n", "line\r\nnext 5\n"),
        ("a  {{- input.n -}}  b", "a5b"),
        ("{{ 'x' ~ input.ok ~ input.none ~ input.tags }}!", 'xtruenull["a", "b"]!'),
        ("{{ input.ok | string }}/{{ input.user | tojson }}", 'true/{"id": 7, "roles": ["admin"]}'),
        ("{{ [input.ok, 1] | join(',') }}", "true,1"),
        ("é {{ 'ü' }}", "é ü"),
    ],
)
def test_mixed_strings_render_to_text(ctx: dict[str, Any], template: str, expected: str) -> None:
    assert render(template, ctx) == expected


def test_strings_without_templates_are_returned_unchanged(ctx: dict[str, Any]) -> None:
    for text in ["plain", "", "}} not a template", "{% if x %}", "100%", "{ {x} }"]:
        assert render(text, ctx) is text


def test_render_walks_dicts_and_lists_but_not_keys(ctx: dict[str, Any]) -> None:
    template = {
        "{{ input.n }}": "{{ input.n }}",
        "list": ["{{ input.ok }}", "id={{ input.user.id }}", 3, None, False, 1.5],
        "nested": {"deep": [{"x": "{{ input.tags }}"}]},
    }
    assert render(template, ctx) == {
        "{{ input.n }}": 5,
        "list": [True, "id=7", 3, None, False, 1.5],
        "nested": {"deep": [{"x": ["a", "b"]}]},
    }


@pytest.mark.parametrize("value", [None, True, 0, 3.5, [], {}])
def test_non_string_json_values_pass_through(ctx: dict[str, Any], value: Any) -> None:
    assert render(value, ctx) == value


def test_render_does_not_mutate_the_template(ctx: dict[str, Any]) -> None:
    template = {"a": ["{{ input.n }}"]}
    render(template, ctx)
    assert template == {"a": ["{{ input.n }}"]}


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ nope }}", "'nope' is undefined"),
        ("{{ input.missing }}", "input.missing is undefined: input has no key 'missing'"),
        ("x {{ input.user.nick }}", "input.user.nick is undefined"),
        ("{{ input.email.cc }}", "input.email.cc is undefined"),
        ("{{ input.items[5].id }}", "input.items[5] is undefined: input.items has 2 items"),
        ("{{ steps.x.output }}", "steps.x is undefined: step 'x' has not run"),
        ("{{ steps.x.output.y }}", "steps.x is undefined"),
        ("{{ input.missing + 1 }}", "input.missing is undefined"),
        ("{{ input.missing > 1 }}", "input.missing is undefined"),
        ("{{ {'a': input.missing} }}", "input.missing is undefined"),
        ("{{ input['my-key2'] }}", 'input["my-key2"] is undefined'),
    ],
)
def test_missing_values_raise_naming_the_path(
    ctx: dict[str, Any], template: str, message: str
) -> None:
    with pytest.raises(TemplateError) as info:
        render(template, ctx)
    assert message in str(info.value)


def test_missing_values_can_be_tested_and_defaulted(ctx: dict[str, Any]) -> None:
    assert render("{{ input.missing | default('n/a') }}", ctx) == "n/a"
    assert render("{{ steps.x.output.y | default(0) }}", ctx) == 0
    assert render("{{ steps.x is defined }}", ctx) is False
    assert render("{{ steps.fetch is defined }}", ctx) is True
    assert render("{{ input.none | default('d', true) }}", ctx) == "d"


def test_dict_attribute_syntax_reads_keys_not_methods() -> None:
    ctx = {"input": {"items": [1], "keys": "k", "values": None}}
    assert render("{{ input.items }}", ctx) == [1]
    assert render("{{ input.keys }}", ctx) == "k"
    assert render("{{ input.values }}", ctx) is None
    with pytest.raises(TemplateError, match=r"input\.get is undefined"):
        render("{{ input.get }}", ctx)


def test_error_location_points_inside_the_template(ctx: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as info:
        render({"a": [1, {"b c": "{{ input.zz }}"}]}, ctx)
    assert info.value.location == 'a[1]["b c"]'
    assert str(info.value).startswith('a[1]["b c"]: input.zz is undefined')


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ 1 / 0 }}", "division by zero"),
        ("{{ input.name + 1 }}", "{{ input.name + 1 }}"),
        ("{{ input.name.upper }}", "not a JSON value"),
        ("{{ 'nan' | float }}", "not a JSON number"),
        ("{{ input.n", "unclosed '{{'"),
        ("{{ }}", "empty expression"),
        ("{{ input.n + }}", "syntax error"),
    ],
)
def test_failures_are_template_errors_with_readable_messages(
    ctx: dict[str, Any], template: str, message: str
) -> None:
    with pytest.raises(TemplateError) as info:
        render(template, ctx)
    text = str(info.value)
    assert message in text
    assert "Traceback" not in text and "jinja2" not in text


def test_render_text_always_returns_text(ctx: dict[str, Any]) -> None:
    assert render_text("{{ input.n }}", ctx) == "5"
    assert render_text("{{ input.user }}", ctx) == '{"id": 7, "roles": ["admin"]}'
    assert render_text("{{ input.none }}", ctx) == "null"
    assert render_text("hi", ctx) == "hi"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("input.n > 3", True),
        ("{{ input.n > 3 }}", True),
        ("  {{ input.n < 3 }}  ", False),
        ("input.name == 'Ada' and 'admin' in input.user.roles", True),
        ("steps.fetch.output.body.tier == 'vip'", True),
        ("input.tags | length", 2),
        ("steps.x is defined", False),
        ("input.email.from", "a@example.com"),
    ],
)
def test_evaluate(ctx: dict[str, Any], expression: str, expected: Any) -> None:
    assert evaluate(expression, ctx) == expected


@pytest.mark.parametrize(
    "expression", ["{{ input.n }} and {{ input.ok }}", "input.n > 3 }} {{ 1", "", "input.n >"]
)
def test_evaluate_rejects_non_single_expressions(ctx: dict[str, Any], expression: str) -> None:
    with pytest.raises(TemplateError):
        evaluate(expression, ctx)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        (0, False),
        (0.0, False),
        ("", False),
        ([], False),
        ({}, False),
        (True, True),
        (1, True),
        ("false", True),
        ([0], True),
        ({"a": None}, True),
    ],
)
def test_truthy_is_json_truthiness(value: Any, expected: bool) -> None:
    assert truthy(value) is expected


def test_check_template_reports_syntax_errors_and_unknown_names_with_locations() -> None:
    problems = check_template(
        {
            "ok": "{{ input.n }} {{ steps.a.output | default(1) }} {{ range(2) }}",
            "bad": ["{{ input.n + }}", "{{ foo }}", "{{ steps.my-step.output }}"],
            "filter": "{{ input | nofilter }}",
            "open": "x {{ input",
        }
    )
    assert len(problems) == 5, problems
    assert problems[0].startswith("bad[0]: syntax error in {{ input.n + }}")
    assert problems[1].startswith("bad[1]: unknown name 'foo'")
    assert (
        problems[2].startswith("bad[2]: unknown name 'step'") and "steps['my-step']" in problems[2]
    )
    assert problems[3].startswith("filter: syntax error") and "nofilter" in problems[3]
    assert problems[4].startswith("open: unclosed '{{'")
    assert check_template({"a": ["plain", 1, None]}) == []


def test_check_expression() -> None:
    assert check_expression("input.n > 3") == []
    assert check_expression("{{ input.n > 3 }}") == []
    assert "syntax error" in check_expression("input.n >")[0]
    assert "unknown name 'x'" in check_expression("x > 1")[0]
    assert check_expression("{{ a }} {{ b }}") == ["a condition must be a single expression"]


def test_compiled_templates_are_cached(ctx: dict[str, Any]) -> None:
    from jobsprint.workflows import templates

    templates._compile_string_cached.cache_clear()
    for n in range(50):
        assert render("{{ input.n + 100 }}", {**ctx, "input": {"n": n}}) == n + 100
    info = templates._compile_string_cached.cache_info()
    assert info.misses == 1 and info.hits == 49


def test_long_template_strings_render_without_the_cache(ctx: dict[str, Any]) -> None:
    text = "x" * 70_000
    assert render(text + "{{ input.n }}", ctx) == text + "5"
    assert render("{{ input.n }}" + " " * 70_000, ctx) == 5
