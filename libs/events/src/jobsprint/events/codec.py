"""JSON codec for envelopes. Decoding never guesses: anything it cannot read is
UndecodableMessage, which consumers turn into a dead-letter record."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import orjson
from pydantic import ValidationError

from jobsprint.events.envelope import (
    Envelope,
    new_message_id_text,
    time_json,
    utc_millis,
    utcnow_json,
)
from jobsprint.events.registry import Payload, payload_class
from jobsprint.events.upcasters import upcast

_ANY_ENVELOPE = Envelope[Payload]  # parametrised once: building it per call costs ~40 %

# validate_python of Envelope[<payload class>], one per payload class, made on first use
_ONE_PASS: dict[type[Payload], Callable[[Any], Any]] = {}


class UndecodableMessage(Exception):
    """Bytes that are not a well-formed message of a known type."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def encode(envelope: Envelope[Any]) -> bytes:
    """envelope.model_dump(mode="json") written by orjson, minus model_dump's own cost (its
    keyword-argument wrapper, a tenth of the whole for a small event).

    pydantic-core's JSON writer (model_dump_json) does it in one pass, with the same bytes,
    but it is several times slower than orjson on long strings, and it writes what orjson
    refuses (an integer beyond 64 bits, which orjson would read back as a float; nesting
    past orjson's depth limit): keeping that would take a scan of its output, which costs
    more than it saves (bench/codec_bench.py)."""
    return orjson.dumps(envelope.__pydantic_serializer__.to_python(envelope, mode="json"))


def make_encoded(
    payloads: Sequence[Payload],
    *,
    execution_id: str,
    workspace_id: str,
    correlation_id: str,
    first_seq: int,
    causation_id: str | None = None,
    time: datetime | None = None,
) -> list[bytes]:
    """For each payload, the bytes of encode(make(payload, …)) with seq first_seq, first_seq
    + 1, …, all at `time` (now, read once, when None), in about a third of the time.

    For a writer's own events (the executor's): no Envelope is built, so its fields are not
    validated again. They are the writer's own (ids it holds, a seq it counts, the clock),
    and the payloads were validated when they were made; only what the envelope would refuse
    of them (a seq below 0, a time without a timezone) is checked. The document is the one
    encode() writes, in its order, the payload serialised by its own model as the envelope
    serialises it (tests/unit/events/test_make_encoded.py holds the two to the same bytes)."""
    if first_seq < 0:
        raise ValueError(f"seq must be at least 0, not {first_seq}")
    at = utcnow_json() if time is None else time_json(utc_millis(time))
    return [
        orjson.dumps(
            {
                "id": new_message_id_text(),
                "type": payload.TYPE,
                "execution_id": execution_id,
                "workspace_id": workspace_id,
                "seq": seq,
                "time": at,
                "correlation_id": correlation_id,
                "causation_id": causation_id,
                "data": payload.__pydantic_serializer__.to_python(payload, mode="json"),
            }
        )
        for seq, payload in enumerate(payloads, first_seq)
    ]


def decode(raw: bytes | None) -> Envelope[Payload]:
    """The envelope in `raw`, or UndecodableMessage saying why not.

    A message of a current type (no upcaster applies) is validated as Envelope[its payload
    class] in one pydantic-core pass over the document orjson read: python-mode validation
    of the very objects the two passes got, so it takes, refuses and yields exactly what they
    do. (validate_json straight from the bytes would skip orjson, but its parser takes NaN,
    Infinity, 1e400 and reads integers beyond 64 bits exactly, which orjson refuses or reads
    as floats.) Anything else, an invalid message included, goes the two-pass way, which
    upcasts and names the first error."""
    if raw is None:
        raise UndecodableMessage("empty message (tombstone) on a message topic")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UndecodableMessage(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UndecodableMessage("not a JSON object")
    stored_type = type_name = doc.get("type")
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
    if type_name == stored_type:  # a current type, as stored: envelope and payload in one pass
        try:
            envelope = _one_pass(cls)(doc)
        except ValidationError:
            pass  # the two passes below name the first error, as they always have
        else:
            return _as_any_envelope(envelope)
    try:
        payload = cls.model_validate(data)
        return _ANY_ENVELOPE.model_validate({**doc, "type": type_name, "data": payload})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UndecodableMessage(f"{type_name}: invalid {where}: {first['msg']}") from None


def _one_pass(cls: type[Payload]) -> Callable[[Any], Any]:
    """Validation as Envelope[cls]: on the document as orjson read it, the same checks and
    values as cls.model_validate(data) then Envelope[Payload].model_validate(doc)."""
    validate = _ONE_PASS.get(cls)
    if validate is None:
        model: type[Envelope[Any]] = Envelope[cls]  # type: ignore[valid-type]
        validate = _ONE_PASS[cls] = model.__pydantic_validator__.validate_python
    return validate


def _as_any_envelope(envelope: Envelope[Any]) -> Envelope[Payload]:
    """An Envelope[cls] as the Envelope[Payload] decode returns. The two are the same model
    with the same fields and layout (only the payload's declared type differs), so the
    instance just takes the other class, which costs far less than copying it would.
    (Envelope[Payload] itself cannot validate the payload as its own class: pydantic-core
    uses a model's own validator wherever the model appears in a schema.)"""
    object.__setattr__(envelope, "__class__", _ANY_ENVELOPE)
    return envelope
