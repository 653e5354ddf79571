from typing import Any

import pytest

from jobsprint.workflows import (
    ConditionParams,
    FailParams,
    HttpParams,
    LogParams,
    StepFailure,
    TemplateError,
    TransformParams,
    WorkflowDefinition,
    WorkflowError,
    build_context,
    final_output,
    next_step_index,
    render_http,
    run_condition,
    run_fail,
    run_log,
    run_transform,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def ctx() -> dict[str, Any]:
    return build_context(
        {"n": 5, "name": "Ada", "token": "t0k"},
        {"first": {"value": 10}, "second": [1, 2]},
        {"id": "exec_1", "workflowId": "wf_1", "startedAt": "2025-01-01T00:00:00Z"},
    )


def test_build_context_shape(ctx: dict[str, Any]) -> None:
    assert ctx == {
        "input": {"n": 5, "name": "Ada", "token": "t0k"},
        "steps": {"first": {"output": {"value": 10}}, "second": {"output": [1, 2]}},
        "execution": {"id": "exec_1", "workflowId": "wf_1", "startedAt": "2025-01-01T00:00:00Z"},
    }


def test_run_transform(ctx: dict[str, Any]) -> None:
    params = TransformParams(output={"total": "{{ steps.first.output.value + input.n }}", "k": 1})
    assert run_transform(params, ctx) == {"total": 15, "k": 1}


def test_run_transform_error_is_located_under_output(ctx: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as info:
        run_transform(TransformParams(output={"a": "{{ steps.zzz.output }}"}), ctx)
    assert info.value.location == "output.a"
    assert "step 'zzz' has not run" in str(info.value)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("input.n > 3", True),
        ("{{ input.n > 30 }}", False),
        ("steps.second.output", True),
        ("steps.second.output | select('>', 5) | list", False),
        ("input.name", True),
        ("''", False),
        ("none", False),
        ("steps.missing is defined", False),
    ],
)
def test_run_condition(ctx: dict[str, Any], expression: str, expected: bool) -> None:
    assert run_condition(ConditionParams.model_validate({"if": expression}), ctx) is expected


def test_run_condition_missing_value_raises(ctx: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as info:
        run_condition(ConditionParams.model_validate({"if": "input.flag"}), ctx)
    assert info.value.location == "if"
    assert "input.flag is undefined" in str(info.value)


def test_run_log_renders_message_as_text_and_data_as_json(ctx: dict[str, Any]) -> None:
    params = LogParams(
        level="warn", message="{{ input.n }}", data={"s": "{{ steps.second.output }}"}
    )
    assert run_log(params, ctx) == ("warn", "5", {"s": [1, 2]})
    assert run_log(LogParams(message="hi {{ input.name }}"), ctx) == ("info", "hi Ada", None)


def test_run_fail_raises_step_failure(ctx: dict[str, Any]) -> None:
    with pytest.raises(StepFailure) as info:
        run_fail(FailParams(message="bad n={{ input.n }}", code="too_big"), ctx)
    failure = info.value
    assert (failure.code, failure.message, failure.retryable) == ("too_big", "bad n=5", False)
    assert isinstance(failure, WorkflowError)
    with pytest.raises(StepFailure) as default:
        run_fail(FailParams(), ctx)
    assert (default.value.code, default.value.message) == ("failed", "Step failed")


def test_render_http(ctx: dict[str, Any]) -> None:
    params = HttpParams.model_validate(
        {
            "method": "POST",
            "url": "https://api.example.com/u/{{ input.n }}",
            "headers": {"Authorization": "Bearer {{ input.token }}", "X-N": "{{ input.n }}"},
            "body": {"name": "{{ input.name }}", "n": "{{ input.n }}"},
            "timeoutSeconds": 5,
        }
    )
    request = render_http(params, ctx)
    assert request.method == "POST"
    assert request.url == "https://api.example.com/u/5"
    assert request.headers == {"Authorization": "Bearer t0k", "X-N": "5"}
    assert request.body == {"name": "Ada", "n": 5}
    assert request.timeout_seconds == 5.0


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"url": "{{ input.name }}"}, "invalid_url"),
        ({"url": "file:///etc/{{ input.name }}"}, "invalid_url"),
        ({"url": "http://{{ '' }}/x"}, "invalid_url"),
        ({"url": "https://x.test/", "headers": {"X": "a{{ '\\r\\n' }}Evil: 1"}}, "invalid_header"),
    ],
)
def test_render_http_refuses_bad_urls_and_headers(
    ctx: dict[str, Any], params: dict[str, Any], code: str
) -> None:
    with pytest.raises(StepFailure) as info:
        render_http(HttpParams.model_validate(params), ctx)
    assert info.value.code == code and not info.value.retryable


def test_render_http_template_error_location(ctx: dict[str, Any]) -> None:
    params = HttpParams.model_validate({"url": "https://x.test", "headers": {"X-A": "{{ nope }}"}})
    with pytest.raises(TemplateError) as info:
        render_http(params, ctx)
    assert info.value.location == 'headers["X-A"]'


def definition(**extra: Any) -> WorkflowDefinition:
    steps = [
        {"id": "a", "name": "A", "type": "transform", "params": {"output": 1}},
        {"id": "check", "name": "C", "type": "condition", "params": {"if": "x", "else": "d"}},
        {"id": "c", "name": "C2", "type": "log", "params": {"message": "m"}},
        {"id": "d", "name": "D", "type": "condition", "params": {"if": "x"}},
        {"id": "e", "name": "E", "type": "transform", "params": {"output": 2}},
    ]
    return WorkflowDefinition.model_validate({"name": "w", "steps": steps, **extra})


def test_next_step_index_sequential_and_jumps() -> None:
    d = definition()
    assert next_step_index(d, 0, None) == 1
    assert next_step_index(d, 1, True) == 2
    assert next_step_index(d, 1, False) == 3  # else -> "d"
    assert next_step_index(d, 2, None) == 3
    assert next_step_index(d, 3, True) == 4
    assert next_step_index(d, 3, False) is None  # else defaults to "end"
    assert next_step_index(d, 4, None) is None
    assert next_step_index(d, 0, False) == 1  # not a condition: result ignored
    with pytest.raises(IndexError):
        next_step_index(d, 5, None)


def test_next_step_index_refuses_backward_jump_in_unvalidated_definition() -> None:
    d = WorkflowDefinition.model_validate(
        {
            "name": "w",
            "steps": [
                {"id": "a", "name": "A", "type": "log", "params": {"message": "m"}},
                {"id": "b", "name": "B", "type": "condition", "params": {"if": "x", "else": "a"}},
            ],
        }
    )
    with pytest.raises(WorkflowError):
        next_step_index(d, 1, False)


def test_final_output(ctx: dict[str, Any]) -> None:
    assert final_output(definition(), ctx, {"last": True}) == {"last": True}
    templated = definition(output={"v": "{{ steps.first.output.value }}", "n": "{{ input.n }}"})
    assert final_output(templated, ctx, "ignored") == {"v": 10, "n": 5}
    with pytest.raises(TemplateError) as info:
        final_output(definition(output="{{ steps.nope.output }}"), ctx, None)
    assert info.value.location == "output"
