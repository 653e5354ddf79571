"""Turning template results into JSON values and text, with size limits."""

from __future__ import annotations

import json
import math
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from typing import Any, NoReturn

from jinja2 import Undefined

from .errors import TemplateError

MIB = 1024 * 1024
MAX_VALUE_CHARS = MIB
"""Largest value (measured roughly as its JSON text) a template may produce."""
MAX_DEPTH = 64
"""Deepest nesting of lists/dicts a template may produce."""

_SCALAR_SIZE = 4


def fail_undefined(value: Undefined) -> NoReturn:
    """Raise the error carried by an undefined value (missing name or refused attribute)."""
    value._fail_with_undefined_error()


def kind_of(value: Any) -> str:
    """A short, user-facing name for the type of ``value``."""
    if callable(value):
        return "function"
    return type(value).__name__


def to_json(value: Any, limit: int = MAX_VALUE_CHARS) -> tuple[Any, int]:
    """``value`` converted to plain JSON types, and its approximate size in characters.

    Tuples, ranges, iterators and generators become lists; str subclasses become str; dict keys
    that are numbers, booleans or null become their JSON text. Raises TemplateError for anything
    else (functions, objects), for undefined values, non-finite numbers, nesting deeper than
    MAX_DEPTH, or a size above ``limit``.
    """
    counter = _Counter(limit)
    return _convert(value, counter, 0), counter.total


class _Counter:
    __slots__ = ("limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0

    def add(self, size: int) -> None:
        self.total += size
        if self.total > self.limit:
            raise TemplateError(f"the result is larger than the limit of {self.limit} characters")


def _convert(value: Any, counter: _Counter, depth: int) -> Any:
    if value is None or isinstance(value, bool):
        counter.add(_SCALAR_SIZE)
        return value
    if isinstance(value, str):
        counter.add(len(value) + 2)
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, int):
        counter.add(_SCALAR_SIZE)
        return value if type(value) is int else int(value)
    if isinstance(value, float):
        counter.add(_SCALAR_SIZE)
        return check_finite(float(value))
    if isinstance(value, Undefined):
        fail_undefined(value)
    if depth >= MAX_DEPTH:
        raise TemplateError(f"the result is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key, item in value.items():
            text_key = _json_key(key)
            counter.add(len(text_key) + _SCALAR_SIZE)
            result[text_key] = _convert(item, counter, depth + 1)
        return result
    if isinstance(value, list | tuple | range | Iterator | KeysView | ValuesView | ItemsView):
        items = []
        for item in value:
            counter.add(1)
            items.append(_convert(item, counter, depth + 1))
        return items
    raise TemplateError(f"the result is a {kind_of(value)}, which is not a JSON value")


def _json_key(key: Any) -> str:
    if isinstance(key, str):
        return key if type(key) is str else str.__str__(key)
    if key is None or isinstance(key, bool | int | float):
        return to_text(key)
    if isinstance(key, Undefined):
        fail_undefined(key)
    raise TemplateError(f"a dict key is a {kind_of(key)}; keys must be strings")


def check_finite(number: float) -> float:
    if not math.isfinite(number):
        raise TemplateError(f"the result is {number}, which is not a JSON number")
    return number


def to_text(value: Any) -> str:
    """The text of ``value`` inside a larger string.

    Strings as they are; ``true``/``false``/``null`` for booleans and None; numbers as in JSON;
    lists and dicts as JSON (``json.dumps``, non-ASCII kept).
    """
    if isinstance(value, str):
        return value if type(value) is str else str.__str__(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(check_finite(float(value)))
    if isinstance(value, Undefined):
        fail_undefined(value)
    converted, _ = to_json(value)
    return json.dumps(converted, ensure_ascii=False)


def deep_size(value: Any, limit: int) -> int:
    """Approximate size of ``value`` as text, counting shared references each time.

    Stops early: the answer is at most ``limit + 1``. Iterators are not consumed (size 0).
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, Mapping):
            total += 2 + len(item)
            if total <= limit:
                for key, sub in item.items():
                    stack.append(key)
                    stack.append(sub)
        elif isinstance(item, list | tuple):
            total += 2 + len(item)
            if total <= limit:
                stack.extend(item)
        else:
            total += _SCALAR_SIZE
        if total > limit:
            return limit + 1
    return total
