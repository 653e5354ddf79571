"""Exceptions raised by this package. All derive from :class:`WorkflowError`."""

from __future__ import annotations

from dataclasses import dataclass


class WorkflowError(Exception):
    """Root of every error raised by jobsprint.workflows."""

    code: str = "workflow_error"


class TemplateError(WorkflowError):
    """A template could not be compiled or rendered.

    ``reason`` is a user-facing sentence; ``location`` (when known) is the path inside the
    rendered value, e.g. ``headers.Authorization`` or ``items[2]``.
    """

    code = "template_error"

    def __init__(self, reason: str, location: str | None = None) -> None:
        self.reason = reason
        self.location = location or None
        super().__init__(f"{location}: {reason}" if location else reason)

    def at(self, prefix: str) -> TemplateError:
        """The same error, located under ``prefix`` (``prefix.location``)."""
        if not self.location:
            return TemplateError(self.reason, prefix)
        sep = "" if self.location.startswith("[") else "."
        return TemplateError(self.reason, f"{prefix}{sep}{self.location}")


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a workflow definition.

    ``field`` is a JSON-path-like location (``steps[2].params.url``); ``""`` is the whole document.
    """

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def to_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class WorkflowInvalid(WorkflowError):
    """The definition has one or more problems; ``problems`` lists all of them."""

    code = "workflow_invalid"

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        summary = "; ".join(str(p) for p in self.problems[:3])
        more = f" (and {count - 3} more)" if count > 3 else ""
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"workflow definition is invalid ({count} {noun}): {summary}{more}")


class StepFailure(WorkflowError):
    """A step failed in a way the workflow author can see (``code`` and ``message``)."""

    def __init__(self, code: str, message: str, retryable: bool = False) -> None:
        self.code = code
        self.message = message
        self.retryable = retryable
        super().__init__(f"{code}: {message}")
