"""Pydantic models of a workflow definition and of each step type's ``params``.

Field names are the JSON names (camelCase). Models are frozen and strict: ``"3"`` is not an int.
Use ``model_dump(by_alias=True)`` to get JSON back (``ConditionParams`` uses aliases).
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
MAX_STEPS = 100
MAX_TIMEOUT_SECONDS = 86400.0
MAX_RETRY_DELAY_SECONDS = 86400.0
"""Cap on one computed retry delay, whatever the policy's numbers multiply to."""

StepType: TypeAlias = Literal["transform", "http", "delay", "condition", "log", "fail"]
STEP_TYPES: tuple[StepType, ...] = ("transform", "http", "delay", "condition", "log", "fail")
END = "end"
"""Value of a condition's ``else`` that ends the workflow."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class RetryPolicy(_Model):
    maxAttempts: int = Field(1, ge=1, le=10)
    backoffSeconds: float = Field(1.0, ge=0, le=3600)
    backoffMultiplier: float = Field(2.0, ge=1, le=10)

    def delay_before_attempt(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (1-based).

        Attempt 1 waits 0, attempt 2 waits ``backoffSeconds``, attempt 3
        ``backoffSeconds * backoffMultiplier``, and so on, capped at MAX_RETRY_DELAY_SECONDS.
        """
        if attempt < 1:
            raise ValueError(f"attempt must be >= 1, got {attempt}")
        if attempt == 1:
            return 0.0
        delay = self.backoffSeconds * self.backoffMultiplier ** (attempt - 2)
        return float(min(delay, MAX_RETRY_DELAY_SECONDS))

    def allows_attempt(self, attempt: int) -> bool:
        """True if attempt number ``attempt`` (1-based) may run under this policy."""
        return 1 <= attempt <= self.maxAttempts


class StepDefinition(_Model):
    id: str = Field(pattern=STEP_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    type: StepType
    params: dict[str, Any] = Field(default_factory=dict)
    retry: RetryPolicy | None = None
    timeout: float | None = Field(None, gt=0, le=MAX_TIMEOUT_SECONDS)


class Trigger(_Model):
    type: Literal["manual", "webhook"] = "manual"


class WorkflowDefinition(_Model):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    trigger: Trigger = Field(default_factory=Trigger)
    steps: list[StepDefinition] = Field(min_length=1, max_length=MAX_STEPS)
    output: Any = None

    def step_index(self, step_id: str) -> int | None:
        """Index of the step with this id, or None."""
        for index, step in enumerate(self.steps):
            if step.id == step_id:
                return index
        return None


# --- params of each step type ------------------------------------------------------------------


class TransformParams(_Model):
    output: Any


class HttpParams(_Model):
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str = Field(min_length=1, max_length=8192)
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    timeoutSeconds: float = Field(30.0, gt=0, le=3600)


class DelayParams(_Model):
    seconds: float = Field(ge=0, le=MAX_TIMEOUT_SECONDS)


class ConditionParams(_Model):
    model_config = ConfigDict(populate_by_name=True)

    if_: str = Field(alias="if", min_length=1)
    else_: str = Field(END, alias="else", min_length=1)


class LogParams(_Model):
    level: Literal["debug", "info", "warn", "error"] = "info"
    message: str
    data: Any = None


class FailParams(_Model):
    message: str = "Step failed"
    code: str = Field("failed", min_length=1, max_length=100)


StepParams: TypeAlias = (
    TransformParams | HttpParams | DelayParams | ConditionParams | LogParams | FailParams
)

PARAMS_MODELS: dict[str, type[StepParams]] = {
    "transform": TransformParams,
    "http": HttpParams,
    "delay": DelayParams,
    "condition": ConditionParams,
    "log": LogParams,
    "fail": FailParams,
}


def parse_params(step: StepDefinition) -> StepParams:
    """The typed params of ``step``; raises pydantic.ValidationError if they are invalid.

    Definitions that went through ``validate_workflow`` always parse.
    """
    return PARAMS_MODELS[step.type].model_validate(step.params)
