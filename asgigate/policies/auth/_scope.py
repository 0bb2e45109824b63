"""Changing the request an exchange carries (headers, query string) before it is forwarded."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from ...exchange import Exchange


def replace_headers(exchange: Exchange, remove: Iterable[bytes], add: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Drop every header named in `remove` (lower case), then append `add`; cached header views are reset."""
    names = set(remove)
    scope = exchange.scope
    scope["headers"] = [(n, v) for n, v in scope.get("headers", []) if n.lower() not in names] + list(add)
    exchange._headers = None
    if exchange._request is not None:
        exchange._request.__dict__.pop("_headers", None)


def remove_query_param(exchange: Exchange, name: str) -> None:
    """Drop every `name=...` pair from the query string, leaving the other pairs byte for byte."""
    scope = exchange.scope
    query: bytes = scope.get("query_string", b"")
    if not query:
        return
    kept = [pair for pair in query.split(b"&")
            if unquote_plus(pair.partition(b"=")[0].decode("latin-1")) != name]
    scope["query_string"] = b"&".join(kept)
    exchange._query = None
    if exchange._request is not None:
        exchange._request.__dict__.pop("_query_params", None)
