"""JSON codec for envelopes. Decoding never guesses: anything it cannot read is
UndecodableMessage, which consumers turn into a dead-letter record."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from jobsprint.events.envelope import Envelope
from jobsprint.events.registry import Payload, payload_class
from jobsprint.events.upcasters import upcast

_ANY_ENVELOPE = Envelope[Payload]  # parametrised once: building it per call costs ~40 %


class UndecodableMessage(Exception):
    """Bytes that are not a well-formed message of a known type."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(envelope: Envelope[Any]) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json"))


def decode(raw: bytes | None) -> Envelope[Payload]:
    if raw is None:
        raise UndecodableMessage("empty message (tombstone) on a message topic")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UndecodableMessage(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UndecodableMessage("not a JSON object")
    type_name = doc.get("type")
    data = doc.get("data")
    if not isinstance(type_name, str):
        raise UndecodableMessage("missing 'type'")
    if not isinstance(data, dict):
        raise UndecodableMessage(f"{type_name}: 'data' is not an object")
    try:
        type_name, data = upcast(type_name, data)
    except Exception as exc:
        raise UndecodableMessage(f"{type_name}: upcaster failed: {exc}") from None
    cls = payload_class(type_name)
    if cls is None:
        raise UndecodableMessage(f"unknown message type {type_name!r}")
    try:
        payload = cls.model_validate(data)
        return _ANY_ENVELOPE.model_validate({**doc, "type": type_name, "data": payload})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UndecodableMessage(f"{type_name}: invalid {where}: {first['msg']}") from None
