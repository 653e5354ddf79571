"""Request and response bodies.

Requests are strict and closed: an unknown field or a string where a number belongs is a 400
naming the field. Workflow definitions are validated by `jobsprint.workflows`. Answers are
described for the OpenAPI document, in one envelope: `{"success": true, "data": …}` or
`{"success": false, "error": {"code", "message", "details"}}`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from jobsprint.events import LogLevel, TriggeredBy
from jobsprint.workflows import Trigger, WorkflowDefinition
from jobsprint.workflows.models import StepType

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


# --- request bodies as documented (validated elsewhere) ---------------------------------------


class WorkflowRequest(WorkflowDefinition):
    """The body of `POST /v1/workflows` and `PUT /v1/workflows/{id}`, as the OpenAPI document
    shows it: the library's definition with `trigger` required, which the API insists on.
    `definitions.validated_definition` does the checking (and more than a schema can say)."""

    trigger: Trigger


# --- answers -----------------------------------------------------------------------------------
# What the routes answer, for the OpenAPI document (`routes.openapi.answers`). The routes
# shape their JSON in `shaping`; tests/unit/gateway/test_openapi.py holds the two together.
# Open models: a field added to an answer does not break a client.

T = TypeVar("T")

ExecutionStatus = Literal["pending", "running", "success", "error", "cancelled"]
TerminalStatus = Literal["success", "error", "cancelled"]
StepStatus = Literal["running", "success", "error", "cancelled"]
Timestamp = Annotated[datetime, Field(description="UTC, ISO 8601 with milliseconds")]


class _Answer(BaseModel):
    model_config = ConfigDict(
        use_attribute_docstrings=True, field_title_generator=lambda name, _: name
    )


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _omitted(description: str | None = None) -> Any:
    """A field the answer leaves out (rather than sending null) when it does not apply;
    type it `X | SkipJsonSchema[None]` so the document does not call it nullable."""
    return Field(None, description=description, json_schema_extra=_no_default)


class FieldProblem(_Answer):
    field: str
    """Dotted path of the field (`options.timeout`, `steps[0].id`); empty for the body."""
    message: str


class ErrorBody(_Answer):
    code: str = Field(
        description="Machine-readable: `validation_error`, `invalid_json`, `invalid_cursor`, "
        "`unauthorized`, `forbidden`, `not_found`, `conflict`, `payload_too_large`, "
        "`rate_limited`, `unavailable`, …"
    )
    message: str
    details: list[FieldProblem] | dict[str, Any] | None = Field(
        description="One `{field, message}` per problem of an invalid request; otherwise an "
        "object about the error (`status`, `retryAfter`, `requiredScopes`, …) or null"
    )


class ErrorResponse(_Answer):
    """Every error answers this envelope."""

    success: Literal[False]
    error: ErrorBody


class Envelope(_Answer, Generic[T]):
    success: Literal[True]
    data: T


class Pagination(_Answer):
    nextCursor: str | None
    """`after` value of the next (older) page; null on the last page."""
    prevCursor: str | None
    """`before` value of the previous (newer) page; null on the first page."""
    hasMore: bool


class Listing(_Answer, Generic[T]):
    success: Literal[True]
    data: list[T]
    pagination: Pagination


class ExecutionError(_Answer):
    code: str | None
    message: str | None
    stepId: str | None


class ExecutionSummary(_Answer):
    id: str
    workflowId: str
    workflowName: str
    workflowVersion: int
    status: ExecutionStatus
    startedAt: Timestamp
    """When it started running; before that, when it was accepted."""
    finishedAt: Timestamp | None
    duration: int | None
    """Milliseconds."""
    triggeredBy: TriggeredBy
    inputData: dict[str, Any] | None
    originalExecutionId: str | SkipJsonSchema[None] = _omitted("Set on retries: the retried one")


class ExecutionStep(_Answer):
    stepId: str
    stepName: str
    stepType: str
    status: StepStatus
    startedAt: Timestamp | None
    finishedAt: Timestamp | None
    duration: int | None
    attempts: int | None
    input: Any
    output: Any
    error: ExecutionError | None
    reusedFrom: str | None
    """Set on retries: the execution whose successful result this step reused."""


class LogEntry(_Answer):
    level: LogLevel
    message: str
    timestamp: Timestamp
    stepId: str | None
    data: Any = _omitted()


class ExecutionDetail(ExecutionSummary):
    originalExecutionId: str | None  # always present here
    outputData: Any
    error: ExecutionError | None
    executionSteps: list[ExecutionStep]
    logs: list[LogEntry]


class ExecutionLogs(_Answer):
    logs: list[LogEntry]


class ExecutionAccepted(_Answer):
    executionId: str
    originalExecutionId: str | SkipJsonSchema[None] = _omitted("Set on retries")
    status: Literal["pending"]
    startedAt: Timestamp
    """When the execution was accepted."""
    url: str


class ExecutionCompleted(_Answer):
    executionId: str
    status: TerminalStatus
    startedAt: Timestamp
    finishedAt: Timestamp | None
    duration: int | None
    outputData: Any
    error: ExecutionError | None = _omitted("Set when the status is `error`")


class ExecutionCancelled(_Answer):
    id: str
    status: Literal["cancelled"]
    cancelledAt: Timestamp | None


class ExecutionCancelling(_Answer):
    id: str
    status: Literal["cancelling"]


class Deleted(_Answer):
    id: str
    deleted: Literal[True]


class MetricsBucket(_Answer):
    timestamp: datetime
    count: int
    successRate: float
    averageDuration: int


class ExecutionMetrics(_Answer):
    totalExecutions: int
    successfulExecutions: int
    failedExecutions: int
    successRate: float
    averageDuration: int
    p50Duration: int
    p95Duration: int
    p99Duration: int
    timeSeries: list[MetricsBucket]


class WorkflowTrigger(_Answer):
    type: Literal["manual", "webhook"]


class StepRetry(_Answer):
    maxAttempts: int
    backoffSeconds: float
    backoffMultiplier: float


class WorkflowStep(_Answer):
    id: str
    name: str
    type: StepType
    params: dict[str, Any]
    retry: StepRetry | None
    timeout: float | None


class Workflow(_Answer):
    id: str
    name: str
    description: str | None
    version: int
    trigger: WorkflowTrigger
    steps: list[WorkflowStep]
    output: Any
    createdAt: Timestamp
    updatedAt: Timestamp
    hookUrl: str | SkipJsonSchema[None] = _omitted(
        "Webhook workflows: POST here to start one (the URL is the credential)"
    )


class Health(_Answer):
    status: Literal["ok"]


class Readiness(_Answer):
    status: Literal["ready"]
    postgres: Literal["ok"]
    kafka: Literal["ok"]


class HealthResponse(Envelope[Health]):
    """The process is alive."""


class ReadinessResponse(Envelope[Readiness]):
    """Postgres and Kafka answer."""


class WorkflowResponse(Envelope[Workflow]):
    """The workflow with its current version."""


class WorkflowListResponse(Listing[Workflow]):
    """A page of workflows, newest first."""


class DeletedResponse(Envelope[Deleted]):
    """Deleted."""


class ExecutionListResponse(Listing[ExecutionSummary]):
    """A page of executions, newest first."""


class ExecutionResponse(Envelope[ExecutionDetail]):
    """The execution with its steps and logs."""


class ExecutionLogsResponse(Envelope[ExecutionLogs]):
    """The execution's logs, in order."""


class ExecutionMetricsResponse(Envelope[ExecutionMetrics]):
    """Execution metrics over the requested range."""


class ExecutionAcceptedResponse(Envelope[ExecutionAccepted]):
    """Accepted: the execution is queued (`Location` names it)."""


class ExecutionCompletedResponse(Envelope[ExecutionCompleted]):
    """The execution finished within the wait: its result."""


class ExecutionCancelledResponse(Envelope[ExecutionCancelled]):
    """The execution is cancelled."""


class ExecutionCancellingResponse(Envelope[ExecutionCancelling]):
    """Cancellation requested; the execution had not stopped within 10 s."""
