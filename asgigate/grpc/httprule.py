"""google.api.HttpRule: path templates, bindings and how specific a template is.

    Template = "/" Segments [ Verb ] ;
    Segments = Segment { "/" Segment } ;
    Segment  = "*" | "**" | LITERAL | Variable ;
    Variable = "{" FieldPath [ "=" Segments ] "}" ;
    FieldPath = IDENT { "." IDENT } ;
    Verb     = ":" LITERAL ;

Templates match the gateway's normalized request path (see asgigate._paths), where an encoded slash inside a
segment is carried as SEP and the escape's letter: a single-segment variable gives it back fully decoded ("/"),
a multi-segment one keeps it exactly as sent ("%2F" or "%2f"), as the HttpRule documentation asks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .._paths import SEP, PathTemplate, decode_param
from ..errors import ConfigurationError

__all__: list[str] = []  # internal: the transcoding rules of `GrpcService`

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL = re.compile(r"[^/{}*=:]+")
_HTTP_METHODS = ("get", "put", "post", "delete", "patch")

# Specificity of one segment: a literal beats a variable, which beats "**".
LITERAL, SINGLE, MULTI = 0, 1, 2


@dataclass(frozen=True)
class Variable:
    field_path: tuple[str, ...]
    multi: bool  # spans more than one segment (or "**"): keeps %2F encoded
    group: str  # regex group name


@dataclass(frozen=True)
class Template:
    """A compiled HttpRule path template."""

    source: str
    segments: tuple[tuple[int, str], ...]  # (kind, literal text or "*" / "**")
    variables: tuple[Variable, ...]
    verb: str | None
    regex: re.Pattern[str] = field(compare=False)

    def match(self, path: str) -> dict[str, str] | None:
        m = self.regex.match(path)
        if m is None:
            return None
        return {var.group: m.group(var.group) for var in self.variables}

    def values(self, raw: dict[str, str]) -> dict[tuple[str, ...], str]:
        """Field path -> decoded value, from what `match` returned."""
        out = {}
        for var in self.variables:
            value = raw[var.group]
            # SEP + "F" / SEP + "f" (see asgigate._paths) is "%2F" / "%2f" again with SEP as "%2"
            out[var.field_path] = value.replace(SEP, "%2") if var.multi else decode_param(value)
        return out

    def specificity(self) -> tuple[Any, ...]:
        return (tuple(kind for kind, _ in self.segments), 0 if self.verb is not None else 1)

    def openapi_path(self) -> str:
        """`/v1/{name}` style, as OpenAPI writes paths (the variable's own pattern is documented separately)."""
        out = []
        i = 0
        text = self.source
        while i < len(text):
            if text[i] == "{":
                end = text.index("}", i)
                out.append("{" + text[i + 1 : end].split("=", 1)[0] + "}")
                i = end + 1
            else:
                out.append(text[i])
                i += 1
        return "".join(out)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.segments: list[tuple[int, str]] = []
        self.variables: list[Variable] = []
        self.parts: list[str] = []  # regex pieces, one per segment

    def error(self, message: str) -> ConfigurationError:
        return ConfigurationError(f"HttpRule path template {self.text!r}: {message} (at offset {self.pos}).")

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def parse(self) -> Template:
        if not self.text.startswith("/"):
            raise self.error("must start with '/'")
        self.pos = 1
        self.parse_segments(None)
        verb = None
        if self.peek() == ":":
            self.pos += 1
            m = _LITERAL.match(self.text, self.pos)
            if m is None:
                raise self.error("empty verb")
            verb = m.group()
            self.pos = m.end()
        if self.pos != len(self.text):
            raise self.error(f"unexpected {self.peek()!r}")
        kinds = [kind for kind, _ in self.segments]
        if MULTI in kinds[:-1]:
            raise self.error("'**' must be the last segment")
        names = [v.field_path for v in self.variables]
        if len(set(names)) != len(names):
            raise self.error("a field is bound twice")
        pattern = "^/" + "/".join(self.parts) + (re.escape(":" + verb) if verb is not None else "") + "$"
        return Template(self.text, tuple(self.segments), tuple(self.variables), verb, re.compile(pattern, re.DOTALL))

    def parse_segments(self, variable: list[int] | None) -> None:
        while True:
            self.parse_segment(variable)
            if self.peek() != "/":
                return
            self.pos += 1

    def parse_segment(self, variable: list[int] | None) -> None:
        if self.text.startswith("**", self.pos):
            self.pos += 2
            self.segments.append((MULTI, "**"))
            self.parts.append(".*" if variable is not None else "(?:.*)")
            if variable is not None:
                variable.append(2)
        elif self.peek() == "*":
            self.pos += 1
            self.segments.append((SINGLE, "*"))
            self.parts.append("[^/]+")
            if variable is not None:
                variable.append(1)
        elif self.peek() == "{":
            if variable is not None:
                raise self.error("variables cannot nest")
            self.parse_variable()
        else:
            m = _LITERAL.match(self.text, self.pos)
            if m is None:
                raise self.error("empty or malformed segment")
            self.pos = m.end()
            self.segments.append((LITERAL, m.group()))
            self.parts.append(re.escape(m.group()))
            if variable is not None:
                variable.append(0)

    def parse_variable(self) -> None:
        self.pos += 1
        path = []
        while True:
            m = _IDENT.match(self.text, self.pos)
            if m is None:
                raise self.error("a variable needs a field path")
            path.append(m.group())
            self.pos = m.end()
            if self.peek() != ".":
                break
            self.pos += 1
        group = f"v{len(self.variables)}"
        start = len(self.parts)
        shape: list[int] = []
        if self.peek() == "=":
            self.pos += 1
            self.parse_segments(shape)
        else:
            self.segments.append((SINGLE, "*"))
            self.parts.append("[^/]+")
            shape.append(1)
        if self.peek() != "}":
            raise self.error("unclosed variable")
        self.pos += 1
        inner = "/".join(self.parts[start:])
        del self.parts[start:]
        self.parts.append(f"(?P<{group}>{inner})")
        multi = len(shape) > 1 or 2 in shape
        self.variables.append(Variable(tuple(path), multi, group))


def parse_template(text: str) -> Template:
    return _Parser(text).parse()


@dataclass(frozen=True)
class Binding:
    """One HTTP binding of a gRPC method: the rule itself or one of its additional_bindings."""

    method: str  # HTTP method, upper case
    template: Template
    body: str  # "", "*" or a field name
    response_body: str  # "" or a field name
    index: int = 0  # 0 for the rule, n for the n-th additional binding


def bindings_from_rule(rule: Any) -> list[Binding]:
    """The bindings of a google.api.http HttpRule message (additional_bindings one level deep, as specified)."""
    out = [_binding(rule, 0)]
    for n, extra in enumerate(rule.additional_bindings, 1):
        if len(extra.additional_bindings):
            raise ConfigurationError("HttpRule additional_bindings must not nest.")
        out.append(_binding(extra, n))
    return out


def _binding(rule: Any, index: int) -> Binding:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ConfigurationError(f"HttpRule {rule.selector or ''} has no pattern (get, post, ..., custom).")
    if kind == "custom":
        method, path = rule.custom.kind.upper(), rule.custom.path
        if not method:
            raise ConfigurationError("HttpRule custom pattern needs a kind.")
    else:
        method, path = kind.upper(), getattr(rule, kind)
    return Binding(method, parse_template(path), rule.body, rule.response_body, index)


class RuleTemplate(PathTemplate):
    """An HttpRule template in the gateway's route table, where a Route's template goes (behind a prefix)."""

    __slots__ = ("prefix", "rule")

    def __init__(self, prefix: str, rule: Template) -> None:
        super().__init__(prefix + _literal_head(rule) if prefix or _literal_head(rule) != "/" else "/")
        self.prefix = prefix
        self.rule = rule
        self.template = prefix + rule.source
        self.static = False
        self.catch_all = None

    def match(self, path: str) -> dict[str, str] | None:
        if self.prefix:
            if not path.startswith(self.prefix):
                return None
            path = path[len(self.prefix) :]
            if not path.startswith("/"):
                return None
        return self.rule.match(path)

    def convert(self, raw: Any) -> dict[str, Any]:
        return {".".join(k): v for k, v in self.rule.values(dict(raw)).items()}

    def __repr__(self) -> str:
        return f"RuleTemplate({self.template!r})"


def _literal_head(rule: Template) -> str:
    """The literal segments before the first wildcard: a valid plain route path standing for the template."""
    literals = []
    for kind, text in rule.segments:
        if kind != LITERAL:
            break
        literals.append(text)
    return "/" + "/".join(literals)


def coarse_path(rule: Template) -> str:
    """A plain route path that Route() accepts and whose first segment is the template's (for the route index)."""
    head = _literal_head(rule)
    if len(head) > 1 and all(kind == LITERAL for kind, _ in rule.segments):
        return head + (":" + rule.verb if rule.verb else "")
    return head.rstrip("/") + "/{_rest:path}"


def http_methods() -> tuple[str, ...]:
    return _HTTP_METHODS
