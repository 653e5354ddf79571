"""Type registry: message type name -> payload model."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict


class Payload(BaseModel):
    """Base of every command and event payload. Unknown fields are ignored on decode."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    TYPE: ClassVar[str]
    KIND: ClassVar[str]  # "command" or "event"


P = TypeVar("P", bound=type[Payload])

_REGISTRY: dict[str, type[Payload]] = {}


def register(cls: P) -> P:
    name = cls.TYPE
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"message type {name!r} registered twice")
    _REGISTRY[name] = cls
    return cls


def payload_class(type_name: str) -> type[Payload] | None:
    return _REGISTRY.get(type_name)


def registered_types() -> dict[str, type[Payload]]:
    return dict(_REGISTRY)
