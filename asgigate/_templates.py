"""Placeholder templates for replies the gateway makes itself: `{name}` in text, HTML, XML, headers and JSON.

Only `{identifier}` is a placeholder, so CSS and scripts in an HTML page need no escaping (`a{color:red}` and
`{ margin: 0 }` are text); `{{name}}` writes a literal `{name}`. Templates are parsed once, and every placeholder
name is checked against the names the caller allows, so a typo fails when the gateway is built, not on the
first error. In JSON templates a string that is exactly one placeholder keeps the value's type (`"{status}"`
gives the number 404, a missing detail gives null); anything else is text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

__all__ = ["JSONTemplate", "TemplateError", "TextTemplate", "escape_markup", "header_safe"]

_TOKEN = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


class TemplateError(ValueError):
    """A template uses an unknown placeholder or holds a value JSON cannot carry."""


def escape_markup(value: str) -> str:
    """Escapes for HTML and XML text and attribute values."""
    return (
        value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
        .replace("'", "&#x27;")
    )


def header_safe(value: str) -> str:
    """A header value cannot carry line breaks or other control characters, and must be latin-1."""
    cleaned = "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in value)
    return cleaned.encode("latin-1", "replace").decode("latin-1")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class TextTemplate:
    """``TextTemplate("{status} {title}", names)``; ``render(values, escape)`` fills it in."""

    __slots__ = ("names", "parts", "source")

    def __init__(self, source: str, allowed: Collection[str]) -> None:
        if not isinstance(source, str):
            raise TemplateError(f"a template must be a string, got {source!r}")
        parts: list[tuple[bool, str]] = []  # (is_placeholder, literal text or name)
        position = 0
        for match in _TOKEN.finditer(source):
            if match.start() > position:
                parts.append((False, source[position : match.start()]))
            literal, name = match.groups()
            if literal is not None:
                parts.append((False, "{" + literal + "}"))
            else:
                if name not in allowed:
                    raise TemplateError(
                        f"unknown placeholder {{{name}}} in {_short(source)}; known: "
                        + ", ".join("{" + n + "}" for n in sorted(allowed))
                        + " (write {{" + name + "}} for a literal {" + name + "})"
                    )
                parts.append((True, name))
            position = match.end()
        if position < len(source):
            parts.append((False, source[position:]))
        self.source = source
        self.parts = tuple(parts)
        self.names = frozenset(text for is_name, text in parts if is_name)

    @property
    def single(self) -> str | None:
        """The placeholder's name when the whole template is exactly one placeholder."""
        if len(self.parts) == 1 and self.parts[0][0]:
            return self.parts[0][1]
        return None

    def render(self, values: Mapping[str, Any], escape: Callable[[str], str] | None = None) -> str:
        out = []
        for is_name, text in self.parts:
            if is_name:
                value = _text(values.get(text))
                out.append(escape(value) if escape is not None else value)
            else:
                out.append(text)
        return "".join(out)

    def __repr__(self) -> str:
        return f"TextTemplate({self.source!r})"


class JSONTemplate:
    """A JSON value (dicts, lists, strings, numbers, booleans, null) whose strings may hold placeholders."""

    __slots__ = ("_build", "names", "source")

    def __init__(self, source: Any, allowed: Collection[str]) -> None:
        names: set[str] = set()
        self._build = _compile(source, allowed, names, "$")
        self.source = source
        self.names = frozenset(names)

    def render(self, values: Mapping[str, Any]) -> Any:
        return self._build(values)

    def __repr__(self) -> str:
        return f"JSONTemplate({self.source!r})"


def _compile(node: Any, allowed: Collection[str], names: set[str], where: str) -> Callable[[Mapping[str, Any]], Any]:
    if isinstance(node, str):
        template = TextTemplate(node, allowed)
        names |= template.names
        single = template.single
        if single is not None:
            return lambda values: values.get(single)
        if not template.names:
            constant = template.render({})  # "{{name}}" written as a literal "{name}"
            return lambda values: constant
        return template.render
    if isinstance(node, Mapping):
        items = []
        for key, value in node.items():
            if not isinstance(key, str):
                raise TemplateError(f"JSON object keys must be strings, got {key!r} at {where}")
            key_template = TextTemplate(key, allowed)
            names |= key_template.names
            items.append((key_template, _compile(value, allowed, names, f"{where}.{key}")))
        return lambda values: {k.render(values): build(values) for k, build in items}
    if isinstance(node, (list, tuple)):
        builders = [_compile(value, allowed, names, f"{where}[{i}]") for i, value in enumerate(node)]
        return lambda values: [build(values) for build in builders]
    if node is None or isinstance(node, (bool, int, float)):
        return lambda values: node
    raise TemplateError(f"{node!r} at {where} is not a JSON value")


def _short(source: str) -> str:
    return repr(source if len(source) <= 60 else source[:57] + "...")
