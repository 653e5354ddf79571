"""decode() validates a message of a current type in one pass (the two-pass path takes
everything else), and encode() and the envelope's time hooks were made cheaper. All must
give exactly what the first codec gave: the same bytes, equal envelopes of the same classes
with values of the same types, the same errors. The first codec is kept here as the
reference."""

from __future__ import annotations

import json
import random
import string
import types
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from importlib import resources
from typing import Any, Literal, Union, get_args, get_origin

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from jobsprint.events import (
    Envelope,
    ExecutionDeleted,
    LogRecorded,
    Payload,
    StepCompleted,
    UndecodableMessage,
    codec,
    decode,
    encode,
    make,
    registered_types,
)
from jobsprint.events.registry import payload_class
from jobsprint.events.upcasters import upcast

pytestmark = pytest.mark.unit

SAMPLES = resources.files("jobsprint.events") / "samples"
SAMPLE_NAMES = sorted(p.name for p in SAMPLES.iterdir() if p.name.endswith(".json"))


# --- the first codec, as it was ------------------------------------------------------------


def reference_encode(envelope: Envelope[Any]) -> bytes:
    return orjson.dumps(envelope.model_dump(mode="json"))


def reference_decode(raw: bytes | None) -> Envelope[Payload]:
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
        return Envelope[Payload].model_validate({**doc, "type": type_name, "data": payload})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UndecodableMessage(f"{type_name}: invalid {where}: {first['msg']}") from None


def reference_time_json(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def reference_utc_millis(value: datetime) -> datetime:
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


# --- comparing ------------------------------------------------------------------------------


def assert_same_envelope(got: Envelope[Payload], want: Envelope[Payload]) -> None:
    """Equal, of the same classes, with values of the same types: repr() tells 1 from 1.0,
    a tuple from a list and datetime.UTC from pydantic's TzInfo."""
    assert type(got) is type(want) is Envelope[Payload]
    assert type(got.data) is type(want.data)
    assert got.model_fields_set == want.model_fields_set
    assert got.data.model_fields_set == want.data.model_fields_set
    assert got.time.tzinfo is UTC
    for defaulted in ("id", "time"):  # left out: a new uuid4 / utcnow() for each decode
        if defaulted not in want.model_fields_set:
            got = got.model_copy(update={defaulted: getattr(want, defaulted)})
    assert repr(got) == repr(want)
    assert got == want or "nan" in repr(want)  # a float NaN is never equal to itself


def decode_outcome(decoder: Any, raw: bytes | None) -> tuple[str, Any]:
    try:
        return "ok", decoder(raw)
    except UndecodableMessage as exc:
        return "undecodable", exc.reason


def assert_decodes_as_before(raw: bytes | None) -> None:
    got, want = decode_outcome(decode, raw), decode_outcome(reference_decode, raw)
    assert got[0] == want[0], (raw, got, want)
    if got[0] == "ok":
        assert_same_envelope(got[1], want[1])
    else:
        assert got[1] == want[1]


# --- random payloads ----------------------------------------------------------------------

TEXT = (
    string.ascii_letters
    + string.digits
    + ' "\\/\b\f\n\r\t\x00\x01\x1f\x7f\x80\x9f'
    + "éüßñ€£¥—…«»\u2028\u2029\ufeff\u200b"
    + "日本語中文한국어العربيةעברית"
    + "😀🎉👍🏽🇫🇷"
)
INTEGERS = [
    0,
    1,
    -1,
    2**31,
    -(2**31) - 1,
    2**53 + 1,
    10**18,
    2**63 - 1,
    -(2**63),
    2**63,
    2**64 - 1,
    -(10**18),
    1234567890123456789,
]
FLOATS = [0.0, -0.0, 0.1, 1.5, 1e16, 1e-7, 1.2345678901234568e18, 5e-324, 1.7976931348623157e308]


def random_text(rng: random.Random, longest: int = 24) -> str:
    return "".join(rng.choice(TEXT) for _ in range(rng.randrange(longest)))


def random_datetime(rng: random.Random) -> datetime:
    value = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(
        seconds=rng.randrange(60 * 365 * 86_400), microseconds=rng.randrange(1_000_000)
    )
    offset = rng.choice([None, 0, 60, -300, 330, 345, 840, -720])
    if offset is None:
        return value
    return value.astimezone(timezone(timedelta(minutes=offset)))


def random_float(rng: random.Random) -> float:
    if rng.random() < 0.3:
        return rng.choice(FLOATS)
    return rng.uniform(-1, 1) * 10.0 ** rng.randrange(-30, 30)


def random_int(rng: random.Random) -> int:
    if rng.random() < 0.5:
        return rng.choice(INTEGERS)
    return rng.randrange(-(2**63), 2**64)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """Anything a step could put into an output, an input or a log line's data."""
    kinds = ["none", "bool", "int", "float", "text", "datetime", "uuid", "date", "decimal"]
    if depth < 3:
        kinds += ["list", "tuple", "dict", "dict", "dict"]
    kind = rng.choice(kinds)
    if kind == "none":
        return None
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "int":
        return random_int(rng)
    if kind == "float":
        return random_float(rng)
    if kind == "text":
        return random_text(rng)
    if kind == "datetime":
        moment = random_datetime(rng)
        return moment.replace(tzinfo=None) if rng.random() < 0.2 else moment
    if kind == "uuid":
        return uuid.UUID(int=rng.getrandbits(128))
    if kind == "date":
        return date(rng.randrange(1970, 2100), rng.randrange(1, 13), rng.randrange(1, 29))
    if kind == "decimal":
        return Decimal(rng.randrange(-(10**6), 10**6)) / 100
    items = [random_value(rng, depth + 1) for _ in range(rng.randrange(5))]
    if kind == "list":
        return items
    if kind == "tuple":
        return tuple(items)
    return {random_text(rng, 12): item for item in items}


def random_field(rng: random.Random, annotation: Any) -> Any:
    """A random value of a payload field's declared type."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return random_value(rng)
    if origin in (Union, types.UnionType):
        if type(None) in args and rng.random() < 0.3:
            return None
        return random_field(rng, rng.choice([a for a in args if a is not type(None)]))
    if origin is Literal:
        return rng.choice(args)
    if origin is tuple:
        return tuple(random_field(rng, args[0]) for _ in range(rng.randrange(3)))
    if origin is dict:
        return {random_text(rng, 12): random_value(rng) for _ in range(rng.randrange(5))}
    if annotation is str:
        return random_text(rng)
    if annotation is bool:
        return rng.random() < 0.5
    if annotation is int:
        return random_int(rng)
    if annotation is float:
        return random_float(rng)
    if annotation is datetime:
        return random_datetime(rng)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return random_model(rng, annotation)
    raise AssertionError(f"no random values for {annotation!r}: teach random_field")


def random_model(rng: random.Random, cls: type[BaseModel]) -> Any:
    values = {}
    for name, field in cls.model_fields.items():
        if field.is_required() or rng.random() < 0.7:
            values[name] = random_field(rng, field.annotation)
    return cls(**values)


def random_envelope(rng: random.Random, cls: type[Payload]) -> Envelope[Any]:
    return make(
        random_model(rng, cls),
        execution_id=random_text(rng),
        workspace_id=random_text(rng),
        correlation_id=random_text(rng),
        seq=rng.choice([0, 1, 13, 2**63 - 1, rng.randrange(2**64)]),
        causation_id=rng.choice([None, random_text(rng)]),
        time=random_datetime(rng).astimezone(rng.choice([UTC, timezone(timedelta(hours=5))])),
    )


def random_envelopes(count_per_type: int, seed: int) -> list[Envelope[Any]]:
    rng = random.Random(seed)
    return [
        random_envelope(rng, cls)
        for cls in registered_types().values()
        for _ in range(count_per_type)
    ]


def envelope_of(payload: Payload) -> Envelope[Any]:
    return make(payload, execution_id="e", workspace_id="w", correlation_id="c")


# --- encode -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_sample_encodes_to_the_same_bytes(name: str) -> None:
    envelope = reference_decode((SAMPLES / name).read_bytes())
    assert encode(envelope) == reference_encode(envelope)
    made = make(
        envelope.data,
        execution_id=envelope.execution_id,
        workspace_id=envelope.workspace_id,
        correlation_id=envelope.correlation_id,
        seq=envelope.seq,
        causation_id=envelope.causation_id,
        time=envelope.time,
    )
    assert encode(made) == reference_encode(made)


@pytest.mark.parametrize("seed", range(4))
def test_random_payloads_encode_to_the_same_bytes(seed: int) -> None:
    for envelope in random_envelopes(40, seed):
        assert encode(envelope) == reference_encode(envelope), envelope


def nested(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        10**30,
        [1, {"deep": -(10**25)}],
        "\ud800",
        {"k": "a\udfffb"},
        nested(253),  # orjson's depth limit, not pydantic's (which model_dump_json has)
        nested(300),
        object(),
    ],
    ids=[
        "2**64",
        "-2**63-1",
        "10**30",
        "nested big",
        "lone surrogate",
        "surrogate in dict",
        "253 deep",
        "300 deep",
        "object",
    ],
)
def test_what_the_first_encoder_refused_is_refused_alike(value: Any) -> None:
    envelope = envelope_of(LogRecorded(message="m", data=value))
    with pytest.raises(Exception) as want:
        reference_encode(envelope)
    with pytest.raises(type(want.value)) as got:
        encode(envelope)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize(
    "value",
    [
        2**63 - 1,
        -(2**63),
        2**64 - 1,
        "1234567890123456789012",
        [1, 9999999999999999999],
        0.000012345678901234568,
        -1.2345678901234568e-300,
    ],
)
def test_long_numbers_the_first_encoder_took_encode_alike(value: Any) -> None:
    envelope = envelope_of(LogRecorded(message="m", data=value))
    assert encode(envelope) == reference_encode(envelope)


def test_log_lines_still_start_with_their_type() -> None:
    envelope = envelope_of(LogRecorded(message="m"))
    assert f'"type":"{LogRecorded.TYPE}"'.encode() in encode(envelope)[:128]


def test_time_is_written_as_before() -> None:
    rng = random.Random(5)
    envelope = envelope_of(ExecutionDeleted())
    moments = [random_datetime(rng) for _ in range(2000)]
    moments += [datetime(1, 1, 1, tzinfo=UTC), datetime(999, 12, 31, 23, 59, 59, 999999)]
    moments += [datetime(1000, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999)]
    for moment in moments:
        for value in (moment, moment.replace(tzinfo=None)):
            assert envelope._time_json(value) == reference_time_json(value), value


def test_time_is_read_as_before() -> None:
    rng = random.Random(6)
    for _ in range(2000):
        moment = random_datetime(rng)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        if rng.random() < 0.3:
            moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
        got = Envelope._utc_millis(moment)
        want = reference_utc_millis(moment)
        assert got == want and repr(got) == repr(want) and got.tzinfo is UTC


# --- decode -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_every_sample_decodes_as_before(name: str) -> None:
    raw = (SAMPLES / name).read_bytes()
    assert_decodes_as_before(raw)
    assert_decodes_as_before(encode(reference_decode(raw)))


@pytest.mark.parametrize("seed", range(4))
def test_random_payloads_decode_as_before(seed: int) -> None:
    for envelope in random_envelopes(40, seed):
        assert_decodes_as_before(encode(envelope))


def test_current_messages_take_one_validation_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    def second_pass(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a current, valid message went the two-pass way")

    monkeypatch.setattr(Envelope[Payload], "model_validate", second_pass)
    for name in SAMPLE_NAMES:
        envelope = decode((SAMPLES / name).read_bytes())
        assert type(envelope) is Envelope[Payload]


def test_a_type_with_an_upcaster_is_upcast_not_read_as_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An upcaster from a type still registered: the stored message must be upcast."""
    upcasters: dict[str, Any] = {}
    monkeypatch.setattr("jobsprint.events.upcasters._UPCASTERS", upcasters)
    upcasters[StepCompleted.TYPE] = (ExecutionDeleted.TYPE, lambda data: {})
    envelope = decode((SAMPLES / f"{StepCompleted.TYPE}.json").read_bytes())
    assert envelope.type == ExecutionDeleted.TYPE and isinstance(envelope.data, ExecutionDeleted)


# The same documents, one value changed at a time (or left out), as JSON text: where the
# one-pass validation of the whole document could be stricter or laxer than the two passes.
ODD_VALUES: list[bytes] = [
    b"null",
    b"true",
    b"false",
    b"0",
    b"-1",
    b"1",
    b"-0",
    b"7.0",
    b"7.5",
    b"-0.0",
    b"1E2",
    b"9223372036854775808",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"100000000000000000000000000000",
    b"1e400",
    b"NaN",
    b"Infinity",
    b"1736166600",
    b"1736166600.5",
    b'""',
    b'"x"',
    b'"7"',
    b'"7.0"',
    b'"7.5"',
    b'" 7 "',
    b'"0x1f"',
    b'"1_000"',
    b'"NaN"',
    b'"inf"',
    b'"true"',
    b'"yes"',
    b'"off"',
    b'"info"',
    b'"INFO"',
    b'"webhook"',
    b'"2025-01-06T12:30:00.123456Z"',
    b'"2025-01-06T12:30:00+05:30"',
    b'"2025-01-06T12:30:00"',
    b'"2025-01-06"',
    b'"2025-01-06 12:30:00Z"',
    b'"1736166600"',
    b'"00000000-0000-0000-0000-00000000000f"',
    b'"000000000000000000000000000000ff"',
    b'"{00000000-0000-0000-0000-00000000000f}"',
    b"[]",
    b'["x"]',
    b"{}",
    b'{"code": "c", "message": "m"}',
    b'[{"step_id": "s", "step_name": "n", "step_type": "t"}]',
    b'{"step_id": "s"}',
]
GONE = b"<left out>"


def odd_documents(name: str) -> list[bytes]:
    doc = json.loads((SAMPLES / name).read_bytes())
    documents = []
    for where in [*[("envelope", k) for k in doc], *[("data", k) for k in doc["data"]]]:
        for odd in [*ODD_VALUES, GONE]:
            changed = json.loads(json.dumps(doc))
            target = changed if where[0] == "envelope" else changed["data"]
            if where == ("envelope", "type") or (where == ("envelope", "data") and odd == GONE):
                continue  # not what this test is about (and tested elsewhere)
            if odd == GONE:
                del target[where[1]]
                documents.append(json.dumps(changed).encode())
                continue
            target[where[1]] = "<odd>"
            documents.append(json.dumps(changed).encode().replace(b'"<odd>"', odd))
    extra = json.loads(json.dumps(doc))
    extra["data"]["added_later"] = 1
    extra["added_later"] = [1]
    documents.append(json.dumps(extra).encode())
    documents.append(json.dumps(doc).encode() + b"  \n")
    return documents


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_odd_values_are_taken_or_refused_as_before(name: str) -> None:
    for raw in odd_documents(name):
        assert_decodes_as_before(raw)


def test_the_one_pass_takes_and_refuses_the_same_as_the_two() -> None:
    """Not only the outcome of decode() (the fallback would hide a difference): the one-pass
    validation on its own accepts exactly what the two passes accept."""
    for name in SAMPLE_NAMES:
        cls = registered_types()[name.removesuffix(".json")]
        for raw in odd_documents(name):
            doc = orjson.loads(raw) if _is_json(raw) else None
            if not isinstance(doc, dict) or not isinstance(doc.get("data"), dict):
                continue
            try:
                one = codec._one_pass(cls)(doc)
            except ValidationError:
                one = None
            want = decode_outcome(reference_decode, raw)
            assert (one is not None) == (want[0] == "ok"), (raw, want)
            if one is not None:
                assert_same_envelope(codec._as_any_envelope(one), want[1])


def _is_json(raw: bytes) -> bool:
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False
    return True


def test_message_ids_are_random_version_4_uuids_and_never_repeat() -> None:
    from jobsprint.events.envelope import new_message_id

    ids = [new_message_id() for _ in range(5000)]  # several refills of the random buffer
    assert len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {4}
    assert {i.variant for i in ids} == {uuid.RFC_4122}
