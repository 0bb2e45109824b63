"""Request-path normalization and path templates.

Routing and forwarding both work on one normalized form of the path, so that what a policy guarded is exactly
what reaches the upstream:

- the path is taken from the raw (still percent-encoded) request target, never from the server's decoded `path`,
  because a decoded `%2F` can no longer be told apart from a real separator;
- duplicate slashes are merged (`//admin` is `/admin`), as nginx does by default;
- dot segments are resolved, encoded ones too (`/a/%2e%2e/b` is `/b`); climbing above the root is a 400;
- `%2F` stays data inside its segment. Inside the matching form it is carried as NUL (which a request can never
  contain: `%00` is a 400) followed by the escape's own letter (`F` or `f`), so `{name}` never spans it,
  `{rest:path}` gives it back as `/`, and a gRPC `{name=**}` variable can give it back exactly as sent;
- a segment that decodes to something an upstream could read as a traversal (`..%2F`, `..\\`, or `..;x`, which
  servlet containers read as `..`) is a 400;
- the forwarded path is re-encoded from the decoded segments, one canonical encoding.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from .errors import ConfigurationError, InvalidPath

SEP = "\x00"  # an encoded slash inside a segment, in the matching form: SEP + "F" or SEP + "f", as it was sent
_SLASHES = re.compile("\x00[Ff]")
_SLASH_ESCAPES = re.compile(rb"%2([Ff])")
_PCHAR_SAFE = "!$&'()*+,;=:@~"
_BAD_PERCENT = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_TRAVERSAL_PARTS = re.compile(r"[/\\]")
# What may stay unencoded in a forwarded path (RFC 3986 pchar and "/"); anything else takes the slow path.
_CANONICAL_PATH = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/]*")


def normalize(raw_path: bytes) -> str:
    """Return the matching form of a raw request path, or raise InvalidPath."""
    # The common case, checked on str (far cheaper than on bytes): nothing to decode, merge or resolve.
    if raw_path.isascii():
        path = raw_path.decode()
        if (
            path[:1] == "/"
            and "%" not in path
            and "//" not in path
            and "/." not in path
            and "\\" not in path
            and "\x00" not in path
            and "?" not in path
        ):
            return path
    return _normalize_slow(raw_path)


def request_path(scope: MutableMapping[str, Any]) -> str:
    """The matching form of a request's path, below the scope's `root_path` (the gateway may be mounted)."""
    raw: bytes | None = scope.get("raw_path")
    root: str = scope.get("root_path", "")
    if raw is not None and not root:
        return normalize(raw)  # the common case: served at the root, the server passed the raw target
    if raw is None:
        raw = encode(scope["path"]).encode("latin-1")
    if root:
        root_bytes = root.encode("latin-1")
        if raw.startswith(root_bytes):
            raw = raw[len(root_bytes) :] or b"/"
        else:
            path: str = scope["path"]
            raw = encode(path[len(root) :] if path.startswith(root) else path).encode("latin-1") or b"/"
    return normalize(raw)


def _normalize_slow(raw_path: bytes) -> str:
    raw_path = raw_path.split(b"?", 1)[0]  # some servers leave the query in raw_path
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
            if "/" in text:
                # Every "/" in a decoded segment was a %2F or a %2f (the malformed-percent check above means each
                # "%" starts an escape), in the same order: mark each with the case it was sent in.
                parts = text.split("/")
                letters = _SLASH_ESCAPES.findall(raw_segment)
                text = parts[0] + "".join(
                    SEP + chr(letter[0]) + part for letter, part in zip(letters, parts[1:], strict=True)
                )
        out.append(text)
    if not out:
        return "/"
    return "/" + "/".join(out) + ("/" if trailing else "")


def encode(path: str) -> str:
    """The canonical percent-encoding of a matching-form path (or path fragment)."""
    if _CANONICAL_PATH.fullmatch(path):
        return path
    # one canonical encoding: an encoded slash goes upstream as %2F whichever case it came in
    return "/".join(quote(_SLASHES.sub("/", part), safe=_PCHAR_SAFE) for part in path.split("/"))


def decode_param(value: str) -> str:
    return _SLASHES.sub("/", value) if SEP in value else value


# --- path templates -------------------------------------------------------------------------------------------

Convertor = tuple[str, Callable[[str], Any]]

# The longest number an `int` or `float` parameter matches (digits before and after the point). Every text the
# patterns admit converts, and cheaply: Python refuses to convert integers of more than 4300 digits (640 at the
# least, however it is set), and a float of more than 308 digits before the point would be infinite.
MAX_DIGITS = 64
# The longest segment that a template segment holding several parameters (`{name}.{ext}`) matches: which split
# of a segment fits such a template is found by backtracking, whose cost grows with the square of its length.
MAX_SHARED_SEGMENT = 256

CONVERTORS: dict[str, Convertor] = {
    "str": (r"[^/]+", decode_param),
    "int": (rf"[0-9]{{1,{MAX_DIGITS}}}", int),
    "float": (rf"[0-9]{{1,{MAX_DIGITS}}}(?:\.[0-9]{{1,{MAX_DIGITS}}})?", float),
    "uuid": (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", uuid.UUID),
    "path": (r".*", decode_param),
}

_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::([a-zA-Z_][a-zA-Z0-9_]*))?}")


class PathTemplate:
    """`/users/{id:int}/files/{rest:path}`: literal text and typed parameters, compiled once.

    Matching takes time linear in the path's length (see `_segment`); typed parameters admit only text that
    converts (see `MAX_DIGITS`).
    """

    __slots__ = ("catch_all", "converters", "names", "regex", "static", "template")

    def __init__(self, template: str) -> None:
        if not template.startswith("/"):
            raise ConfigurationError(f"Route path {template!r} must start with '/'.")
        self.template = template
        self.names: list[str] = []
        self.converters: dict[str, Callable[[str], Any]] = {}
        segments = [self._segment(segment) for segment in template.split("/")[1:]]
        if sum(1 for m in _PARAM.finditer(template) if m.group(2) == "path") > 1:
            # which of them takes which slashes would be a guess, and a slow one to make
            raise ConfigurationError(f"Route path {template!r} has more than one path parameter.")
        self.regex = re.compile("^/" + "/".join(segments) + r"\Z", re.DOTALL)
        self.static = not self.names
        # "/prefix/{rest:path}", the usual proxy route, needs no regex: a prefix test and a slice.
        self.catch_all: tuple[str, str] | None = None
        only = _PARAM.fullmatch(template[template.find("{"):]) if len(self.names) == 1 else None
        if only is not None and only.group(2) == "path":
            self.catch_all = (template[: template.find("{")], only.group(1))

    def _segment(self, segment: str) -> str:
        """The pattern of one template segment (the text between two slashes)."""
        pattern = ""
        cursor = 0
        kinds = []
        for match in _PARAM.finditer(segment):
            name, kind = match.group(1), match.group(2) or "str"
            if kind not in CONVERTORS:
                raise ConfigurationError(
                    f"Unknown parameter type {kind!r} in route path {self.template!r}; "
                    f"known types: {', '.join(sorted(CONVERTORS))}."
                )
            if name in self.converters:
                raise ConfigurationError(f"Parameter {name!r} appears twice in route path {self.template!r}.")
            literal = segment[cursor : match.start()]
            if "{" in literal or "}" in literal:
                raise ConfigurationError(f"Malformed parameter in route path {self.template!r}.")
            pattern += re.escape(literal) + f"(?P<{name}>{CONVERTORS[kind][0]})"
            self.names.append(name)
            self.converters[name] = CONVERTORS[kind][1]
            kinds.append(kind)
            cursor = match.end()
        tail = segment[cursor:]
        if "{" in tail or "}" in tail:
            raise ConfigurationError(f"Malformed parameter in route path {self.template!r}.")
        pattern += re.escape(tail)
        if kinds.count("str") > 2:
            raise ConfigurationError(
                f"Route path {self.template!r} has more than two str parameters in one segment "
                f"({segment!r}): which split of a path fits them would take too long to find."
            )
        if "path" in kinds:
            return pattern  # spans segments: backtracking over where it ends is what it is for
        if len(kinds) < 2:
            return pattern  # one parameter: its length follows from the segment's, nothing to backtrack over
        # Several splits of one segment can fit several parameters. An atomic group that must end where the
        # segment ends keeps a later segment that failed from retrying every split; the length bound keeps the
        # search for the one split that fits short.
        return f"(?>(?=[^/]{{0,{MAX_SHARED_SEGMENT}}}(?:/|\\Z)){pattern}(?=/|\\Z))"

    def match(self, path: str) -> dict[str, str] | None:
        """The parameters in matching form (see `convert`), or None. The patterns admit only convertible text."""
        if self.static:
            return {} if path == self.template else None
        if self.catch_all is not None:
            prefix, name = self.catch_all
            return {name: path[len(prefix) :]} if path.startswith(prefix) else None
        m = self.regex.match(path)
        return None if m is None else m.groupdict()

    def convert(self, raw: Mapping[str, str]) -> dict[str, Any]:
        """Typed parameter values from matching-form ones (`%2F` given back as `/`)."""
        return {name: self.converters[name](value) for name, value in raw.items()}

    def expand(self, raw_params: Mapping[str, str]) -> str:
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
