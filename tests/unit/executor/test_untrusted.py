import orjson
import pytest

from jobsprint.executor.untrusted import (
    MAX_MESSAGE,
    MAX_STRING,
    MAX_VALUE,
    clean_message,
    clean_text,
    clean_value,
)

pytestmark = pytest.mark.unit


def test_control_characters_and_ansi_escapes_are_escaped_not_dropped() -> None:
    text = clean_text("\x1b[31mRED\x1b[0m\r\nnext\tline \x07\x9b2J\x7f")
    assert text == "\\u001b[31mRED\\u001b[0m\\u000d\nnext\tline \\u0007\\u009b2J\\u007f"


def test_long_strings_are_cut_with_a_marker() -> None:
    text = clean_text("x" * (MAX_STRING + 10))
    assert text.startswith("x" * MAX_STRING)
    assert text.endswith("[truncated 10 characters]")
    assert clean_message("y" * (MAX_MESSAGE * 2)).endswith(f"[truncated {MAX_MESSAGE} characters]")


def test_values_keep_their_shape_and_escape_keys_and_nested_strings() -> None:
    value = {"a\x1b": ["ok", {"b": "\x00"}], "n": 3, "t": True, "none": None}
    assert clean_value(value) == {
        "a\\u001b": ["ok", {"b": "\\u0000"}],
        "n": 3,
        "t": True,
        "none": None,
    }


def test_a_value_too_big_as_a_whole_becomes_a_marked_preview() -> None:
    cleaned = clean_value(["z" * 60_000] * 10)
    assert cleaned["truncated"] is True
    assert cleaned["originalBytes"] > MAX_VALUE
    assert len(orjson.dumps(cleaned)) < MAX_VALUE


def test_small_values_pass_unchanged() -> None:
    value = {"email": {"from": "user@example.com"}, "list": [1, 2.5, "x"]}
    assert clean_value(value) == value
