"""What a rate limit counts by: a `Key` turns a request into a string, or None when the request has no value."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from ...errors import ConfigurationError

if TYPE_CHECKING:
    from ...exchange import Exchange

__all__ = ["Key", "KeyLike", "by_client_ip", "by_client_network", "by_header", "by_route", "by_subject"]

KeyFunction = Callable[["Exchange"], "str | None"]


class Key:
    """A named key function: ``Key(lambda exchange: exchange.headers.get("x-tenant"), "tenant")``.

    Keys compare equal when they have the same name, so two policies built from the same code agree.
    """

    __slots__ = ("function", "name")

    def __init__(self, function: KeyFunction, name: str) -> None:
        if not callable(function):
            raise ConfigurationError(f"rate limit key {function!r} is not a function of the exchange.")
        self.function = function
        self.name = name

    def __call__(self, exchange: Exchange) -> str | None:
        return self.function(exchange)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and self.name == other.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return self.name


def by_client_network(*, ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> Key:
    """The client address (`exchange.client_ip`, which honours the gateway's trusted proxies), grouped by prefix.

    One IPv6 customer usually holds a whole /64 (or more): counting single IPv6 addresses would let them
    rotate through it, so IPv6 addresses are counted per /64 by default.
    """
    if not 0 <= ipv4_prefix <= 32 or not 0 <= ipv6_prefix <= 128:
        raise ConfigurationError(f"client network prefixes /{ipv4_prefix} (IPv4), /{ipv6_prefix} (IPv6) are invalid.")
    cache: dict[str, str] = {}

    def client_network(exchange: Exchange) -> str | None:
        address = exchange.client_ip
        if not address:
            return None
        found = cache.get(address)
        if found is not None:
            return found
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address  # not an IP (a unix socket path, a test client name): count it as it is
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
        full = 32 if ip.version == 4 else 128
        value = str(ip) if prefix == full else str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
        if len(address) <= 45:  # a small memo of recent clients (formatting is the costly part), of plain
            if len(cache) >= 4096:  # addresses only: an IPv6 zone ("fe80::1%...") can be as long as a header
                cache.clear()
            cache[address] = value
        return value

    if (ipv4_prefix, ipv6_prefix) == (32, 64):
        return Key(client_network, "by_client_ip")
    return Key(client_network, f"by_client_network(ipv4_prefix={ipv4_prefix}, ipv6_prefix={ipv6_prefix})")


by_client_ip = by_client_network()


def by_header(name: str) -> Key:
    """The value of a request header (an API key, a tenant id); requests without it have no key."""
    lowered = name.lower()

    def header(exchange: Exchange) -> str | None:
        return exchange.headers.get(lowered) or None

    return Key(header, f"by_header({lowered!r})")


def _subject(exchange: Exchange) -> str | None:
    identity: Any = exchange.identity
    if identity is None:
        return None
    if isinstance(identity, str):
        return identity or None
    for attribute in ("subject", "sub", "client_id", "id"):
        value = identity.get(attribute) if isinstance(identity, dict) else getattr(identity, attribute, None)
        if value:
            return str(value)
    return str(identity)


by_subject = Key(_subject, "by_subject")
"""The authenticated subject, from `exchange.identity`: a string, or its `subject`, `sub`, `client_id` or `id`."""


def _route(exchange: Exchange) -> str | None:
    return exchange.route.name if exchange.route is not None else None


by_route = Key(_route, "by_route")
"""The matched route: every client shares the route's counters."""

KeyLike: TypeAlias = Key | KeyFunction | Sequence[Key | KeyFunction]


def as_key(value: KeyLike) -> Key:
    """A Key from a Key, any function of the exchange, or a sequence of them (all values must be present)."""
    if isinstance(value, Key):
        return value
    if isinstance(value, (list, tuple)):
        parts = [as_key(part) for part in value]
        if not parts:
            raise ConfigurationError("a rate limit key sequence must not be empty.")

        def combined(exchange: Exchange) -> str | None:
            values = [part(exchange) for part in parts]
            return None if any(v is None for v in values) else "|".join(values)  # type: ignore[arg-type]

        return Key(combined, "(" + ", ".join(p.name for p in parts) + ")")
    if callable(value):
        return Key(value, getattr(value, "__qualname__", None) or repr(value))
    raise ConfigurationError(f"rate limit key {value!r} is neither a Key nor a function of the exchange.")
