"""The Jinja2 sandbox that evaluates template expressions.

Built on ``ImmutableSandboxedEnvironment`` and narrowed further:

* names: only the context (``input``, ``steps``, ``execution``) and ``range`` (max 100 000);
* dicts: ``a.b`` and ``a['b']`` read keys only, never dict methods or attributes;
* other objects: only an allow-list of read-only ``str`` methods, ``list``/``tuple``
  ``index``/``count`` and named-tuple fields (from ``groupby``); everything else is refused;
* undefined values are strict (any use raises) but chain (``steps.x.output | default(1)``
  works when step x did not run);
* size guards: ``*``, ``**``, ``%``, ``+``, ``~``, and the widening filters and methods
  (``center``, ``indent``, ``format``, ``replace``, ``join``, ``batch``, ``slice``,
  ``wordwrap``) refuse to build values over MAX_VALUE_CHARS, and every filter/method/operator
  result is charged to a per-render work budget (MAX_WORK_CHARS);
* removed: ``random`` (not deterministic), ``pprint``, ``urlize``, ``xmlattr``, ``lipsum``,
  ``cycler``, ``joiner``, ``namespace``, ``dict``; ``string``, ``tojson``, ``join`` and ``~``
  render values as JSON text (``true``, ``null``, ``{"a": 1}``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import partial, wraps
from types import BuiltinMethodType
from typing import Any, NoReturn, cast

from jinja2 import StrictUndefined, Undefined, filters, nodes, pass_environment, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame
from jinja2.environment import Environment
from jinja2.exceptions import TemplateRuntimeError, UndefinedError
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range
from jinja2.utils import missing

from .errors import TemplateError
from .values import MAX_VALUE_CHARS, MIB, deep_size, to_json, to_text

MAX_WORK_CHARS = 16 * MIB
"""Total size of strings/lists that filters, methods and operators may build in one render."""
MAX_INT_BITS = 64 * 1024
MAX_SLICES = 100_000

_STR_METHODS = frozenset(
    {
        *("capitalize", "casefold", "center", "count", "endswith", "find", "index"),
        *("isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower"),
        *("isnumeric", "isspace", "istitle", "isupper", "join", "ljust", "lower", "lstrip"),
        *("partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust"),
        *("rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip"),
        *("swapcase", "title", "upper", "zfill"),
    }
)
_SEQUENCE_METHODS = frozenset({"index", "count"})
_REMOVED_FILTERS = ("random", "pprint", "urlize", "xmlattr")


# --- undefined values ----------------------------------------------------------------------------


class MissingValue(UndefinedError):
    """A name, key or item that does not exist was used. ``obj`` is where it was looked up."""

    def __init__(self, obj: Any, name: Any, hint: str | None, message: str) -> None:
        super().__init__(message)
        self.obj = obj
        self.name = name
        self.hint = hint


class StrictChainableUndefined(StrictUndefined):
    """Raises :class:`MissingValue` (or the sandbox's SecurityError) on any use."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        if exc is UndefinedError:
            exc = cast(type[TemplateRuntimeError], partial(MissingValue, obj, name, hint))
        super().__init__(hint, obj, name, exc)


# --- the per-render work budget ------------------------------------------------------------------


class _Work:
    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0


_WORK: ContextVar[_Work | None] = ContextVar("jobsprint_template_work", default=None)


@contextmanager
def work_budget() -> Iterator[None]:
    """Scope of one render: everything built inside is charged to one budget."""
    if _WORK.get() is not None:
        yield
        return
    token = _WORK.set(_Work())
    try:
        yield
    finally:
        _WORK.reset(token)


def charge(value: Any) -> None:
    """Charge the size of a freshly built string or list to the current render's budget."""
    if not isinstance(value, str | list | tuple):
        return
    work = _WORK.get()
    if work is None:
        return
    work.used += len(value)
    if work.used > MAX_WORK_CHARS:
        raise TemplateError(
            f"the template builds too much data (over {MAX_WORK_CHARS // MIB} MiB in one render)"
        )


# --- size guards ----------------------------------------------------------------------------------


def _too_large(what: str) -> NoReturn:
    raise TemplateError(f"{what} would be larger than the limit of {MAX_VALUE_CHARS} characters")


def _check_size(size: int, what: str) -> None:
    if size > MAX_VALUE_CHARS:
        _too_large(what)


def _check_count(count: Any, what: str) -> None:
    if isinstance(count, int) and count > MAX_VALUE_CHARS:
        _too_large(what)


def _size(value: Any) -> int:
    return deep_size(value, MAX_VALUE_CHARS)


_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _check_printf(fmt: str, args: Any) -> None:
    widths = 0
    for match in _PRINTF_SPEC.finditer(fmt):
        width, precision = match.group(1), match.group(2)
        if width == "*" or precision == "*":
            raise TemplateError("'*' widths are not allowed in format strings")
        widths += int(width or 0) + int(precision or 0)
    _check_size(len(fmt) + widths + _size(args), "the formatted string")


def _check_replace(s: Any, old: Any, new: Any, count: Any) -> None:
    if not (isinstance(s, str) and isinstance(old, str) and isinstance(new, str)):
        return
    hits = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    _check_size(len(s) + hits * max(0, len(new) - len(old)), "the replaced string")


def _check_join(separator: str, texts: list[str]) -> None:
    size = len(separator) * max(0, len(texts) - 1) + sum(len(text) for text in texts)
    _check_size(size, "the joined string")


def _check_binop(operator: str, left: Any, right: Any) -> None:
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int):
                _check_size(_size(seq) * max(0, times), "the repeated value")
        if _ints(left, right) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateError("the product is too large a number")
    elif operator == "**":
        if _ints(left, right) and right > 0 and left.bit_length() * right > MAX_INT_BITS:
            raise TemplateError("the power is too large a number")
    elif operator == "%" and isinstance(left, str):
        _check_printf(left, right)
    elif operator == "+" and _sequences(left, right):
        _check_size(_size(left) + _size(right), "the sum")


def _ints(left: Any, right: Any) -> bool:
    return isinstance(left, int) and isinstance(right, int)


def _sequences(left: Any, right: Any) -> bool:
    return isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple)


def _guard_str_method(owner: str, method: str, args: tuple[Any, ...]) -> tuple[Any, ...]:
    if method in ("center", "ljust", "rjust", "zfill") and args:
        _check_count(args[0], f"str.{method}() width")
    elif method == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], args[2] if len(args) > 2 else -1)
    elif method == "join" and len(args) == 1:
        items = list(args[0])
        _check_join(owner, [item for item in items if isinstance(item, str)])
        return (items,)
    return args


# --- filters: guarded and JSON-aware replacements -------------------------------------------------


def _charged(func: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = func(*args, **kwargs)
        charge(result)
        return result

    return wrapper


def _center(value: Any, width: int = 80) -> str:
    _check_count(width, "center() width")
    return filters.do_center(value, width)


def _indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    _check_count(width, "indent() width")
    prefix = len(width) if isinstance(width, str) else width
    text = str(s)
    _check_size(len(text) + (text.count("\n") + 2) * max(0, prefix), "the indented string")
    return filters.do_indent(s, width, first, blank)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_printf(str(value), kwargs or args)
    return filters.do_format(value, *args, **kwargs)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: Any, new: Any, count: int | None = None) -> str:
    _check_replace(str(s), str(old), str(new), count)
    return filters.do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def _join(
    eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    if attribute is not None:
        value = map(filters.make_attrgetter(eval_ctx.environment, attribute), value)
    texts = [to_text(item) for item in value]
    separator = to_text(d)
    _check_join(separator, texts)
    return separator.join(texts)


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if fill_with is not None:
        _check_size(max(0, linecount) * max(1, _size(fill_with)), "the batch filling")
    return filters.do_batch(value, linecount, fill_with)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if isinstance(slices, int) and slices > MAX_SLICES:
        raise TemplateError(f"slice() count {slices} is over the limit of {MAX_SLICES}")
    if fill_with is not None:
        _check_size(max(0, slices) * max(1, _size(fill_with)), "the slice filling")
    return filters.sync_do_slice(value, slices, fill_with)


@pass_environment
def _sum(
    environment: Environment,
    iterable: Iterable[Any],
    attribute: str | int | None = None,
    start: Any = 0,
) -> Any:
    if isinstance(start, bool) or not isinstance(start, int | float):
        raise TemplateError("sum() only adds numbers; its start must be a number")
    return filters.sync_do_sum(environment, iterable, attribute, start)


@pass_environment
def _wordwrap(
    environment: Environment,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    if wrapstring and isinstance(width, int) and width > 0:
        text = str(s)
        lines = len(text) // width + text.count("\n") + 1
        _check_size(len(text) + lines * len(str(wrapstring)), "the wrapped string")
    return filters.do_wordwrap(
        environment, s, width, break_long_words, wrapstring, break_on_hyphens
    )


def _tojson(value: Any, indent: int | None = None) -> str:
    if indent is not None and not (isinstance(indent, int) and 0 <= indent <= 16):
        raise TemplateError("tojson() indent must be a number from 0 to 16")
    converted, _ = to_json(value)
    return json.dumps(converted, ensure_ascii=False, indent=indent)


_REPLACED_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _center,
    "indent": _indent,
    "format": _format,
    "replace": _replace,
    "join": _join,
    "batch": _batch,
    "slice": _slice,
    "sum": _sum,
    "wordwrap": _wordwrap,
    "tojson": _tojson,
    "string": to_text,
}


# --- the environment ------------------------------------------------------------------------------


class _CodeGenerator(CodeGenerator):
    """Compiles ``a ~ b`` to ``environment.json_concat((a, b))`` (JSON text, size-guarded)."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.json_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class SandboxEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self) -> None:
        # Only ``{{ }}`` is special: block and comment delimiters are set to strings that
        # cannot occur, so ``{%`` and ``{#`` are plain text.
        super().__init__(
            undefined=StrictChainableUndefined,
            autoescape=False,
            optimized=False,
            block_start_string="{%\x00",
            block_end_string="\x00%}",
            comment_start_string="{#\x00",
            comment_end_string="\x00#}",
        )
        self.globals.clear()
        self.globals["range"] = safe_range
        for name in _REMOVED_FILTERS:
            del self.filters[name]
        self.filters.update(_REPLACED_FILTERS)
        self.filters = {name: _charged(func) for name, func in self.filters.items()}

    # -- attribute and item access --

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return _attribute_allowed(obj, attr) and super().is_safe_attribute(obj, attr, value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Undefined):
            return obj
        if isinstance(obj, Mapping):
            return self._key(obj, attribute)
        if not _attribute_allowed(obj, attribute):
            return self.unsafe_undefined(obj, attribute)
        try:
            return getattr(obj, attribute)
        except AttributeError:
            return self.undefined(obj=obj, name=attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Undefined):
            return obj
        if isinstance(argument, Undefined):
            return argument
        if isinstance(obj, Mapping):
            return self._key(obj, argument)
        if isinstance(argument, str):
            return self.getattr(obj, argument)
        try:
            return obj[argument]
        except (TypeError, LookupError):
            return self.undefined(obj=obj, name=argument)

    def _key(self, obj: Mapping[Any, Any], key: Any) -> Any:
        try:
            return obj[key]
        except (KeyError, TypeError):
            return self.undefined(obj=obj, name=key)

    # -- operators and calls --

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        charge(result)
        return result

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        if isinstance(obj, BuiltinMethodType):
            owner = getattr(obj, "__self__", None)
            if isinstance(owner, str):
                args = _guard_str_method(owner, obj.__name__, args)
        result = super().call(context, obj, *args, **kwargs)
        charge(result)
        return result

    def json_concat(self, values: tuple[Any, ...]) -> str:
        texts = [to_text(value) for value in values]
        _check_join("", texts)
        result = "".join(texts)
        charge(result)
        return result


def _attribute_allowed(obj: Any, attr: str) -> bool:
    if attr.startswith("_"):
        return False
    if isinstance(obj, str):
        return attr in _STR_METHODS
    if isinstance(obj, tuple) and attr in getattr(type(obj), "_fields", ()):
        return True
    if isinstance(obj, list | tuple):
        return attr in _SEQUENCE_METHODS
    return False


ENVIRONMENT = SandboxEnvironment()
