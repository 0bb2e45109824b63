"""Dropping a credential from the query string before the request is forwarded."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote_plus

if TYPE_CHECKING:
    from ...exchange import Exchange


def remove_query_param(exchange: Exchange, name: str) -> None:
    """Drop every `name=...` pair from the query string, leaving the other pairs byte for byte."""
    query: bytes = exchange.scope.get("query_string", b"")
    if not query:
        return
    kept = [pair for pair in query.split(b"&") if unquote_plus(pair.partition(b"=")[0].decode("latin-1")) != name]
    exchange.replace_query(b"&".join(kept))
