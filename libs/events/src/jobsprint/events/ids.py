"""Time-ordered identifiers: `<prefix>_` + 26 Crockford base32 characters
(48-bit millisecond time, then 80 random bits).

Sorting ids as strings sorts them by creation time, which keyset pagination and index
locality rely on.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_TIME_CHARS = 10
_RANDOM_CHARS = 16


def _encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_id(prefix: str, at: datetime | None = None) -> str:
    millis = int((at.timestamp() if at else time.time()) * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    return f"{prefix}_{_encode(millis, _TIME_CHARS)}{_encode(rand, _RANDOM_CHARS)}"


def new_execution_id() -> str:
    return new_id("exec")


def new_workflow_id() -> str:
    return new_id("wf")


def id_time(identifier: str) -> datetime:
    """The creation time encoded in an id; ValueError when it is not one of ours."""
    _, _, body = identifier.partition("_")
    if len(body) != _TIME_CHARS + _RANDOM_CHARS:
        raise ValueError(f"not a time-ordered id: {identifier!r}")
    millis = 0
    for char in body[:_TIME_CHARS]:
        if char not in _INDEX:
            raise ValueError(f"not a time-ordered id: {identifier!r}")
        millis = millis * 32 + _INDEX[char]
    return datetime.fromtimestamp(millis / 1000, tz=UTC)


def id_floor(prefix: str, at: datetime) -> str:
    """The smallest id of `prefix` created at or after `at` (for range filters on ids)."""
    millis = int(at.timestamp() * 1000)
    return f"{prefix}_{_encode(max(millis, 0), _TIME_CHARS)}{'0' * _RANDOM_CHARS}"


def looks_like_id(prefix: str, value: str) -> bool:
    body = value.removeprefix(f"{prefix}_")
    return (
        body != value
        and len(body) == _TIME_CHARS + _RANDOM_CHARS
        and all(c in _INDEX for c in body)
    )
