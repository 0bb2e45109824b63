"""Browser login end to end: real headless Chromium, a real OpenID provider, the gateway and an upstream under uvicorn.

The provider (tests/idp/server.mjs, node's oidc-provider) registers the client 'web-client' for the gateway's
origin, and its devInteractions give the login form (any username becomes the subject). Access tokens live
60 s and the gateway refreshes them 30 s before expiry: the test moves the gateway's clock 31 s on to make a
refresh due, instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from idp.provider import OpenIDProvider, openid_provider
from joserfc import jwt
from joserfc.jwk import KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route as StarletteRoute

from asgigate import (
    Direct,
    Exchange,
    Gateway,
    OIDCLogin,
    Proxy,
    Route,
    SessionAuth,
    TokenRelay,
    Upstream,
)
from asgigate.policies.auth._session import Session
from asgigate.testing import BackgroundServer

from servers import ShiftedClock, free_port

T = TypeVar("T")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]



@dataclass
class Api:
    """The upstream: records the Authorization header of every request it gets."""

    seen: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def record(request: Request) -> Any:
            with self.lock:
                self.seen.append(request.headers.get("authorization"))
            if request.url.path == "/page":
                return HTMLResponse(f"<h1>Welcome</h1><p id='q'>{request.url.query}</p>")
            return JSONResponse({"method": request.method, "cookie": request.headers.get("cookie")})

        return Starlette(routes=[StarletteRoute("/{path:path}", record, methods=["GET", "POST"])])


class Shop(Gateway):
    def __init__(self, issuer: str, api_url: str, clock: ShiftedClock) -> None:
        super().__init__()
        self.api = Upstream(api_url, name="api")
        self.login = OIDCLogin(issuer=issuer, client_id="web-client", client_secret="web-secret",
                               secret="test-session-secret-0123456789abcdef", scope="openid orders:read",
                               after_logout="/signed-out", refresh_before=30, clock=clock)

    def policies(self) -> list[Any]:
        return [SessionAuth(self.login), TokenRelay(self.login)]

    def routes(self) -> list[Any]:
        return [
            self.login.routes(),
            Route("/signed-out", Direct(text="signed out"), skip={SessionAuth, TokenRelay}),
            Route("/{rest:path}", Proxy(self.api)),
        ]


@dataclass
class Setup:
    idp: OpenIDProvider
    gateway: BackgroundServer
    shop: Shop
    api: Api
    clock: ShiftedClock

    def verify(self, authorization: str | None) -> dict[str, Any]:
        """The claims of a relayed token, verified with the provider's published keys."""
        assert authorization is not None and authorization.startswith("Bearer ")
        keys = KeySet.import_key_set(httpx.get(f"{self.idp.url}/jwks", timeout=10).json())
        token = jwt.decode(authorization.removeprefix("Bearer "), keys, algorithms=["RS256", "ES256"])
        claims: dict[str, Any] = token.claims
        assert claims["iss"] == self.idp.url
        assert claims["aud"] == "urn:asgigate:rs"
        return claims


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    port = free_port()
    api = Api()
    with openid_provider(token_ttl=60, rp_url=f"http://127.0.0.1:{port}") as idp, \
            BackgroundServer(api.app()) as upstream:
        clock = ShiftedClock()
        shop = Shop(idp.url, upstream.url, clock)
        with BackgroundServer(shop, port=port) as gateway:
            yield Setup(idp, gateway, shop, api, clock)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    if shutil.which(CHROMIUM) is None:
        raise RuntimeError("chromium is not installed: the browser login tests need it (./dev test installs the "
                           "Debian package chromium; or: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Any, username: str) -> None:
    """The provider's dev login form, then its consent page."""
    page.fill("input[name=login]", username)
    page.fill("input[name=password]", "anything")
    with page.expect_navigation():
        page.click("button[type=submit]")
    if "/interaction/" in page.url:  # the consent page
        page.click("button[type=submit]")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Await outside Playwright's event loop (the sync API keeps one running in this thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def payload(token: str) -> dict[str, Any]:
    part = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return claims


def session_cookies(context: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in context.cookies()
            if c["name"] == "asgigate_session" or c["name"].startswith("asgigate_session.")}


def test_login_relay_csrf_and_logout(setup: Setup, browser: Any) -> None:
    base = setup.gateway.url
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        # An XHR without a session is 401, not a redirect to the login page.
        page.goto(f"{base}/signed-out")
        status = page.evaluate("fetch('/orders', {headers: {accept: 'application/json'}}).then(r => r.status)")
        assert status == 401

        # A navigation goes to the provider, and comes back to the page it asked for.
        page.goto(f"{base}/page?from=test")
        assert page.url.startswith(setup.idp.url + "/interaction/")
        sign_in(page, "alice")
        page.wait_for_url(f"{base}/page?from=test")
        assert page.text_content("h1") == "Welcome"
        assert page.text_content("#q") == "from=test"

        # The upstream got alice's access token, signed by the provider; never the session cookie.
        claims = setup.verify(setup.api.seen[-1])
        assert claims["sub"] == "alice"
        cookies = {cookie["name"]: cookie for cookie in context.cookies()}
        session = cookies["asgigate_session"]
        assert session["httpOnly"] and session["sameSite"] == "Lax" and not session["secure"]  # http origin
        assert "asgigate_session_login" not in cookies
        # The whole session is in the cookies (the default store), sealed: no token can be read from them.
        jar = session_cookies(context)
        assert all(len(value) < 3800 for value in jar.values())
        token = (setup.api.seen[-1] or "").removeprefix("Bearer ")
        assert token and not any(token[:40] in value or token[-40:] in value for value in jar.values())
        seen = page.evaluate("fetch('/orders').then(r => r.json())")
        # (cookies do not keep to a port: the provider's own cookies on 127.0.0.1 come along, and may go on)
        assert "asgigate_session" not in (seen["cookie"] or "")

        # A same-origin POST from the page passes the CSRF check; a cross-site one does not.
        posted = page.evaluate("fetch('/orders', {method: 'POST'}).then(r => r.status)")
        assert posted == 200
        with httpx.Client(base_url=base, cookies=jar, timeout=10) as client:
            refused = client.post("/orders", headers={"origin": "https://evil.example"})
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == "forbidden"
            assert client.post("/orders").status_code == 403  # neither Origin nor Sec-Fetch-Site
            assert client.post("/orders", headers={"origin": base}).status_code == 200

        # Logout: the session ends here, then at the provider, which sends the browser back.
        page.goto(f"{base}/auth/logout")
        assert page.url.startswith(setup.idp.url + "/session/end")
        page.click("button[autofocus]")  # "Yes, sign me out"
        page.wait_for_url(f"{base}/signed-out")
        assert "asgigate_session" not in {cookie["name"] for cookie in context.cookies()}
        with httpx.Client(base_url=base, cookies=jar, timeout=10) as client:  # the old cookie opens nothing
            response = client.get("/orders", headers={"accept": "application/json"})
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == 'Session login="/auth/login"'
        page.goto(f"{base}/page")  # the provider's session is over too: its login form again
        assert page.url.startswith(setup.idp.url + "/interaction/")
        assert page.locator("input[name=login]").count() == 1
    finally:
        context.close()


def test_refresh_is_single_flight_and_keeps_rotated_tokens(setup: Setup, browser: Any) -> None:
    base = setup.gateway.url
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(f"{base}/page")
        sign_in(page, "bob")
        page.wait_for_url(f"{base}/page")
        jar = session_cookies(context)
    finally:
        context.close()
    first = setup.api.seen[-1]
    assert first is not None and payload(first)["sub"] == "bob"

    def call(_: int) -> httpx.Response:
        response = httpx.get(f"{base}/orders", cookies=jar, headers={"accept": "application/json"}, timeout=10)
        assert response.status_code == 200, response.text
        return response

    tokens = []
    for _ in range(2):  # twice: the second refresh works only with the rotated refresh token
        setup.clock.advance(31)  # the access token is now within 30 s of its expiry, on the gateway's clock
        count = len(setup.api.seen)
        with ThreadPoolExecutor(8) as pool:
            responses = list(pool.map(call, range(8)))
        batch = set(setup.api.seen[count:])
        assert len(batch) == 1, "one refresh served every concurrent request"
        tokens.append(batch.pop())
        # Each response carries the refreshed session's cookies, as a browser would keep them.
        assert all("asgigate_session=" in r.headers.get("set-cookie", "") for r in responses)
        jar = {name: value for name, value in responses[-1].cookies.items() if name.startswith("asgigate_session")}
    assert len({first, *tokens}) == 3
    for token in tokens:
        assert setup.verify(token)["sub"] == "bob"

    # A refresh token the provider refuses ends the session cleanly: 401, and the cookies are cleared.
    login = setup.shop.login
    record = login._read_cookies(Exchange({"type": "http", "headers": [
        (b"cookie", "; ".join(f"{k}={v}" for k, v in jar.items()).encode())]}, setup.shop))
    assert record["r"] and record["a"] == tokens[-1].removeprefix("Bearer ")
    record["r"], record["e"] = "revoked", setup.clock() - 1
    forged = Session.from_record(record)
    assert forged is not None
    jar = {"asgigate_session": f"1.{login._cipher.seal(login.cookie_name, forged.record(), compress=True)}"}
    response = httpx.get(f"{base}/orders", cookies=jar, headers={"accept": "application/json"}, timeout=10)
    assert response.status_code == 401
    assert 'asgigate_session=""' in response.headers["set-cookie"]
    assert login.store.ended(forged.id, setup.clock())  # this replica refuses the session's old cookies too
