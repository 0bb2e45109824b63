"""Request ids: one per request, made here or kept from a trusted caller, sent upstream and back to the client.

The gateway gives every request an id (24 hex digits, 96 bits from the operating system's CSPRNG), unless the
request already carries a well-formed one it may keep: `trust_request_id=True` keeps any, `None` (the default)
only one sent by a trusted proxy (`asgigate._forwarding`), `False` none. The id goes upstream in the same header
(`Proxy`, the GraphQL backends) and back to the client on every reply, exactly once (`stamp`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._forwarding import TrustedProxies
    from .types import Message, Scope

__all__ = ["RequestIds", "new_request_id"]

_ID_BATCH = 256
_fresh_ids: list[bytes] = []  # request ids made ahead: one getrandom() call per 256 requests, not one each
os.register_at_fork(after_in_child=_fresh_ids.clear)  # a forked worker must not hand out its parent's ids

# What an incoming id may be made of: no spaces, quotes or control characters to smuggle into logs or headers.
_VALID_ID = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:/+=@")


def new_request_id() -> bytes:
    """24 hex digits (96 bits) from the operating system's CSPRNG."""
    if not _fresh_ids:
        block = os.urandom(12 * _ID_BATCH).hex().encode()
        _fresh_ids.extend([block[i : i + 24] for i in range(0, len(block), 24)])
    return _fresh_ids.pop()


class RequestIds:
    """A gateway's request id settings, bound at build: the header (lower case) and whose ids are kept."""

    __slots__ = ("header", "trust", "trusted_proxies")

    def __init__(self, header: bytes, trust: bool | None, trusted_proxies: TrustedProxies) -> None:
        self.header = header
        self.trust = trust
        self.trusted_proxies = trusted_proxies

    def for_request(self, scope: Scope) -> bytes:
        """The request's id: the incoming one if it may be kept and is well-formed, else a new one."""
        trust = self.trust
        if trust is None:
            trust = self.trusted_proxies.trusts_peer(scope)
        if trust:
            header = self.header
            for name, value in scope["headers"]:
                if name == header:
                    if 0 < len(value) <= 128 and _VALID_ID.issuperset(value):
                        return bytes(value)
                    break
        return new_request_id()

    def stamp(self, start: Message, request_id: bytes) -> None:
        """Put the id on a response start. Exactly one id goes back: the gateway's (an upstream may echo the one
        it was sent, or another)."""
        header = self.header
        headers = list(start.get("headers", ()))
        for name, _ in headers:
            if name == header:
                headers = [item for item in headers if item[0] != header]
                break
        headers.append((header, request_id))
        start["headers"] = headers
