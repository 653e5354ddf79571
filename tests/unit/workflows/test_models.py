import pytest
from pydantic import ValidationError

from jobsprint.workflows import (
    ConditionParams,
    DelayParams,
    FailParams,
    HttpParams,
    LogParams,
    RetryPolicy,
    StepDefinition,
    TransformParams,
    WorkflowDefinition,
    parse_params,
)

pytestmark = pytest.mark.unit


def step(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {"id": "s1", "name": "Step", "type": "transform"}
    base.update(overrides)
    return base


def test_retry_policy_backoff_grows_geometrically_from_the_second_attempt() -> None:
    policy = RetryPolicy(maxAttempts=5, backoffSeconds=2, backoffMultiplier=3)
    assert [policy.delay_before_attempt(n) for n in (1, 2, 3, 4, 5)] == [0.0, 2.0, 6.0, 18.0, 54.0]


def test_retry_policy_defaults_and_cap() -> None:
    default = RetryPolicy()
    assert (default.maxAttempts, default.backoffSeconds, default.backoffMultiplier) == (1, 1.0, 2.0)
    assert default.delay_before_attempt(2) == 1.0
    huge = RetryPolicy(maxAttempts=10, backoffSeconds=3600, backoffMultiplier=10)
    assert huge.delay_before_attempt(10) == 86400.0
    with pytest.raises(ValueError):
        default.delay_before_attempt(0)


def test_retry_policy_allows_attempts_up_to_max() -> None:
    policy = RetryPolicy(maxAttempts=3)
    assert [policy.allows_attempt(n) for n in (0, 1, 3, 4)] == [False, True, True, False]


@pytest.mark.parametrize(
    "data",
    [
        {"maxAttempts": 0},
        {"maxAttempts": 11},
        {"maxAttempts": "3"},
        {"maxAttempts": 2.5},
        {"backoffSeconds": -1},
        {"backoffSeconds": 3601},
        {"backoffMultiplier": 0.5},
        {"backoffMultiplier": 11},
        {"jitter": True},
    ],
)
def test_retry_policy_rejects_out_of_range_and_unknown(data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RetryPolicy.model_validate(data)


@pytest.mark.parametrize("step_id", ["a", "_x", "Step-1_b", "a" * 64])
def test_step_id_accepts(step_id: str) -> None:
    assert StepDefinition.model_validate(step(id=step_id)).id == step_id


@pytest.mark.parametrize("step_id", ["", "1a", "-a", "a b", "a.b", "a" * 65, "é"])
def test_step_id_rejects(step_id: str) -> None:
    with pytest.raises(ValidationError):
        StepDefinition.model_validate(step(id=step_id))


@pytest.mark.parametrize(
    "overrides",
    [
        {"name": ""},
        {"name": "x" * 201},
        {"type": "shell"},
        {"timeout": 0},
        {"timeout": 86401},
        {"params": []},
        {"color": "red"},
    ],
)
def test_step_definition_rejects(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        StepDefinition.model_validate(step(**overrides))


def test_workflow_definition_defaults_and_limits() -> None:
    definition = WorkflowDefinition.model_validate({"name": "w", "steps": [step()]})
    assert definition.trigger.type == "manual"
    assert definition.description is None and definition.output is None
    assert definition.steps[0].params == {}
    assert definition.step_index("s1") == 0 and definition.step_index("nope") is None
    with pytest.raises(ValidationError):
        WorkflowDefinition.model_validate({"name": "w", "steps": []})
    with pytest.raises(ValidationError):
        WorkflowDefinition.model_validate(
            {"name": "w", "steps": [step(id=f"s{i}") for i in range(101)]}
        )
    with pytest.raises(ValidationError):
        WorkflowDefinition.model_validate(
            {"name": "w", "description": "d" * 2001, "steps": [step()]}
        )
    with pytest.raises(ValidationError):
        WorkflowDefinition.model_validate(
            {"name": "w", "trigger": {"type": "cron"}, "steps": [step()]}
        )


def test_definition_is_frozen() -> None:
    definition = WorkflowDefinition.model_validate({"name": "w", "steps": [step()]})
    with pytest.raises(ValidationError):
        definition.name = "other"  # type: ignore[misc]


def test_parse_params_returns_the_model_of_the_step_type() -> None:
    cases = [
        ("transform", {"output": {"a": 1}}, TransformParams),
        ("http", {"url": "https://x.test"}, HttpParams),
        ("delay", {"seconds": 1.5}, DelayParams),
        ("condition", {"if": "input.ok"}, ConditionParams),
        ("log", {"message": "hi"}, LogParams),
        ("fail", {}, FailParams),
    ]
    for step_type, params, model in cases:
        parsed = parse_params(StepDefinition.model_validate(step(type=step_type, params=params)))
        assert isinstance(parsed, model)


def test_params_defaults() -> None:
    http = HttpParams.model_validate({"url": "https://x.test"})
    assert (http.method, http.headers, http.body, http.timeoutSeconds) == ("GET", {}, None, 30.0)
    condition = ConditionParams.model_validate({"if": "true"})
    assert condition.if_ == "true" and condition.else_ == "end"
    assert condition.model_dump(by_alias=True) == {"if": "true", "else": "end"}
    assert LogParams.model_validate({"message": "m"}).level == "info"
    fail = FailParams()
    assert (fail.message, fail.code) == ("Step failed", "failed")


@pytest.mark.parametrize(
    ("model", "data"),
    [
        (TransformParams, {}),
        (HttpParams, {}),
        (HttpParams, {"url": "https://x", "method": "TRACE"}),
        (HttpParams, {"url": "https://x", "headers": {"a": 1}}),
        (DelayParams, {"seconds": -1}),
        (DelayParams, {"seconds": 86401}),
        (ConditionParams, {}),
        (ConditionParams, {"if": "x", "then": "y"}),
        (LogParams, {"message": "m", "level": "fatal"}),
        (FailParams, {"code": ""}),
    ],
)
def test_params_models_reject(model: type[object], data: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(data)  # type: ignore[attr-defined]
