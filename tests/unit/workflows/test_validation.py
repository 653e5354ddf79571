from typing import Any

import pytest

from jobsprint.workflows import (
    Problem,
    TemplateError,
    WorkflowDefinition,
    WorkflowError,
    WorkflowInvalid,
    validate_workflow,
)

pytestmark = pytest.mark.unit


def valid() -> dict[str, Any]:
    return {
        "name": "Greet",
        "description": "d",
        "trigger": {"type": "webhook"},
        "steps": [
            {
                "id": "fetch",
                "name": "Fetch",
                "type": "http",
                "params": {
                    "method": "POST",
                    "url": "https://api.example.com/u/{{ input.id }}",
                    "headers": {"Authorization": "Bearer {{ input.token }}"},
                    "body": {"q": "{{ input.q }}"},
                },
                "retry": {"maxAttempts": 3, "backoffSeconds": 0.5},
                "timeout": 10,
            },
            {
                "id": "vip",
                "name": "VIP?",
                "type": "condition",
                "params": {"if": "steps.fetch.output.body.tier == 'vip'", "else": "done"},
            },
            {"id": "wait", "name": "Wait", "type": "delay", "params": {"seconds": 1}},
            {"id": "note", "name": "Note", "type": "log", "params": {"message": "{{ input.id }}"}},
            {
                "id": "done",
                "name": "Done",
                "type": "transform",
                "params": {"output": "{{ input }}"},
            },
            {
                "id": "stop",
                "name": "Stop",
                "type": "fail",
                "params": {"message": "x {{ input.id }}"},
            },
        ],
        "output": {"result": "{{ steps.done.output }}"},
    }


def problems_of(raw: object) -> list[Problem]:
    with pytest.raises(WorkflowInvalid) as info:
        validate_workflow(raw)
    return info.value.problems


def fields_of(raw: object) -> dict[str, str]:
    return {p.field: p.message for p in problems_of(raw)}


def test_valid_definition_parses() -> None:
    definition = validate_workflow(valid())
    assert isinstance(definition, WorkflowDefinition)
    assert [s.id for s in definition.steps] == ["fetch", "vip", "wait", "note", "done", "stop"]
    assert definition.trigger.type == "webhook"


def test_a_model_instance_can_be_revalidated() -> None:
    definition = validate_workflow(valid())
    assert validate_workflow(definition) == definition


def test_errors_share_one_root() -> None:
    assert issubclass(WorkflowInvalid, WorkflowError)
    assert issubclass(TemplateError, WorkflowError)


@pytest.mark.parametrize("raw", [None, [], "x", 3])
def test_non_object_is_one_problem(raw: object) -> None:
    assert problems_of(raw) == [Problem("", "a workflow definition must be a JSON object")]


def test_schema_problems_have_readable_paths() -> None:
    raw = valid()
    raw["name"] = ""
    raw["extra"] = True
    del raw["steps"][0]["name"]
    raw["steps"][0]["retry"]["maxAttempts"] = 99
    raw["steps"][2]["timeout"] = -1
    raw["steps"][1]["id"] = "9lives"
    raw["steps"][1]["params"]["else"] = "end"
    fields = fields_of(raw)
    assert "name" in fields
    assert fields["extra"] == "is not a known field"
    assert fields["steps[0].name"] == "is required"
    assert "10" in fields["steps[0].retry.maxAttempts"]
    assert "steps[2].timeout" in fields
    assert fields["steps[1].id"].startswith("must start with a letter")


def test_missing_and_empty_steps() -> None:
    assert "steps" in fields_of({"name": "w"})
    assert "steps" in fields_of({"name": "w", "steps": []})
    assert "steps" in fields_of({"name": "w", "steps": {"a": 1}})


def test_duplicate_step_ids() -> None:
    raw = valid()
    raw["steps"][3]["id"] = "fetch"
    raw["steps"][5]["id"] = "fetch"
    problems = [p for p in problems_of(raw) if "duplicate" in p.message]
    assert [p.field for p in problems] == ["steps[3].id", "steps[5].id"]
    assert "steps[0]" in problems[0].message


def test_unknown_step_type() -> None:
    raw = valid()
    raw["steps"][2] = {"id": "x", "name": "X", "type": "shell", "params": {"cmd": "rm"}}
    fields = fields_of(raw)
    assert fields == {
        "steps[2].type": "unknown step type 'shell'; expected one of: "
        "transform, http, delay, condition, log, fail"
    }


@pytest.mark.parametrize(
    ("index", "params", "field", "fragment"),
    [
        (0, {"url": "https://x.test", "method": "TRACE"}, "steps[0].params.method", "GET"),
        (0, {"method": "GET"}, "steps[0].params.url", "required"),
        (0, {"url": "https://x.test", "timeoutSeconds": 0}, "steps[0].params.timeoutSeconds", "0"),
        (0, {"url": "https://x", "headers": {"X-A": 1}}, 'steps[0].params.headers["X-A"]', "str"),
        (0, {"url": "https://x", "retries": 1}, "steps[0].params.retries", "not a known field"),
        (0, {"url": "ftp://x.test/f"}, "steps[0].params.url", "http:// or https://"),
        (
            0,
            {"url": "https://x", "headers": {"a b": "v"}},
            'steps[0].params.headers["a b"]',
            "header",
        ),
        (2, {"seconds": "1"}, "steps[2].params.seconds", "number"),
        (2, {}, "steps[2].params.seconds", "required"),
        (3, {"message": "m", "level": "trace"}, "steps[3].params.level", "info"),
        (4, {}, "steps[4].params.output", "required"),
        (1, {"else": "done"}, "steps[1].params.if", "required"),
        (5, {"code": ""}, "steps[5].params.code", "at least 1"),
    ],
)
def test_invalid_params_for_the_step_type(
    index: int, params: dict[str, Any], field: str, fragment: str
) -> None:
    raw = valid()
    raw["steps"][index]["params"] = params
    fields = fields_of(raw)
    assert field in fields, fields
    assert fragment in fields[field]


@pytest.mark.parametrize(
    ("index", "param", "template", "field"),
    [
        (0, "url", "https://x/{{ input.id", "steps[0].params.url"),
        (0, "headers", {"X": "{{ 1 + }}"}, "steps[0].params.headers.X"),
        (0, "body", {"a": ["ok", "{{ ) }}"]}, "steps[0].params.body.a[1]"),
        (3, "message", "{{ input.x | nosuchfilter }}", "steps[3].params.message"),
        (3, "data", {"k": "{{ unknown_name }}"}, "steps[3].params.data.k"),
        (4, "output", {"x": "{{ input.a b }}"}, "steps[4].params.output.x"),
        (5, "message", "{{ 'a' ~ }}", "steps[5].params.message"),
        (1, "if", "input.n >", "steps[1].params.if"),
        (1, "if", "{{ a }} {{ b }}", "steps[1].params.if"),
    ],
)
def test_template_problems_in_every_templated_param(
    index: int, param: str, template: Any, field: str
) -> None:
    raw = valid()
    raw["steps"][index]["params"][param] = template
    assert field in fields_of(raw)


def test_template_problems_in_workflow_output() -> None:
    raw = valid()
    raw["output"] = {"a": ["{{ steps.done.output", "ok"]}
    assert list(fields_of(raw)) == ["output.a[0]"]


@pytest.mark.parametrize(
    ("target", "fragment"),
    [
        ("vip", "cannot jump to the condition step itself"),
        ("fetch", "must jump forward"),
        ("nowhere", "does not exist"),
    ],
)
def test_condition_else_must_be_end_or_a_later_step(target: str, fragment: str) -> None:
    raw = valid()
    raw["steps"][1]["params"]["else"] = target
    fields = fields_of(raw)
    assert list(fields) == ["steps[1].params.else"]
    assert fragment in fields["steps[1].params.else"]


@pytest.mark.parametrize("target", ["end", "wait", "stop"])
def test_condition_else_accepts_end_and_later_steps(target: str) -> None:
    raw = valid()
    raw["steps"][1]["params"]["else"] = target
    validate_workflow(raw)


def test_every_problem_is_reported_at_once() -> None:
    raw = valid()
    raw["description"] = "d" * 2001
    raw["steps"][0]["params"]["url"] = "{{ input.id"
    raw["steps"][1]["params"]["else"] = "fetch"
    raw["steps"][2]["id"] = "fetch"
    raw["steps"][3]["type"] = "email"
    raw["steps"][4]["params"] = {"output": "{{ }}", "extra": 1}
    raw["output"] = "{{ nope }}"
    problems = problems_of(raw)
    assert [p.field for p in problems] == [
        "description",
        "steps[0].params.url",
        "steps[1].params.else",
        "steps[2].id",
        "steps[3].type",
        "steps[4].params.extra",
        "steps[4].params.output",
        "output",
    ]
    error = WorkflowInvalid(problems)
    assert "8 problems" in str(error) and "and 5 more" in str(error)
    assert problems[0].to_dict() == {"field": "description", "message": problems[0].message}


def test_problems_are_not_duplicated() -> None:
    raw = valid()
    raw["steps"][0]["params"]["headers"] = {"A": "{{ x }} {{ x }}"}
    problems = problems_of(raw)
    assert len(problems) == 1
