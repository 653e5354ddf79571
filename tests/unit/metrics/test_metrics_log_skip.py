"""The metrics consumer skips log lines undecoded, recognising them in the bytes the
encoder writes; every other message is decoded as before."""

from __future__ import annotations

from importlib import resources

import pytest

from jobsprint.events import LogRecorded, decode, encode
from jobsprint.metrics.consumer import is_log_line

pytestmark = pytest.mark.unit

SAMPLES = resources.files("jobsprint.events") / "samples"


@pytest.mark.parametrize(
    "name", sorted(p.name for p in SAMPLES.iterdir() if p.name.endswith(".json"))
)
def test_only_log_lines_as_the_encoder_writes_them_are_skipped(name: str) -> None:
    encoded = encode(decode((SAMPLES / name).read_bytes()))
    assert is_log_line(encoded) == (name == f"{LogRecorded.TYPE}.json")


def test_a_log_type_named_anywhere_else_is_not_taken_for_a_log_line() -> None:
    quoted = f'"type":"{LogRecorded.TYPE}"'.encode()
    assert not is_log_line(None)
    assert not is_log_line(b"{" + b" " * 200 + quoted + b"}")
