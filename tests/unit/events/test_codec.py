import json
from importlib import resources

import orjson
import pytest

from jobsprint.events import (
    ExecutionDeleted,
    StepCompleted,
    UndecodableMessage,
    decode,
    encode,
    make,
    register_upcaster,
    registered_types,
)
from jobsprint.events.registry import Payload, register
from jobsprint.events.upcasters import _UPCASTERS

pytestmark = pytest.mark.unit

SAMPLES = resources.files("jobsprint.events") / "samples"


def sample_names() -> list[str]:
    return sorted(p.name for p in SAMPLES.iterdir() if p.name.endswith(".json"))


def test_every_registered_type_has_a_golden_sample() -> None:
    have = {name.removesuffix(".json") for name in sample_names()}
    assert set(registered_types()) <= have


@pytest.mark.parametrize("name", sample_names())
def test_golden_sample_decodes_to_its_type_and_reencodes_identically(name: str) -> None:
    raw = (SAMPLES / name).read_bytes()
    envelope = decode(raw)
    assert envelope.type == name.removesuffix(".json")
    assert isinstance(envelope.data, registered_types()[envelope.type])
    assert orjson.loads(encode(envelope)) == json.loads(raw)


def test_unknown_fields_are_ignored_so_adding_a_field_is_not_breaking() -> None:
    doc = json.loads((SAMPLES / "execution.step_completed.v1.json").read_bytes())
    doc["data"]["added_later"] = {"x": 1}
    doc["added_to_envelope"] = True
    envelope = decode(orjson.dumps(doc))
    assert isinstance(envelope.data, StepCompleted)
    assert envelope.data.output == {"to": "user@example.com"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00\xff not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"data": {}}', "missing 'type'"),
        (b'{"type": "execution.nope.v9", "data": {}}', "unknown message type"),
        (None, "tombstone"),
    ],
)
def test_undecodable_input_raises_one_named_error(raw: bytes | None, reason: str) -> None:
    with pytest.raises(UndecodableMessage, match=reason):
        decode(raw)


def test_missing_required_field_names_the_field() -> None:
    doc = json.loads((SAMPLES / "execution.step_started.v1.json").read_bytes())
    del doc["data"]["step_id"]
    with pytest.raises(UndecodableMessage, match="step_id"):
        decode(orjson.dumps(doc))


def test_time_is_utc_with_milliseconds() -> None:
    envelope = make(ExecutionDeleted(), execution_id="e", workspace_id="w", correlation_id="c")
    text = orjson.loads(encode(envelope))["time"]
    assert text.endswith("Z") and len(text) == len("2025-01-06T12:30:00.123Z")
    assert decode(encode(envelope)).time == envelope.time


def test_upcaster_turns_an_old_type_into_the_current_one() -> None:
    @register
    class Renamed(Payload):
        TYPE = "test.renamed.v2"
        KIND = "event"
        new_name: str

    register_upcaster("test.renamed.v1", "test.renamed.v2", lambda d: {"new_name": d["old_name"]})
    try:
        old = {
            "type": "test.renamed.v1",
            "execution_id": "e",
            "workspace_id": "w",
            "correlation_id": "c",
            "data": {"old_name": "kept"},
        }
        envelope = decode(orjson.dumps(old))
        assert envelope.type == "test.renamed.v2"
        assert isinstance(envelope.data, Renamed)
        assert envelope.data.new_name == "kept"
    finally:
        _UPCASTERS.pop("test.renamed.v1")
