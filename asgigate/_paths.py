"""Request-path normalization and path templates.

Routing and forwarding both work on one normalized form of the path, so that what a policy guarded is exactly
what reaches the upstream:

- the path is taken from the raw (still percent-encoded) request target, never from the server's decoded `path`,
  because a decoded `%2F` can no longer be told apart from a real separator;
- duplicate slashes are merged (`//admin` is `/admin`), as nginx does by default;
- dot segments are resolved, encoded ones too (`/a/%2e%2e/b` is `/b`); climbing above the root is a 400;
- `%2F` stays data inside its segment. Inside the matching form it is carried as NUL (which a request can never
  contain: `%00` is a 400), so `{name}` never spans it and `{rest:path}` gives it back as `/`;
- a segment that decodes to something an upstream could read as a traversal (`..%2F`, `..\\`, or `..;x`, which
  servlet containers read as `..`) is a 400;
- the forwarded path is re-encoded from the decoded segments, one canonical encoding.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from .errors import ConfigurationError, InvalidPath

SEP = "\x00"  # an encoded slash inside a segment, in the matching form
_PCHAR_SAFE = "!$&'()*+,;=:@~"
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_TRAVERSAL_PARTS = re.compile(r"[/\\]")
# What may stay unencoded in a forwarded path (RFC 3986 pchar and "/"); anything else takes the slow path.
_CANONICAL_PATH = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")


def normalize(raw_path: bytes) -> str:
    """Return the matching form of a raw request path, or raise InvalidPath."""
    if (
        raw_path[:1] == b"/"
        and b"%" not in raw_path
        and b"//" not in raw_path
        and b"/." not in raw_path
        and b"\\" not in raw_path
        and b"\x00" not in raw_path
    ):
        try:
            return raw_path.decode("ascii")
        except UnicodeDecodeError:
            pass
    return _normalize_slow(raw_path)


def _normalize_slow(raw_path: bytes) -> str:
    if raw_path[:1] != b"/":
        raise InvalidPath("The request path must start with '/'.")
    if _BAD_PERCENT.search(raw_path):
        raise InvalidPath("The request path has a malformed percent-encoding.")
    out: list[str] = []
    trailing = False
    for raw_segment in raw_path.split(b"/")[1:]:
        trailing = False
        if not raw_segment:
            trailing = True
            continue
        try:
            text = unquote_to_bytes(raw_segment).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidPath("The request path is not valid UTF-8.") from None
        if "\x00" in text:
            raise InvalidPath("The request path contains a NUL byte.")
        if text == ".":
            trailing = True
            continue
        if text == "..":
            if not out:
                raise InvalidPath("The request path climbs above the root.")
            out.pop()
            trailing = True
            continue
        if "/" in text or "\\" in text or ";" in text:
            if any(part.split(";", 1)[0] in (".", "..") for part in _TRAVERSAL_PARTS.split(text)):
                raise InvalidPath("The request path contains an encoded traversal.")
            text = text.replace("/", SEP)
        out.append(text)
    if not out:
        return "/"
    return "/" + "/".join(out) + ("/" if trailing else "")


def encode(path: str) -> str:
    """The canonical percent-encoding of a matching-form path (or path fragment)."""
    if _CANONICAL_PATH.fullmatch(path):
        return path
    return "/".join(quote(part.replace(SEP, "/"), safe=_PCHAR_SAFE) for part in path.split("/"))


def decode_param(value: str) -> str:
    return value.replace(SEP, "/")


# --- path templates -------------------------------------------------------------------------------------------

Convertor = tuple[str, Callable[[str], Any]]

CONVERTORS: dict[str, Convertor] = {
    "str": (r"[^/]+", decode_param),
    "int": (r"[0-9]+", int),
    "float": (r"[0-9]+(?:\.[0-9]+)?", float),
    "uuid": (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", uuid.UUID),
    "path": (r".*", decode_param),
}

_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")


class PathTemplate:
    """`/users/{id:int}/files/{rest:path}`: literal text and typed parameters, compiled once."""

    __slots__ = ("convert", "names", "regex", "static", "template")

    def __init__(self, template: str) -> None:
        if not template.startswith("/"):
            raise ConfigurationError(f"Route path {template!r} must start with '/'.")
        self.template = template
        pattern = "^"
        cursor = 0
        self.names: list[str] = []
        self.convert: dict[str, Callable[[str], Any]] = {}
        for match in _PARAM.finditer(template):
            name, kind = match.group(1), match.group(2) or "str"
            if kind not in CONVERTORS:
                raise ConfigurationError(
                    f"Unknown parameter type {kind!r} in route path {template!r}; "
                    f"known types: {', '.join(sorted(CONVERTORS))}."
                )
            if name in self.convert:
                raise ConfigurationError(f"Parameter {name!r} appears twice in route path {template!r}.")
            literal = template[cursor : match.start()]
            if "{" in literal or "}" in literal:
                raise ConfigurationError(f"Malformed parameter in route path {template!r}.")
            pattern += re.escape(literal) + f"(?P<{name}>{CONVERTORS[kind][0]})"
            self.names.append(name)
            self.convert[name] = CONVERTORS[kind][1]
            cursor = match.end()
        tail = template[cursor:]
        if "{" in tail or "}" in tail:
            raise ConfigurationError(f"Malformed parameter in route path {template!r}.")
        pattern += re.escape(tail) + "$"
        self.regex = re.compile(pattern, re.DOTALL)
        self.static = not self.names

    def match(self, path: str) -> tuple[dict[str, Any], dict[str, str]] | None:
        """Return (converted params, raw matching-form params), or None."""
        if self.static:
            return ({}, {}) if path == self.template else None
        m = self.regex.match(path)
        if m is None:
            return None
        raw = m.groupdict()
        try:
            return {name: self.convert[name](value) for name, value in raw.items()}, raw
        except ValueError:
            return None

    def expand(self, raw_params: dict[str, str]) -> str:
        """Fill the template from matching-form values (used for upstream path templates)."""
        out = []
        cursor = 0
        for match in _PARAM.finditer(self.template):
            out.append(self.template[cursor : match.start()])
            out.append(raw_params[match.group(1)])
            cursor = match.end()
        out.append(self.template[cursor:])
        return "".join(out)

    def __repr__(self) -> str:
        return f"PathTemplate({self.template!r})"
