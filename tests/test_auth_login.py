"""OIDCLogin's parts called directly: the sealed cookies, the return address, browser or API, CSRF, config.

The whole flow (real OpenID provider, real Chromium) is in test_auth_login_browser.py.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from asgigate import ConfigurationError, Exchange, Gateway, OIDCLogin, SessionAuth, TokenRelay
from asgigate.policies.auth._session import MemorySessions, Session, SessionCipher
from asgigate.policies.auth.oidc_login import _local_path

SECRET = "a-test-secret-that-is-long-enough-0123456789"


def login(**options: Any) -> OIDCLogin:
    return OIDCLogin(issuer="https://idp.example.com", client_id="web", client_secret="s", secret=SECRET,
                     **options)


def exchange(method: str = "GET", path: str = "/page", headers: dict[str, str] | None = None) -> Exchange:
    raw = [(k.lower().encode(), v.encode()) for k, v in {"host": "bff.example.com", **(headers or {})}.items()]
    scope = {"type": "http", "method": method, "path": path, "scheme": "http", "headers": raw, "query_string": b""}
    return Exchange(scope, Gateway())


def test_sealed_values_round_trip_and_resist_tampering() -> None:
    cipher = SessionCipher(SECRET)
    sealed = cipher.seal("session", {"id": "abc"})
    assert "abc" not in sealed and len(sealed) < 100
    assert cipher.open("session", sealed) == {"id": "abc"}
    assert cipher.open("session_login", sealed) is None  # bound to the cookie's name
    flipped = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    assert cipher.open("session", flipped) is None
    assert cipher.open("session", "not base64 !") is None
    assert cipher.open("session", "") is None
    assert SessionCipher("another-secret-that-is-long-enough-0123").open("session", sealed) is None
    assert cipher.seal("session", 1) != cipher.seal("session", 1)  # a fresh nonce every time
    with pytest.raises(ConfigurationError, match="32 bytes"):
        SessionCipher("short")


@pytest.mark.parametrize(("value", "expected"), [
    ("/orders?id=1", "/orders?id=1"),
    ("//evil.example/", "/"),
    ("/\\evil.example", "/"),
    ("https://evil.example/", "/"),
    ("/a\r\nSet-Cookie: x=1", "/"),
    (None, "/"),
])
def test_return_addresses_stay_on_the_site(value: str | None, expected: str) -> None:
    assert _local_path(value, "/") == expected


@pytest.mark.parametrize(("method", "headers", "redirect"), [
    ("GET", {"accept": "text/html,application/xhtml+xml,*/*;q=0.8"}, True),
    ("GET", {"sec-fetch-mode": "navigate", "accept": "*/*"}, True),
    ("GET", {"sec-fetch-mode": "cors", "accept": "text/html"}, False),  # fetch() asking for HTML
    ("GET", {"accept": "application/json"}, False),
    ("GET", {"accept": "*/*"}, False),  # curl
    ("GET", {"accept": "text/html", "x-requested-with": "XMLHttpRequest"}, False),
    ("POST", {"accept": "text/html"}, False),
])
def test_browser_navigations_are_redirected_api_calls_are_not(method: str, headers: dict[str, str],
                                                               redirect: bool) -> None:
    assert login().wants_redirect(exchange(method, headers=headers)) is redirect


def test_api_paths_always_get_401() -> None:
    configured = login(api_paths=["/api"])
    assert not configured.wants_redirect(exchange(path="/api/me", headers={"sec-fetch-mode": "navigate"}))
    assert configured.wants_redirect(exchange(path="/apiary", headers={"sec-fetch-mode": "navigate"}))


@pytest.mark.parametrize(("headers", "allowed"), [
    ({"origin": "http://bff.example.com"}, True),
    ({"origin": "https://app.example.com"}, True),  # trusted_origins
    ({"origin": "https://evil.example"}, False),
    ({"origin": "null"}, False),
    ({"sec-fetch-site": "same-origin"}, True),
    ({"sec-fetch-site": "same-site"}, False),
    ({"sec-fetch-site": "cross-site"}, False),
    ({}, False),  # no browser sends a state-changing request with neither
])
def test_csrf_check(headers: dict[str, str], allowed: bool) -> None:
    configured = login(trusted_origins=["https://app.example.com/"])
    assert configured.same_origin(exchange("POST", headers=headers)) is allowed


def test_base_url_decides_the_origin_and_secure_cookies() -> None:
    public = login(base_url="https://shop.example.com/")
    assert public.same_origin(exchange("POST", headers={"origin": "https://shop.example.com"}))
    assert not public.same_origin(exchange("POST", headers={"origin": "http://bff.example.com"}))
    assert public._secure(exchange()) is True
    assert login()._secure(exchange()) is False
    assert login(cookie_secure=True)._secure(exchange()) is True


@pytest.mark.parametrize(("options", "message"), [
    ({"scope": "profile"}, "openid"),
    ({"prefix": "/auth/"}, "prefix"),
    ({"cookie_samesite": "none", "cookie_secure": False}, "SameSite=None"),
    ({"cookie_samesite": "sometimes"}, "cookie_samesite"),
    ({"idle_timeout": 0}, "timeouts"),
    ({"auth_method": "private_key_jwt"}, "auth_method"),
    ({"base_url": "shop.example.com"}, "base_url"),
])
def test_configuration_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        login(**options)


def test_routes_and_reprs() -> None:
    configured = login()
    group = configured.routes()
    assert [route.path for route in group.flatten()] == ["/auth/login", "/auth/callback", "/auth/logout"]
    assert {SessionAuth, TokenRelay} <= group.skip
    assert repr(SessionAuth(configured)) == (
        "SessionAuth(OIDCLogin(issuer='https://idp.example.com', client_id='web', prefix='/auth'))"
    )
    assert SessionAuth(configured) == SessionAuth(configured) != SessionAuth(configured, csrf=False)
    assert TokenRelay(configured) == TokenRelay(configured)
    assert configured.challenge == 'Session login="/auth/login"'


@pytest.mark.anyio
async def test_memory_sessions_expire_and_stay_bounded() -> None:
    now = [0.0]
    store = MemorySessions(max_sessions=2, clock=lambda: now[0])
    first, second, third = (Session(Session.new_id(), {"sub": name}, "id-token") for name in "abc")
    await store.set(first, ttl=10)
    await store.set(second, ttl=100)
    assert await store.get(first.id) is first
    await store.set(third, ttl=100)  # over the bound: the oldest goes
    assert await store.get(first.id) is None
    now[0] = 150
    assert await store.get(second.id) is None
    await store.delete(third.id)
    assert len(store) == 0


@pytest.mark.anyio
async def test_refresh_is_single_flight_and_ends_refused_sessions() -> None:
    configured = login(refresh_before=30, store=MemorySessions())
    calls: list[dict[str, str]] = []
    answers: list[dict[str, Any] | None] = [
        {"access_token": "at-2", "refresh_token": "rt-2", "expires_in": 300},
        None,  # the provider refuses the refresh token
    ]

    async def token_request(grant_type: str, params: dict[str, str]) -> dict[str, Any] | None:
        calls.append({"grant_type": grant_type, **params})
        await asyncio.sleep(0.05)  # a provider that takes a moment: the concurrent requests overlap the refresh
        return answers.pop(0)

    configured._token_request = token_request  # type: ignore[method-assign]
    session = Session(Session.new_id(), {"sub": "alice"}, "id-token", access_token="at-1", refresh_token="rt-1",
                      expires_at=time.time() + 10)
    await configured.store.set(session, ttl=100)
    tokens = await asyncio.gather(*(configured.access_token(session) for _ in range(10)))
    assert tokens == ["at-2"] * 10
    assert calls == [{"grant_type": "refresh_token", "refresh_token": "rt-1"}]
    assert session.refresh_token == "rt-2"  # the rotated refresh token is kept
    assert await configured.access_token(session) == "at-2"  # fresh now: no call
    assert len(calls) == 1

    session.expires_at = time.time() - 1
    assert await configured.access_token(session) is None
    assert calls[-1]["refresh_token"] == "rt-2"
    assert await configured.store.get(session.id) is None  # the session is over


@pytest.mark.anyio
async def test_expired_token_without_refresh_token_ends_the_session() -> None:
    configured = login(store=MemorySessions())
    session = Session(Session.new_id(), {"sub": "alice"}, "id-token", access_token="at-1",
                      expires_at=time.time() + 5)
    await configured.store.set(session, ttl=100)
    assert await configured.access_token(session) == "at-1"  # near expiry, but nothing to refresh it with
    session.expires_at = time.time() - 1
    assert await configured.access_token(session) is None
    assert await configured.store.get(session.id) is None


@pytest.mark.anyio
async def test_cookie_sessions_refresh_once_and_share_the_rotation_with_late_requests() -> None:
    """Cookie sessions: each request has its own copy of the session; one refresh serves them all, and a request
    still carrying the cookie of before the refresh gets its result instead of reusing the rotated token."""
    configured = login(refresh_before=30)
    calls: list[dict[str, str]] = []

    async def token_request(grant_type: str, params: dict[str, str]) -> dict[str, Any] | None:
        calls.append({"grant_type": grant_type, **params})
        await asyncio.sleep(0.05)  # a provider that takes a moment: the concurrent requests overlap the refresh
        return {"access_token": f"at-{len(calls) + 1}", "refresh_token": f"rt-{len(calls) + 1}", "expires_in": 300}

    configured._token_request = token_request  # type: ignore[method-assign]
    original = Session(Session.new_id(), {"sub": "alice"}, "id-token", access_token="at-1", refresh_token="rt-1",
                       expires_at=time.time() + 10)
    copies = [original.copy() for _ in range(10)]
    exchanges = [exchange() for _ in copies]
    tokens = await asyncio.gather(*(configured.access_token(s, e) for s, e in zip(copies, exchanges, strict=True)))
    assert tokens == ["at-2"] * 10 and len(calls) == 1
    assert all(e.state["asgigate.session_cookie"] is s for s, e in zip(copies, exchanges, strict=True))
    assert all(s.refresh_token == "rt-2" for s in copies)
    late = original.copy()  # a request that still carries the old cookie
    assert await configured.access_token(late, exchange()) == "at-2"
    assert late.refresh_token == "rt-2" and len(calls) == 1
