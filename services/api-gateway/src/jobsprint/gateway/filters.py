"""Query-string filters of the listings (pure logic): parsing, id bounds, cursor hash."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from jobsprint.events.ids import id_floor
from jobsprint.gateway.errors import InvalidRequest
from jobsprint.gateway.pagination import filters_hash

EXECUTION_STATUSES = ("success", "error", "running", "pending", "cancelled")
LOG_LEVELS = ("debug", "info", "warn", "error")


def parse_instant(value: str, field: str) -> datetime:
    """ISO 8601 date or date-time; a date alone is midnight UTC, a time without an offset
    is UTC."""
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRequest.field(
            field, "must be an ISO 8601 date or date-time, e.g. 2025-01-06T12:30:00Z"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


@dataclass(frozen=True)
class ExecutionFilters:
    workflow_id: str | None = None
    status: str | None = None
    from_date: datetime | None = None
    to_date: datetime | None = None

    @classmethod
    def parse(
        cls,
        *,
        workflow_id: str | None,
        status: str | None,
        from_date: str | None,
        to_date: str | None,
    ) -> ExecutionFilters:
        if status is not None and status not in EXECUTION_STATUSES:
            raise InvalidRequest.field("status", f"must be one of {', '.join(EXECUTION_STATUSES)}")
        start = parse_instant(from_date, "fromDate") if from_date else None
        end = parse_instant(to_date, "toDate") if to_date else None
        if start and end and start > end:
            raise InvalidRequest.field("fromDate", "must not be after toDate")
        return cls(workflow_id or None, status, start, end)

    @property
    def id_min(self) -> str | None:
        """Smallest execution id created at or after fromDate (inclusive bound)."""
        return id_floor("exec", self.from_date) if self.from_date else None

    @property
    def id_below(self) -> str | None:
        """Exclusive upper id bound: everything created at or before toDate (ms precision)."""
        if self.to_date is None:
            return None
        return id_floor("exec", self.to_date + timedelta(milliseconds=1))

    def fingerprint(self) -> str:
        return filters_hash(
            "executions",
            {
                "workflowId": self.workflow_id,
                "status": self.status,
                "fromDate": self.from_date.isoformat() if self.from_date else None,
                "toDate": self.to_date.isoformat() if self.to_date else None,
            },
        )


WORKFLOWS_FINGERPRINT = filters_hash("workflows", {})
