"""Trusted proxies and forwarding headers, in one place.

A request that reached the gateway through a load balancer carries the client's address, scheme and host in
`X-Forwarded-For` / `-Proto` / `-Host` or `Forwarded` (RFC 7239). Any client can send those headers too, so they
are believed only from a peer in the gateway's `trusted_proxies`. Everything that depends on that decision goes
through `TrustedProxies`:

- the client's address (`Exchange.client_ip`, the rate limits' `by_client_ip`, the access log);
- whether an incoming request id is kept (`asgigate._request_id`);
- the forwarding headers the proxy sends upstream: the trusted ones it received, extended with this hop
  (`forwarding_headers`), the untrusted ones dropped;
- the client-facing scheme and host a rewritten `Location` names (`asgigate.targets._locations`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .types import Scope

__all__ = ["FORWARDING", "TrustedProxies", "add_forwarding"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The request headers a proxy adds about the hops before it.
FORWARDING = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded"})


class TrustedProxies:
    """The addresses and networks whose forwarding headers are believed (``Gateway(trusted_proxies=...)``).

    Raises ValueError for an entry that is neither an address nor a network.
    """

    __slots__ = ("networks",)

    def __init__(self, proxies: Sequence[str] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(ipaddress.ip_network(p, strict=False) for p in proxies)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str | None) -> bool:
        """Whether `address` (an IP address as text) is one of the trusted proxies."""
        if not address or not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def trusts_peer(self, scope: Scope) -> bool:
        """Whether the request came straight from a trusted proxy (the peer of the connection)."""
        if not self.networks:  # the common case: no proxies trusted, nothing parsed
            return False
        client = scope.get("client")
        return self.trusts(client[0] if client else None)

    def client_address(self, scope: Scope) -> str | None:
        """The client's address: the peer, or, when the peer is trusted, the rightmost X-Forwarded-For hop that
        is not a trusted proxy (each proxy appends the address it saw, so hops to the left are the client's word).
        """
        client = scope.get("client")
        peer: str | None = client[0] if client else None
        if not self.networks or not self.trusts(peer):
            return peer
        hops: list[str] = []
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                hops.extend(h.strip() for h in value.decode("latin-1").split(","))
        for hop in reversed(hops):
            if not self.trusts(hop):
                return hop
        return hops[0] if hops else peer

    def forwarded_value(self, scope: Scope, name: bytes) -> str | None:
        """The value of a forwarding header (``b"x-forwarded-proto"``) as the nearest trusted proxy set it: the last
        element of the last such header, stripped. None when the peer is not trusted or sent none."""
        if not self.trusts_peer(scope):
            return None
        found: bytes | None = None
        for key, value in scope["headers"]:
            if key == name:
                found = value
        if found is None:
            return None
        return found.decode("latin-1").rsplit(",", 1)[-1].strip() or None

    def __repr__(self) -> str:
        return f"TrustedProxies({[str(n) for n in self.networks]!r})"


def add_forwarding(
    out: list[tuple[bytes, bytes]],
    scope: Scope,
    prior: dict[bytes, bytes],
    host: bytes,
    x_forwarded: bool,
    forwarded: bool,
) -> None:
    """Append this hop's forwarding headers to `out`, the request headers going upstream.

    `prior` holds the forwarding headers received from a trusted peer (empty otherwise: an untrusted client's
    are dropped, never extended), `host` the Host the client sent. `x_forwarded` adds X-Forwarded-For, -Proto and
    -Host; `forwarded` adds an RFC 7239 Forwarded element.
    """
    client = scope.get("client")
    peer: str | None = client[0] if client else None
    scheme: str = scope.get("scheme", "http")
    # A host name has at most 253 characters and an address 45: a longer Host (or peer) is not worth keeping,
    # and would let each cached entry hold kilobytes a client chose.
    if not prior and len(host) <= _CACHED_HOST and (peer is None or len(peer) <= 64):
        # Without trusted incoming values the headers depend only on these few inputs: build them once.
        key = (peer, scheme, host, x_forwarded, forwarded)
        cached = _CACHE.get(key)
        if cached is None:
            cached = _headers(peer, scheme, host, {}, x_forwarded, forwarded)
            if len(_CACHE) >= 4096:
                _CACHE.clear()
            _CACHE[key] = cached
        out.extend(cached)
    else:
        out.extend(_headers(peer, scheme, host, prior, x_forwarded, forwarded))


_CACHE: dict[tuple[str | None, str, bytes, bool, bool], tuple[tuple[bytes, bytes], ...]] = {}
_CACHED_HOST = 260  # a DNS name (253), a colon and a port


def _headers(
    peer: str | None, scheme_text: str, host: bytes, prior: dict[bytes, bytes], x_forwarded: bool, forwarded: bool
) -> tuple[tuple[bytes, bytes], ...]:
    out: list[tuple[bytes, bytes]] = []
    scheme = scheme_text.encode("latin-1")
    if x_forwarded:
        if peer:
            xff = prior.get(b"x-forwarded-for")
            out.append((b"x-forwarded-for", xff + b", " + peer.encode() if xff else peer.encode()))
        out.append((b"x-forwarded-proto", prior.get(b"x-forwarded-proto", scheme)))
        if host:
            out.append((b"x-forwarded-host", prior.get(b"x-forwarded-host", host)))
    if forwarded:
        node = b"unknown"
        if peer:
            node = b'"[' + peer.encode() + b']"' if ":" in peer else peer.encode()
        element = b"for=" + node + b";proto=" + scheme
        if host:
            element += b';host="' + host.replace(b"\\", b"").replace(b'"', b"") + b'"'
        previous = prior.get(b"forwarded")
        out.append((b"forwarded", previous + b", " + element if previous else element))
    return tuple(out)
