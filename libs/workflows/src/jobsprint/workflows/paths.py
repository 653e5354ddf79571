"""JSON-path-like locations: ``steps[2].params.url``, ``headers["X-Token"]``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def join_path(path: str, key: Any) -> str:
    """``path`` extended by a dict key (``.key`` or ``["odd key"]``) or a list index (``[i]``)."""
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}" if path else key
    if isinstance(key, str):
        return f"{path}[{json.dumps(key, ensure_ascii=False)}]"
    return f"{path}[{key}]"


def format_path(keys: Iterable[Any]) -> str:
    """``("steps", 2, "params", "url")`` -> ``steps[2].params.url``."""
    path = ""
    for key in keys:
        path = join_path(path, key)
    return path
