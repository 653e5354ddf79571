"""The dead-letter record: a message a consumer could not process, with where it came from."""

from __future__ import annotations

import base64
from datetime import datetime

import orjson
from pydantic import BaseModel, ConfigDict, Field

from jobsprint.events.envelope import utcnow


class DeadLetter(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    topic: str
    partition: int
    offset: int
    key: str | None
    consumer: str  # which consumer gave up on it, e.g. "projector"
    error: str
    time: datetime = Field(default_factory=utcnow)
    payload_b64: str  # the original bytes, untouched

    @classmethod
    def of(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        consumer: str,
        error: str,
    ) -> DeadLetter:
        return cls(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key.decode("utf-8", "replace") if key is not None else None,
            consumer=consumer,
            error=error[:4000],
            payload_b64=base64.b64encode(value or b"").decode(),
        )

    def encode(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @property
    def payload(self) -> bytes:
        return base64.b64decode(self.payload_b64)
