"""Request bodies. Strict and closed: an unknown field or a string where a number belongs
is a 400 naming the field. Workflow definitions are validated by `jobsprint.workflows`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_EXECUTION_TIMEOUT_S = 86_400
MAX_IDEMPOTENCY_KEY = 200


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ExecuteOptions(_Body):
    waitForCompletion: bool = False
    timeout: int = Field(300, ge=1, le=MAX_EXECUTION_TIMEOUT_S)
    """Execution timeout in seconds, enforced by the executor."""


class ExecuteRequest(_Body):
    inputData: dict[str, Any] | None = None
    options: ExecuteOptions | None = None

    @property
    def effective_options(self) -> ExecuteOptions:
        return self.options or ExecuteOptions()


class RetryRequest(_Body):
    fromStep: str | None = Field(None, min_length=1, max_length=64)
    workflowVersion: int | str | None = None
    """`"latest"` or a version number; default: the version the original execution ran."""
    inputData: dict[str, Any] | None = None
    """Input of the new execution; default: the original execution's input."""

    @field_validator("workflowVersion")
    @classmethod
    def _latest_or_number(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str) and value != "latest":
            raise ValueError('must be "latest" or a version number')
        if isinstance(value, int) and value < 1:
            raise ValueError("must be >= 1")
        return value
