"""make_encoded() writes a writer's own events without building and validating an Envelope
per event. Its bytes must be exactly what encode(make(…)) writes for the same payloads and
fields (and what the first codec, kept in test_codec_fast_path, wrote), and it must refuse
what that refuses."""

from __future__ import annotations

import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from jobsprint.events import (
    ExecutionStarted,
    LogRecorded,
    Payload,
    encode,
    make,
    make_encoded,
    registered_types,
)
from jobsprint.events.envelope import ids_as_text, time_json, utc_millis, utcnow_json
from tests.unit.events.test_codec_fast_path import (
    nested,
    random_datetime,
    random_model,
    random_text,
    reference_encode,
)

pytestmark = pytest.mark.unit


def validated(payload: Payload, value: bytes, time: datetime | None, **fields: Any) -> bytes:
    """What encode(make(…)) writes for `payload` at `value`'s seq (and time, when `time` is
    None), with `value`'s (random) id; checked against the first codec too."""
    doc = orjson.loads(value)
    made = make(
        payload, seq=doc["seq"], time=time or datetime.fromisoformat(doc["time"]), **fields
    ).model_copy(update={"id": uuid.UUID(doc["id"])})
    raw = encode(made)
    assert raw == reference_encode(made)
    return raw


def assert_as_validated(
    payloads: list[Payload], values: list[bytes], time: datetime | None, **fields: Any
) -> None:
    assert len(values) == len(payloads)
    for payload, value in zip(payloads, values, strict=True):
        assert value == validated(payload, value, time, **fields), payload


@pytest.mark.parametrize("seed", range(6))
def test_random_payloads_of_every_type_encode_as_make_then_encode(seed: int) -> None:
    rng = random.Random(seed)
    for cls in registered_types().values():
        for _ in range(20):
            payloads = [random_model(rng, cls) for _ in range(rng.randrange(1, 4))]
            first_seq = rng.choice([0, 1, 13, rng.randrange(2**32), 2**63 - 3])
            at = random_datetime(rng)  # in UTC or at some offset, with microseconds
            fields: dict[str, Any] = {
                "execution_id": random_text(rng),
                "workspace_id": random_text(rng),
                "correlation_id": random_text(rng),
                "causation_id": rng.choice([None, random_text(rng)]),
            }
            values = make_encoded(payloads, first_seq=first_seq, time=at, **fields)
            assert_as_validated(payloads, values, at, **fields)
            seqs = [orjson.loads(v)["seq"] for v in values]
            assert seqs == list(range(first_seq, first_seq + len(payloads)))


def test_times_before_year_1000_are_written_as_make_then_encode_writes_them() -> None:
    payloads: list[Payload] = [ExecutionStarted()]
    fields = {"execution_id": "e", "workspace_id": "w", "correlation_id": "c"}
    for at in (datetime(1, 1, 1, tzinfo=UTC), datetime(999, 12, 31, 23, 59, 59, 999999, UTC)):
        values = make_encoded(payloads, first_seq=1, time=at, **fields)
        assert_as_validated(payloads, values, at, **fields)


def test_without_a_time_all_events_of_a_call_are_now_in_utc_milliseconds() -> None:
    payloads: list[Payload] = [ExecutionStarted(), LogRecorded(message="m")]
    fields = {"execution_id": "e", "workspace_id": "w", "correlation_id": "c"}
    before = datetime.now(UTC)
    values = make_encoded(payloads, first_seq=1, **fields)
    after = datetime.now(UTC)
    times = {orjson.loads(v)["time"] for v in values}
    assert len(times) == 1
    moment = datetime.fromisoformat(times.pop())
    assert before.replace(microsecond=before.microsecond // 1000 * 1000) <= moment <= after
    assert_as_validated(payloads, values, None, **fields)


def test_message_ids_are_random_version_4_uuids_and_never_repeat() -> None:
    values = make_encoded(
        [ExecutionStarted()] * 5000,
        execution_id="e",
        workspace_id="w",
        correlation_id="c",
        first_seq=1,
    )
    ids = [uuid.UUID(orjson.loads(v)["id"]) for v in values]
    assert len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {4}
    assert {i.variant for i in ids} == {uuid.RFC_4122}


def test_ids_as_text_are_the_uuids_of_the_same_random_bytes() -> None:
    rng = random.Random(7)
    for raw in [bytes(16), b"\xff" * 16, rng.randbytes(16 * 300), os.urandom(4096)]:
        want = [str(uuid.UUID(bytes=raw[i : i + 16], version=4)) for i in range(0, len(raw), 16)]
        assert ids_as_text(raw) == want


def test_a_time_left_out_is_utcnow_at_the_same_clock_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(8)
    readings = [0, 999_999, 1_000_000, 1_736_166_600_123_999_999, 253_402_300_799_999_999_999]
    readings += [rng.randrange(4_102_444_800 * 10**9) for _ in range(2000)]
    for ns in readings:
        monkeypatch.setattr("jobsprint.events.envelope.time_ns", lambda ns=ns: ns)
        now = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
        assert utcnow_json() == time_json(utc_millis(now)), ns
        fields = {"execution_id": "e", "workspace_id": "w", "correlation_id": "c"}
        value = make_encoded([ExecutionStarted()], first_seq=1, **fields)[0]
        assert_as_validated([ExecutionStarted()], [value], now, **fields)


@pytest.mark.parametrize(
    "value",
    [2**64, -(2**63) - 1, "\ud800", {"k": "a\udfffb"}, nested(253), nested(300), object()],
    ids=["2**64", "-2**63-1", "lone surrogate", "surrogate in dict", "253 deep", "300 deep", "obj"],
)
def test_what_make_then_encode_refuses_is_refused_alike(value: Any) -> None:
    payload = LogRecorded(message="m", data=value)
    fields = {"execution_id": "e", "workspace_id": "w", "correlation_id": "c", "seq": 1}
    with pytest.raises(Exception) as want:
        encode(make(payload, **fields))
    with pytest.raises(type(want.value)) as got:
        make_encoded([payload], execution_id="e", workspace_id="w", correlation_id="c", first_seq=1)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize(
    ("first_seq", "at"),
    [(-1, None), (1, datetime(2025, 1, 6, 12, 30))],  # seq below 0; a time without a timezone
    ids=["negative seq", "naive time"],
)
def test_envelope_fields_make_refuses_are_refused(first_seq: int, at: datetime | None) -> None:
    fields: dict[str, Any] = {"execution_id": "e", "workspace_id": "w", "correlation_id": "c"}
    with pytest.raises(ValueError):
        make(ExecutionStarted(), seq=first_seq, time=at, **fields)
    with pytest.raises(ValueError):
        make_encoded([ExecutionStarted()], first_seq=first_seq, time=at, **fields)
