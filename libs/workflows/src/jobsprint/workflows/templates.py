"""``{{ expression }}`` templates inside JSON values, evaluated in the sandbox.

Rules (see README.md):

* ``render`` walks dicts (values only, keys are never templated), lists and strings; other
  JSON values are returned as they are. A string without ``{{`` is returned unchanged.
* A string that is exactly one expression (surrounding whitespace allowed) yields the value
  with its JSON type. Any other string with templates yields a string, values inside it
  written as JSON text (``true``, ``null``, ``[1, 2]``).
* Only ``{{ }}`` is special. ``{%`` and ``{#`` are plain text. ``{{-`` / ``-}}`` trim the
  whitespace of the neighbouring text, as in Jinja.
* Names: ``input``, ``steps``, ``execution`` and ``range``. Any use of a missing name, key or
  list item raises TemplateError naming its path; ``x | default(v)`` and ``x is defined`` test
  for them without raising (and chain: ``steps.a.output.b | default(0)``).
* Every failure is a TemplateError whose message quotes the expression; results are limited to
  MAX_VALUE_CHARS characters per ``render`` call (values passed through unchanged by a plain
  lookup such as ``{{ input.doc }}`` are not counted).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import Template, nodes
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.lexer import describe_token
from jinja2.parser import Parser
from jinja2.utils import missing

from .errors import TemplateError
from .paths import join_path
from .sandbox import ENVIRONMENT, MissingValue, work_budget
from .values import MAX_VALUE_CHARS, kind_of, to_json, to_text

CONTEXT_NAMES = ("input", "steps", "execution")
"""The top-level names a template may use, besides the ``range`` function."""
KNOWN_NAMES = frozenset(CONTEXT_NAMES) | frozenset(ENVIRONMENT.globals)

_CACHE_SIZE = 4096
_MAX_CACHED_CHARS = 64 * 1024
"""Longer template strings are compiled each time, so the cache cannot hold huge texts."""
_SNIPPET_CHARS = 120
_PATH_SEARCH_NODES = 10_000


@dataclass(frozen=True, slots=True)
class _Expression:
    source: str
    template: Template
    names: frozenset[str]
    is_path: bool


@dataclass(frozen=True, slots=True)
class _CompiledString:
    parts: tuple[str | _Expression, ...]
    single: _Expression | None


class _Output:
    """How much a render() call has produced so far."""

    __slots__ = ("used",)

    def __init__(self) -> None:
        self.used = 0

    @property
    def remaining(self) -> int:
        return MAX_VALUE_CHARS - self.used

    def add(self, size: int) -> None:
        self.used += size
        if self.used > MAX_VALUE_CHARS:
            raise TemplateError(
                f"the result is larger than the limit of {MAX_VALUE_CHARS} characters"
            )


# --- public API -----------------------------------------------------------------------------------


def render(template: Any, context: Mapping[str, Any]) -> Any:
    """Render every template in ``template`` (a JSON value) against ``context``.

    The result may share unchanged sub-values with ``context``: treat it as read-only.
    """
    if isinstance(template, str) and "{{" not in template:
        return template
    output = _Output()
    scope = _scope(context)
    with work_budget():
        return _render_value(template, context, scope, output)


def render_text(template: str, context: Mapping[str, Any]) -> str:
    """Like ``render`` for one string, but always returns text (``to_text`` of the value)."""
    return to_text(render(template, context))


def evaluate(expression: str, context: Mapping[str, Any]) -> Any:
    """The value of one expression: bare (``input.n > 3``) or wrapped (``{{ input.n > 3 }}``)."""
    expr = _condition_expression(expression)
    with work_budget():
        value = _run(expr, context, _scope(context))
        return _to_result(value, expr, _Output(), context)


def truthy(value: Any) -> bool:
    """JSON truthiness: false, null, 0, "", [] and {} are false; everything else is true."""
    return bool(value)


def check_template(template: Any) -> list[str]:
    """Syntax problems (and unknown names) of every template string inside ``template``."""
    return [
        f"{where}: {message}" if where else message for where, message in locate_problems(template)
    ]


def check_expression(expression: str) -> list[str]:
    """Problems of a condition expression (bare or ``{{ }}``-wrapped)."""
    try:
        expr = _condition_expression(expression)
    except TemplateError as exc:
        return [exc.reason]
    return _name_problems(expr)


def locate_problems(template: Any, path: str = "") -> list[tuple[str, str]]:
    """``(location, message)`` for every template problem inside ``template``."""
    problems: list[tuple[str, str]] = []
    if isinstance(template, str):
        if "{{" in template:
            problems.extend((path, message) for message in _string_problems(template))
    elif isinstance(template, Mapping):
        for key, value in template.items():
            problems.extend(locate_problems(value, join_path(path, key)))
    elif isinstance(template, list | tuple):
        for index, value in enumerate(template):
            problems.extend(locate_problems(value, join_path(path, index)))
    return problems


# --- rendering ------------------------------------------------------------------------------------


def _scope(context: Mapping[str, Any]) -> dict[str, Any]:
    return {**ENVIRONMENT.globals, **context}


def _render_value(
    value: Any, context: Mapping[str, Any], scope: dict[str, Any], out: _Output
) -> Any:
    if isinstance(value, str):
        return _render_string(value, context, scope, out) if "{{" in value else value
    if isinstance(value, Mapping):
        result: dict[Any, Any] = {}
        for key, item in value.items():
            try:
                result[key] = _render_value(item, context, scope, out)
            except TemplateError as exc:
                raise exc.at(join_path("", key)) from None
        return result
    if isinstance(value, list | tuple):
        items: list[Any] = []
        for index, item in enumerate(value):
            try:
                items.append(_render_value(item, context, scope, out))
            except TemplateError as exc:
                raise exc.at(f"[{index}]") from None
        return items
    return value


def _render_string(
    source: str, context: Mapping[str, Any], scope: dict[str, Any], out: _Output
) -> Any:
    compiled = _compile_string(source)
    if compiled.single is not None:
        value = _run(compiled.single, context, scope)
        return _to_result(value, compiled.single, out, context)
    pieces: list[str] = []
    for part in compiled.parts:
        if isinstance(part, str):
            pieces.append(part)
        else:
            value = _run(part, context, scope)
            try:
                pieces.append(to_text(value))
            except Exception as exc:
                raise _explain(exc, part.source, context) from None
    text = "".join(pieces)
    out.add(len(text))
    return text


def _run(expr: _Expression, context: Mapping[str, Any], scope: dict[str, Any]) -> Any:
    try:
        ctx = expr.template.new_context(scope, shared=True)
        for _ in expr.template.root_render_func(ctx):
            pass
        return ctx.vars["result"]
    except Exception as exc:
        raise _explain(exc, expr.source, context) from None


def _to_result(value: Any, expr: _Expression, out: _Output, context: Mapping[str, Any]) -> Any:
    """A JSON value for what an expression returned (the whole string was that expression)."""
    if expr.is_path and (value is None or isinstance(value, dict | list | str | int | float)):
        return value  # passed through from the context unchanged
    try:
        converted, size = to_json(value, limit=out.remaining)
    except Exception as exc:
        raise _explain(exc, expr.source, context) from None
    out.add(size)
    return converted


# --- compiling ------------------------------------------------------------------------------------


def _compile_string(source: str) -> _CompiledString:
    if len(source) > _MAX_CACHED_CHARS:
        return _compile_string_uncached(source)
    return _compile_string_cached(source)


def _compile_string_uncached(source: str) -> _CompiledString:
    parts: list[str | _Expression] = []
    for is_expression, text in _split(source):
        parts.append(_compile_expression(text) if is_expression else text)
    expressions = [part for part in parts if isinstance(part, _Expression)]
    literals_blank = all(not part.strip() for part in parts if isinstance(part, str))
    single = expressions[0] if len(expressions) == 1 and literals_blank else None
    return _CompiledString(tuple(part for part in parts if part != ""), single)


_compile_string_cached = lru_cache(maxsize=_CACHE_SIZE)(_compile_string_uncached)


def _compile_expression(source: str) -> _Expression:
    if len(source) > _MAX_CACHED_CHARS:
        return _compile_expression_uncached(source)
    return _compile_expression_cached(source)


def _compile_expression_uncached(source: str) -> _Expression:
    shown = _snippet(source)
    if not source.strip():
        raise TemplateError("empty expression {{ }}")
    try:
        parser = Parser(ENVIRONMENT, source, state="variable")
        expr = parser.parse_expression()
        if not parser.stream.eos:
            token = describe_token(parser.stream.current)
            raise TemplateSyntaxError(f"unexpected {token} after the expression", 1)
        assign = nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)
        root = nodes.Template([assign], lineno=1)
        root.set_environment(ENVIRONMENT)
        template = ENVIRONMENT.from_string(root)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error in {{{{ {shown} }}}}: {exc.message}") from None
    except RecursionError:
        raise TemplateError(f"expression {{{{ {shown} }}}} is nested too deeply") from None
    names = frozenset(
        node.name for node in (expr, *expr.find_all(nodes.Name)) if isinstance(node, nodes.Name)
    )
    return _Expression(source.strip(), template, names, _is_path(expr))


_compile_expression_cached = lru_cache(maxsize=_CACHE_SIZE)(_compile_expression_uncached)


def _is_path(node: nodes.Node) -> bool:
    """True for a plain lookup such as ``input.a['b'][0]`` rooted at a context name."""
    while True:
        if isinstance(node, nodes.Name):
            return node.name in CONTEXT_NAMES
        if isinstance(node, nodes.Getattr) or (
            isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
        ):
            node = node.node
        else:
            return False


def _condition_expression(expression: str) -> _Expression:
    source = expression.strip()
    if source.startswith("{{") and source.endswith("}}"):
        single = _compile_string(source).single
        if single is None:
            raise TemplateError("a condition must be a single expression")
        return single
    if "{{" in source or "}}" in source:
        raise TemplateError("a condition is one expression, bare or wrapped in {{ }}")
    return _compile_expression(source)


def _split(source: str) -> list[tuple[bool, str]]:
    """Literal text and expression sources of a template string, in order."""
    parts: list[tuple[bool, str]] = []
    position, length = 0, len(source)
    trim_next = False
    while True:
        start = source.find("{{", position)
        literal = source[position : start if start >= 0 else length]
        if trim_next:
            literal = literal.lstrip()
        if start < 0:
            parts.append((False, literal))
            return parts
        begin = start + 2
        if source.startswith("-", begin):
            begin += 1
            literal = literal.rstrip()
        parts.append((False, literal))
        end = _find_expression_end(source, begin)
        if end < 0:
            raise TemplateError(f"unclosed '{{{{' in {_snippet(source[start:])!r} (missing '}}}}')")
        trim_next = source.startswith("-}}", end)
        parts.append((True, source[begin:end]))
        position = end + (3 if trim_next else 2)


def _find_expression_end(source: str, index: int) -> int:
    """Index of the ``}}`` (or ``-}}``) closing an expression, skipping strings and brackets."""
    depth, quote, length = 0, "", len(source)
    while index < length:
        char = source[index]
        if quote:
            if char == "\\":
                index += 1
            elif char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif depth == 0 and source.startswith(("}}", "-}}"), index):
            return index
        elif char in ")]}":
            depth = max(0, depth - 1)
        index += 1
    return -1


# --- checking -------------------------------------------------------------------------------------


def _string_problems(source: str) -> list[str]:
    try:
        compiled = _compile_string(source)
    except TemplateError as exc:
        return [exc.reason]
    problems: list[str] = []
    for part in compiled.parts:
        if isinstance(part, _Expression):
            problems.extend(_name_problems(part))
    return problems


def _name_problems(expr: _Expression) -> list[str]:
    problems = []
    for name in sorted(expr.names - KNOWN_NAMES):
        message = (
            f"unknown name {name!r} in {{{{ {_snippet(expr.source)} }}}}; "
            f"templates can use {', '.join(CONTEXT_NAMES)}"
        )
        if re.search(rf"-\s*{re.escape(name)}\b", expr.source):
            message += " (for a step id with '-', write steps['my-step'])"
        problems.append(message)
    return problems


# --- error messages -------------------------------------------------------------------------------


def _snippet(source: str) -> str:
    source = " ".join(source.split())
    return source if len(source) <= _SNIPPET_CHARS else source[: _SNIPPET_CHARS - 3] + "..."


def _explain(exc: Exception, source: str, context: Mapping[str, Any]) -> TemplateError:
    where = f"(in {{{{ {_snippet(source)} }}}})"
    if isinstance(exc, TemplateError):
        return TemplateError(f"{exc.reason} {where}", exc.location)
    if isinstance(exc, MissingValue):
        reason = _describe_missing(exc, context)
    elif isinstance(exc, SecurityError):
        reason = f"not allowed: {exc}"
    elif isinstance(exc, UndefinedError):
        reason = str(exc)
    elif isinstance(exc, RecursionError):
        reason = "the value is nested too deeply"
    elif isinstance(exc, MemoryError):
        reason = "the expression needs too much memory"
    else:
        reason = str(exc) or type(exc).__name__
    return TemplateError(f"{reason} {where}")


def _describe_missing(exc: MissingValue, context: Mapping[str, Any]) -> str:
    if exc.hint:
        return exc.hint
    if exc.obj is missing:
        return f"{exc.name!r} is undefined; templates can use {', '.join(CONTEXT_NAMES)}"
    path = _find_path(context, exc.obj)
    if path is None:
        noun = "key" if isinstance(exc.obj, Mapping) else "item"
        return f"a {kind_of(exc.obj)} value has no {noun} {exc.name!r}"
    full = join_path(path, exc.name)
    if path == "steps":
        return f"{full} is undefined: step {exc.name!r} has not run (or does not exist)"
    if isinstance(exc.obj, Mapping):
        return f"{full} is undefined: {path} has no key {exc.name!r}"
    if isinstance(exc.obj, str):
        return f"{full} is undefined: {path} has {len(exc.obj)} characters"
    if isinstance(exc.obj, list | tuple):
        return f"{full} is undefined: {path} has {len(exc.obj)} items"
    return f"{full} is undefined: {path} is a {kind_of(exc.obj)}"


def _find_path(context: Mapping[str, Any], target: Any) -> str | None:
    """Where ``target`` (a container) sits inside ``context``, by identity; None if not found."""
    queue: deque[tuple[Any, str]] = deque(
        (value, join_path("", key)) for key, value in context.items()
    )
    visited = 0
    while queue and visited < _PATH_SEARCH_NODES:
        value, path = queue.popleft()
        visited += 1
        if value is target:
            return path
        if isinstance(value, Mapping):
            queue.extend(
                (item, join_path(path, key))
                for key, item in value.items()
                if isinstance(item, Mapping | list | tuple | str)
            )
        elif isinstance(value, list | tuple):
            queue.extend(
                (item, join_path(path, index))
                for index, item in enumerate(value)
                if isinstance(item, Mapping | list | tuple | str)
            )
    return None


__all__ = [
    "CONTEXT_NAMES",
    "KNOWN_NAMES",
    "TemplateError",
    "check_expression",
    "check_template",
    "evaluate",
    "locate_problems",
    "render",
    "render_text",
    "truthy",
]
