"""What the executor stores of untrusted text (step outputs, log lines, error messages):
control characters escaped so no terminal or log viewer can be driven by them, and sizes
capped with a visible marker, so one step cannot bloat the history or a Kafka record."""

from __future__ import annotations

import re
from typing import Any

import orjson

MAX_STRING = 64 * 1024  # characters of one string value
MAX_VALUE = 256 * 1024  # bytes of one output or log data value, as JSON
MAX_MESSAGE = 8 * 1024  # characters of a log line or an error message

# C0 controls but newline and tab, DEL, and C1 controls (ESC, CSI 0x9b, BEL, CR, …)
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def clean_text(text: str, limit: int = MAX_STRING) -> str:
    if len(text) > limit:
        text = f"{text[:limit]}… [truncated {len(text) - limit} characters]"
    return _CONTROLS.sub(_escape, text)


def _clean(value: Any, limit: int) -> Any:
    if isinstance(value, str):
        return clean_text(value, limit)
    if isinstance(value, dict):
        return {clean_text(str(k), 256): _clean(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, limit) for v in value]
    return value


def clean_value(value: Any, limit: int = MAX_VALUE) -> Any:
    """Escape every string in a JSON value and cap it; a value still over `limit` bytes as
    JSON becomes `{"truncated": true, "originalBytes": n, "preview": "<first bytes>"}`."""
    cleaned = _clean(value, MAX_STRING)
    size = len(orjson.dumps(cleaned))
    if size <= limit:
        return cleaned
    preview = orjson.dumps(cleaned)[: limit // 4].decode("utf-8", "ignore")
    return {"truncated": True, "originalBytes": size, "preview": preview}


def clean_message(text: str) -> str:
    return clean_text(text, MAX_MESSAGE)
