"""Trusted proxies and forwarding headers (asgigate._forwarding), unit by unit; through a real proxy in test_proxy."""

from __future__ import annotations

from typing import Any

import pytest

from asgigate._forwarding import TrustedProxies, add_forwarding


def scope(peer: str | None = "10.0.0.5", *headers: tuple[bytes, bytes], scheme: str = "http") -> dict[str, Any]:
    return {"type": "http", "scheme": scheme, "headers": list(headers), "client": (peer, 4000) if peer else None}


LB = TrustedProxies(["10.0.0.0/8", "2001:db8::1"])


def test_trust_is_by_address_or_network() -> None:
    assert LB.trusts("10.1.2.3") and LB.trusts("2001:db8::1")
    assert not LB.trusts("192.0.2.1") and not LB.trusts("2001:db8::2")
    assert not LB.trusts(None) and not LB.trusts("") and not LB.trusts("not-an-address")
    assert not TrustedProxies().trusts("10.1.2.3")
    assert bool(LB) and not TrustedProxies()
    assert LB.trusts_peer(scope("10.0.0.5")) and not LB.trusts_peer(scope("192.0.2.1"))
    assert not LB.trusts_peer(scope(None))
    with pytest.raises(ValueError):
        TrustedProxies(["10.0.0.0/33"])


def test_client_address_without_trusted_proxies_is_the_peer() -> None:
    forged = (b"x-forwarded-for", b"203.0.113.9")
    assert TrustedProxies().client_address(scope("10.0.0.5", forged)) == "10.0.0.5"
    assert LB.client_address(scope("192.0.2.1", forged)) == "192.0.2.1"  # an untrusted peer's word is not taken
    assert LB.client_address(scope(None, forged)) is None


def test_client_address_is_the_rightmost_untrusted_hop() -> None:
    # each proxy appends the address it saw: the hops to the left of the last untrusted one are the client's word
    headers = (b"x-forwarded-for", b"6.6.6.6, 203.0.113.9"), (b"x-forwarded-for", b"10.9.9.9")
    assert LB.client_address(scope("10.0.0.5", *headers)) == "203.0.113.9"
    # every hop trusted: the leftmost one; no header: the peer
    assert LB.client_address(scope("10.0.0.5", (b"x-forwarded-for", b"10.1.1.1, 10.2.2.2"))) == "10.1.1.1"
    assert LB.client_address(scope("10.0.0.5")) == "10.0.0.5"


def test_forwarded_value_is_what_the_nearest_trusted_proxy_set() -> None:
    headers = (b"x-forwarded-proto", b"http"), (b"x-forwarded-proto", b"ftp, https ")
    assert LB.forwarded_value(scope("10.0.0.5", *headers), b"x-forwarded-proto") == "https"
    assert LB.forwarded_value(scope("192.0.2.1", *headers), b"x-forwarded-proto") is None
    assert LB.forwarded_value(scope("10.0.0.5"), b"x-forwarded-host") is None


def forwarding(
    peer: str | None, prior: dict[bytes, bytes], host: bytes = b"shop.example", **kw: Any
) -> dict[bytes, bytes]:
    out: list[tuple[bytes, bytes]] = [(b"accept", b"*/*")]
    options = {"x_forwarded": True, "forwarded": True} | kw
    add_forwarding(out, scope(peer, scheme="https"), prior, host, options["x_forwarded"], options["forwarded"])
    assert out[0] == (b"accept", b"*/*")  # appended, nothing else touched
    return dict(out[1:])


def test_this_hop_alone_without_trusted_values() -> None:
    assert forwarding("192.0.2.1", {}) == {
        b"x-forwarded-for": b"192.0.2.1",
        b"x-forwarded-proto": b"https",
        b"x-forwarded-host": b"shop.example",
        b"forwarded": b'for=192.0.2.1;proto=https;host="shop.example"',
    }
    # built once per (peer, scheme, host, options) and then reused: the same values again
    assert forwarding("192.0.2.1", {}) == forwarding("192.0.2.1", {})
    assert forwarding("2001:db8::7", {}, forwarded=True, x_forwarded=False) == {
        b"forwarded": b'for="[2001:db8::7]";proto=https;host="shop.example"'
    }
    assert forwarding(None, {}, host=b"") == {b"x-forwarded-proto": b"https", b"forwarded": b"for=unknown;proto=https"}


def test_trusted_values_are_extended() -> None:
    prior = {
        b"x-forwarded-for": b"203.0.113.9",
        b"x-forwarded-proto": b"http",
        b"x-forwarded-host": b"public.example",
        b"forwarded": b"for=203.0.113.9",
    }
    assert forwarding("10.0.0.5", prior) == {
        b"x-forwarded-for": b"203.0.113.9, 10.0.0.5",
        b"x-forwarded-proto": b"http",  # the scheme and host the client used, as the first proxy saw them
        b"x-forwarded-host": b"public.example",
        b"forwarded": b'for=203.0.113.9, for=10.0.0.5;proto=https;host="shop.example"',
    }


def test_a_host_cannot_break_out_of_its_quoted_string() -> None:
    assert forwarding("192.0.2.1", {}, host=b'evil"; for=1.2.3.4', x_forwarded=False) == {
        b"forwarded": b'for=192.0.2.1;proto=https;host="evil; for=1.2.3.4"'
    }
