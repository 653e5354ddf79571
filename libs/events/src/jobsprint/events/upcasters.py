"""Upcasters turn a stored older message type into the current one at decode time.

Stored events are never rewritten: when a payload changes incompatibly, add a new `…vN+1`
type, keep reading the old one, and register an upcaster from the old type to the new.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_UPCASTERS: dict[str, tuple[str, Upcaster]] = {}


def register_upcaster(from_type: str, to_type: str, upcast: Upcaster) -> None:
    if from_type in _UPCASTERS:
        raise ValueError(f"an upcaster from {from_type!r} is already registered")
    _UPCASTERS[from_type] = (to_type, upcast)


def upcast(type_name: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Apply upcasters until the type has none left (v1 -> v2 -> v3 …)."""
    seen = {type_name}
    while type_name in _UPCASTERS:
        type_name, fn = _UPCASTERS[type_name]
        if type_name in seen:
            raise ValueError(f"upcaster cycle at {type_name!r}")
        seen.add(type_name)
        data = fn(data)
    return type_name, data
