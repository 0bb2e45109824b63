"""ForwardIdentity: tell upstreams who the caller is, in headers only the gateway can set.

Incoming copies of the configured headers are always removed, whether or not the request is authenticated,
so a client cannot forge them; then the verified identity's values are added.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from ..._frozen import Frozen
from ...errors import ConfigurationError
from ...pipeline import Policy
from .base import Authenticator, Identity

if TYPE_CHECKING:
    from starlette.responses import Response

    from ...exchange import Exchange

__all__ = ["ForwardIdentity"]

TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
FIELDS = ("subject", "client_id", "scopes", "method", "consumer")
Value = str | Callable[[Identity], Any]


def _text(value: Any) -> str | None:
    """The header text for a value, or None when it has none: what JSON (as orjson writes it) cannot hold, such
    as an integer beyond 64 bits (a signed token may carry any number), infinity or too deep a nesting."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return None  # orjson would write null: not the value
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        if all(isinstance(item, str) for item in items):
            return " ".join(items)
    try:
        return orjson.dumps(value, default=str).decode()
    except orjson.JSONEncodeError:
        return None


def _extractor(spec: Value) -> Callable[[Identity], Any]:
    if callable(spec):
        return spec
    kind, _, name = spec.partition(":")
    if kind == "claim" and name:
        return lambda identity: identity.claim(name)
    if kind == "metadata" and name:
        return lambda identity: getattr(identity.consumer, "metadata", {}).get(name)
    if spec == "consumer":
        return lambda identity: getattr(identity.consumer, "name", None)
    if spec in FIELDS:
        return lambda identity: getattr(identity, spec)
    raise ConfigurationError(
        f"ForwardIdentity value {spec!r}: use one of {', '.join(FIELDS)}, 'claim:<name>', 'metadata:<key>' "
        "or a function of the identity."
    )


class ForwardIdentity(Frozen, Policy):
    """``ForwardIdentity({"x-user-id": "subject", "x-scopes": "scopes", "x-tenant": "claim:tenant"})``.

    Each header is set from the identity: ``"subject"``, ``"client_id"``, ``"scopes"`` (space-separated),
    ``"method"``, ``"consumer"`` (the API key consumer's name), ``"claim:<name>"`` (dotted for nested claims),
    ``"metadata:<key>"`` (the consumer's metadata), or a function of the `Identity`. Lists of strings are sent
    space-separated, other non-strings as JSON; a value that cannot be a header value is left out.
    `strip` names more headers to remove from every request (say, an old ``x-user-roles``).
    """

    after = (Authenticator,)

    def __init__(self, headers: Mapping[str, Value], *, strip: tuple[str, ...] = ()) -> None:
        for name in [*headers, *strip]:
            if not TOKEN.match(name):
                raise ConfigurationError(f"ForwardIdentity header name {name!r} is not a valid header name.")
        self.headers = {name.lower(): spec for name, spec in headers.items()}
        self.strip = tuple(name.lower() for name in strip)
        self._extract = [(name.encode(), _extractor(spec)) for name, spec in self.headers.items()]
        self._remove = frozenset([*(name.encode() for name in self.headers), *(n.encode() for n in self.strip)])

    async def on_request(self, exchange: Exchange) -> Response | None:
        identity = exchange.identity
        added: list[tuple[bytes, bytes]] = []
        if isinstance(identity, Identity):
            for name, extract in self._extract:
                text = _text(extract(identity))
                if text is None or any(c in text for c in "\r\n\0"):
                    continue
                try:
                    added.append((name, text.encode("latin-1")))
                except UnicodeEncodeError:
                    continue
        exchange.replace_headers(self._remove, added)
        return None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ForwardIdentity) and (self.headers, self.strip) == (other.headers, other.strip)

    def __hash__(self) -> int:
        return hash((tuple(self.headers), self.strip))

    def __repr__(self) -> str:
        shown = {k: getattr(v, "__name__", v) if callable(v) else v for k, v in self.headers.items()}
        return f"ForwardIdentity({shown!r}{f', strip={list(self.strip)!r}' if self.strip else ''})"
