"""Templates must not reach Python internals, and must not build unbounded values."""

from typing import Any

import pytest

from jobsprint.workflows import TemplateError, check_template, evaluate, render

pytestmark = pytest.mark.unit

CTX: dict[str, Any] = {
    "input": {"name": "Ada", "items": [{"id": 1}], "big": "x" * 2_000_000},
    "steps": {},
    "execution": {"id": "e1"},
}

ESCAPES = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ input.__class__ }}",
    "{{ input['__class__'] }}",
    "{{ input.name.__class__.__base__ }}",
    "{{ input.items.__class__ }}",
    "{{ (1).__class__ }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner.__init__.__globals__ }}",
    "{{ namespace.__init__.__globals__ }}",
    "{{ lipsum.__globals__ }}",
    "{{ range.__globals__ }}",
    "{{ range.__call__ }}",
    "{{ self }}",
    "{{ self.__init__.__globals__ }}",
    "{{ self._TemplateReference__context }}",
    "{{ config }}",
    "{{ request.application.__globals__ }}",
    "{{ ''|attr('__class__') }}",
    "{{ input.name|attr('format') }}",
    "{{ input.name.format }}",
    "{{ '{0.__class__}'.format(input.name) }}",
    "{{ input.name.format_map }}",
    "{{ input.name.encode('utf-8') }}",
    "{{ input.items.pop() }}",
    "{{ input.items.append(1) }}",
    "{{ input.items.__len__() }}",
    "{{ (input.items | first).update({'id': 2}) }}",
    "{{ input.items | map(attribute='__class__') | list }}",
    "{{ (1).to_bytes(10, 'big') }}",
    "{{ range(3).__iter__ }}",
    "{{ (input.items | groupby('id') | first)._asdict() }}",
    "{{ input.name.upper }}",
    "{{ range }}",
    "x {{ input.name.upper }}",
    "x {{ range }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_escapes_are_refused_with_template_error(template: str) -> None:
    with pytest.raises(TemplateError) as info:
        render(template, CTX)
    text = str(info.value)
    assert "<class" not in text and "<function" not in text and " at 0x" not in text


@pytest.mark.parametrize("template", ESCAPES[:19])
def test_escapes_are_refused_in_conditions(template: str) -> None:
    with pytest.raises(TemplateError):
        evaluate(template, CTX)


def test_escape_attempts_do_not_modify_the_context() -> None:
    ctx = {"input": {"items": [{"id": 1}]}, "steps": {}, "execution": {}}
    for template in ["{{ input.items.append(2) }}", "{{ (input.items|first).update({'id': 9}) }}"]:
        with pytest.raises(TemplateError):
            render(template, ctx)
    assert ctx["input"] == {"items": [{"id": 1}]}


def test_unknown_names_are_found_by_check_template() -> None:
    problems = check_template(["{{ cycler }}", "{{ self }}", "{{ lipsum() }}", "{{ config }}"])
    assert [p.split(":")[0] for p in problems] == ["[0]", "[1]", "[2]", "[3]"]
    assert all("unknown name" in p for p in problems)


def test_removed_filters_are_syntax_errors() -> None:
    for name in ["random", "pprint", "urlize", "xmlattr"]:
        problems = check_template(f"{{{{ input | {name} }}}}")
        assert problems and "No filter named" in problems[0], name


def test_allowed_string_methods_still_work() -> None:
    assert render("{{ input.name.lower().startswith('a') }}", CTX) is True
    assert render("{{ 'a,b'.split(',') }}", CTX) == ["a", "b"]
    assert render("{{ '-'.join(['a', 'b']) }}", CTX) == "a-b"
    assert render("{{ 'ab'.replace('a', 'x') }}", CTX) == "xb"
    assert render("{{ '%05d' % 42 }}", CTX) == "00042"
    assert render("{{ '%s-%s' | format(1, 2) }}", CTX) == "1-2"
    assert render("{{ (input.items | groupby('id') | first).grouper }}", CTX) == 1
    assert render("{{ [1, 2, 1].count(1) }}", CTX) == 2


RESOURCE_BOMBS = [
    "{{ 'x' * 10000000 }}",
    "{{ ['x'] * 10000000 }}",
    "{{ ['x' * 1000000] * 1000 }}",
    "{{ 2 ** 10000000 }}",
    "{{ (10 ** 5000) * (10 ** 5000) * (10 ** 5000) * (10 ** 5000) }}",
    "{{ range(100000000) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%.999999999f' % 1 }}",
    "{{ '%*d' % (999999999, 1) }}",
    "{{ '%999999999s' | format(1) }}",
    "{{ 'a' | center(999999999) }}",
    "{{ 'a'.center(999999999) }}",
    "{{ 'a'.ljust(999999999) }}",
    "{{ 'a'.zfill(999999999) }}",
    "{{ 'a' | indent(999999999, true) }}",
    "{{ ('\n' * 100000) | indent('x' * 100000) }}",
    "{{ ('a' * 500000) | replace('a', 'aaaaaaaaaa') }}",
    "{{ ('a' * 500000).replace('a', 'aaaaaaaaaa') }}",
    "{{ range(100000) | join('x' * 100000) }}",
    "{{ ('x' * 100000).join(range(100000) | map('string')) }}",
    "{{ [1] | batch(100000000, 'x') | list }}",
    "{{ [1] | slice(100000000) | list }}",
    "{{ [[1] * 100, [2] * 100] | sum(start=[]) }}",
    "{{ range(100000) | map('center', 1000) | list | length }}",
    "{{ input.big ~ input.big }}",
    "{{ input.big + input.big }}",
    "{{ input | tojson(1000000) }}",
    "{{ 'x' * 600000 }}{{ 'y' * 600000 }}",
    "prefix {{ input.big }}",
]


@pytest.mark.parametrize("template", RESOURCE_BOMBS)
def test_resource_bombs_are_refused(template: str) -> None:
    with pytest.raises(TemplateError):
        render(template, CTX)


def test_output_limit_counts_across_one_render() -> None:
    template = {"a": "{{ 'x' * 700000 }}", "b": "{{ 'y' * 700000 }}"}
    with pytest.raises(TemplateError, match="larger than the limit") as info:
        render(template, CTX)
    assert info.value.location == "b"
    assert len(render({"a": "{{ 'x' * 700000 }}"}, CTX)["a"]) == 700000


def test_large_values_passed_through_by_a_plain_lookup_are_allowed() -> None:
    assert render("{{ input.big }}", CTX) is CTX["input"]["big"]
    assert (
        render({"a": "{{ input.big }}", "b": "{{ input['big'] }}"}, CTX)["b"] is CTX["input"]["big"]
    )


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(TemplateError):
        render("{{ " + "[" * 200 + "]" * 200 + " }}", CTX)
    with pytest.raises(TemplateError):
        render("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", CTX)


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ 'a\nb' | indent(2, first=true) }}", "  a\n  b"),
        ("{{ 'a\nb' | indent('> ') }}", "a\n> b"),
        ("{{ [1, 2, 3] | batch(2, 0) | list }}", [[1, 2], [3, 0]]),
        ("{{ [1, 2, 3] | slice(2) | list }}", [[1, 2], [3]]),
        ("{{ 'a b c' | wordwrap(1, wrapstring='|') }}", "a|b|c"),
        ("{{ 'ab' | center(4) }}", " ab "),
        ("{{ [1.5, 2] | sum }}", 3.5),
        ("{{ input.items | sum(attribute='id') }}", 1),
        ("{{ input.items | map(attribute='id') | join('-') }}", "1"),
        ("{{ 'a-b' | replace('-', '+') }}", "a+b"),
        ("{{ {'b': 1, 'a': [true]} | tojson }}", '{"b": 1, "a": [true]}'),
        ("{{ {'a': 1} | tojson(2) }}", '{\n  "a": 1\n}'),
    ],
)
def test_guarded_filters_keep_their_normal_behaviour(template: str, expected: Any) -> None:
    assert render(template, CTX) == expected
