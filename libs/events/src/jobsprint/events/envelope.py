"""The envelope every command and event travels in."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta
from time import time_ns
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


# An id's 16 random bytes, bits kept and bits set: version 4, RFC 4122 variant
_ID_KEEP = bytes.fromhex("ffffffffffff0fff3fffffffffffffff")
_ID_SET = bytes.fromhex("00000000000040008000000000000000")
_id_pool: list[str] = []


def ids_as_text(raw: bytes) -> list[str]:
    """str(uuid.UUID(bytes=chunk, version=4)) of each 16 bytes of `raw`, a few at a time:
    the bits set on all of them in one integer operation, their digits in one hex()."""
    count = len(raw) // 16
    value = int.from_bytes(raw) & int.from_bytes(_ID_KEEP * count) | int.from_bytes(_ID_SET * count)
    d = value.to_bytes(len(raw)).hex()
    return [
        f"{d[i : i + 8]}-{d[i + 8 : i + 12]}-{d[i + 12 : i + 16]}-{d[i + 16 : i + 20]}-"
        f"{d[i + 20 : i + 32]}"
        for i in range(0, len(d), 32)
    ]


def new_message_id_text() -> str:
    """str(new_message_id()) in a quarter of the time: ids made 256 at a time from one
    urandom read. (list.pop() is atomic: no lock.)"""
    while True:
        try:
            return _id_pool.pop()
        except IndexError:
            _id_pool.extend(ids_as_text(os.urandom(_RANDOM_BYTES)))


def _forget_random_after_fork() -> None:
    """A forked child must not make the ids its parent makes from the same bytes."""
    global _taken
    _taken = _RANDOM_BYTES
    _id_pool.clear()


os.register_at_fork(after_in_child=_forget_random_after_fork)


def utc_millis(value: datetime) -> datetime:
    """`value` in UTC, truncated to milliseconds: what an envelope's `time` holds."""
    if value.tzinfo is None:
        raise ValueError("time must carry a timezone")
    value = value.astimezone(UTC)
    below_ms = value.microsecond % 1000
    if below_ms:  # replace() is the costly part, and most times are whole milliseconds
        value = value.replace(microsecond=value.microsecond - below_ms)
    return value


def time_json(value: datetime) -> str:
    """`YYYY-MM-DDTHH:MM:SS.mmmZ` of a time as utc_millis() left it (its fields as they are).
    isoformat() writes it in half the time strftime takes; strftime, which wrote it first,
    leaves years below 1000 unpadded (on glibc), so those still go to it."""
    if value.year < 1000:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.isoformat("T", "milliseconds")[:23] + "Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_now_json = (-1, "")  # (milliseconds since the epoch, their time_json)


def utcnow_json() -> str:
    """time_json(utcnow()), written once per millisecond (time_ns() reads the clock
    datetime.now() reads): an executor writes many events in one millisecond."""
    global _now_json
    millis = time_ns() // 1_000_000
    last, text = _now_json
    if millis != last:
        text = time_json(_EPOCH + timedelta(milliseconds=millis))
        _now_json = (millis, text)
    return text


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
        return utc_millis(value)

    @field_serializer("time")
    def _time_json(self, value: datetime) -> str:
        return time_json(value)

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
