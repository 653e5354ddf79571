"""The envelope every command and event travels in."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_serializer, field_validator

from jobsprint.events.registry import Payload

T = TypeVar("T", bound=Payload)


def utcnow() -> datetime:
    """Now in UTC, truncated to milliseconds (the precision of every stored time)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


_RANDOM_BYTES = 4096
_random = b""
_taken = _RANDOM_BYTES
_random_lock = threading.Lock()


def new_message_id() -> uuid.UUID:
    """A random (version 4) UUID, like uuid.uuid4(), from urandom read 4 KiB at a time: one
    system call per 256 ids instead of one per id (an execution makes a dozen events)."""
    global _random, _taken
    with _random_lock:
        if _taken == _RANDOM_BYTES:
            _random, _taken = os.urandom(_RANDOM_BYTES), 0
        raw = _random[_taken : _taken + 16]
        _taken += 16
    return uuid.UUID(bytes=raw, version=4)


class Envelope(BaseModel, Generic[T]):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: uuid.UUID = Field(default_factory=new_message_id)
    type: str
    execution_id: str
    workspace_id: str
    seq: int = Field(
        default=0, ge=0, description="per-execution event number from 1; 0 for commands"
    )
    time: datetime = Field(default_factory=utcnow)
    correlation_id: str
    causation_id: str | None = None
    data: SerializeAsAny[T]

    @field_validator("time")
    @classmethod
    def _utc_millis(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("time must carry a timezone")
        value = value.astimezone(UTC)
        below_ms = value.microsecond % 1000
        if below_ms:  # replace() is the costly part, and most times are whole milliseconds
            value = value.replace(microsecond=value.microsecond - below_ms)
        return value

    @field_serializer("time")
    def _time_json(self, value: datetime) -> str:
        """`YYYY-MM-DDTHH:MM:SS.mmmZ` (the fields as they are: `time` is UTC once validated).
        isoformat() writes it in half the time strftime takes; strftime, which wrote it
        first, leaves years below 1000 unpadded (on glibc), so those still go to it."""
        if value.year < 1000:
            return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
        return value.isoformat("T", "milliseconds")[:23] + "Z"

    @property
    def key(self) -> bytes:
        """Kafka key: commands and events of one execution share a partition."""
        return self.execution_id.encode()


def make(
    payload: T,
    *,
    execution_id: str,
    workspace_id: str,
    correlation_id: str,
    seq: int = 0,
    causation_id: str | None = None,
    time: datetime | None = None,
) -> Envelope[T]:
    envelope: Envelope[T] = Envelope(  # not Envelope[T](…): the same class, minus a lookup
        type=payload.TYPE,
        execution_id=execution_id,
        workspace_id=workspace_id,
        seq=seq,
        time=time or utcnow(),
        correlation_id=correlation_id,
        causation_id=causation_id,
        data=payload,
    )
    return envelope
