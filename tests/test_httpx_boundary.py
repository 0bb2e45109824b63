"""httpx at one boundary: every call out maps its failures the same way (asgigate._httpx.translate), and each
policy that calls out keeps one httpx client, reused across calls and closed at gateway shutdown."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute

from asgigate import Direct, Gateway, Route, UpstreamTimeout, UpstreamUnavailable
from asgigate._httpx import PolicyClient, translate
from asgigate.errors import UpstreamConnectError, UpstreamProtocolError
from asgigate.policies.auth import AnyAuth, BearerAuth, ClientCredentials, IntrospectionAuth
from asgigate.testing import BackgroundServer

from servers import free_port

PEERS: list[tuple[str, int]] = []  # (path, client port) of every request the fake provider got


class FakeProvider:
    def __init__(self) -> None:
        self.server = BackgroundServer(Starlette(routes=[
            StarletteRoute("/introspect", self.introspect, methods=["POST"]),
            StarletteRoute("/token", self.token, methods=["POST"]),
            StarletteRoute("/slow/{rest:path}", self.slow, methods=["GET", "POST"]),
        ]))

    async def introspect(self, request: Request) -> JSONResponse:
        PEERS.append(("/introspect", request.client.port if request.client else 0))
        return JSONResponse({"active": True, "sub": "alice", "exp": int(time.time()) + 300})

    async def token(self, request: Request) -> JSONResponse:
        PEERS.append(("/token", request.client.port if request.client else 0))
        return JSONResponse({"access_token": f"t{len(PEERS)}", "token_type": "Bearer", "expires_in": 300})

    async def slow(self, request: Request) -> JSONResponse:
        await asyncio.sleep(2)  # deliberately slow: the timeout is the behaviour under test
        return JSONResponse({})


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    fake = FakeProvider()
    with fake.server:
        yield fake.server.url


def test_one_mapping_for_every_call_out() -> None:
    request = httpx.Request("GET", "http://idp.example/x")
    cases: list[tuple[Exception, type[Exception], int, type[Exception], int]] = [
        (httpx.ConnectTimeout("t", request=request), UpstreamTimeout, 504, UpstreamTimeout, 504),
        (httpx.ReadTimeout("t", request=request), UpstreamTimeout, 504, UpstreamTimeout, 504),
        (httpx.WriteTimeout("t", request=request), UpstreamTimeout, 504, UpstreamTimeout, 504),
        (httpx.PoolTimeout("t", request=request), UpstreamUnavailable, 503, UpstreamUnavailable, 503),
        (httpx.ConnectError("refused", request=request), UpstreamConnectError, 502, UpstreamUnavailable, 503),
        (httpx.RemoteProtocolError("bad", request=request), UpstreamProtocolError, 502, UpstreamUnavailable, 503),
        (httpx.ReadError("reset", request=request), UpstreamProtocolError, 502, UpstreamUnavailable, 503),
        (ValueError("not JSON"), UpstreamProtocolError, 502, UpstreamUnavailable, 503),
    ]
    for error, upstream_kind, upstream_status, dependency_kind, dependency_status in cases:
        as_upstream = translate(error, stage="s", upstream="u")
        as_dependency = translate(error, stage="s", upstream="u", dependency=True)
        assert (type(as_upstream), as_upstream.status_code) == (upstream_kind, upstream_status), error
        assert (type(as_dependency), as_dependency.status_code) == (dependency_kind, dependency_status), error
        assert (as_upstream.stage, as_upstream.upstream) == ("s", "u")
        assert type(error).__name__ in (as_upstream.internal or "")


class Api(Gateway):
    def __init__(self, auth: Any) -> None:
        super().__init__()
        self.auth = auth

    def routes(self) -> list[Route]:
        return [Route("/me", Direct(json={"ok": True}), policies=[self.auth])]


async def get(api: Gateway, path: str, token: str = "opaque") -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://gw") as client:
        return await client.get(path, headers={"authorization": f"Bearer {token}"})


def test_introspection_reuses_one_client_and_shutdown_closes_it(provider: str) -> None:
    auth = IntrospectionAuth(endpoint=f"{provider}/introspect", client_id="gw", client_secret="s", cache_ttl=0)
    api = Api(AnyAuth(auth))  # nested: the gateway reaches it through AnyAuth.aclose()

    async def go() -> None:
        PEERS.clear()
        for token in ("a", "b", "c"):
            assert (await get(api, "/me", token)).status_code == 200
        assert auth._http.opened == 1 and auth._http.is_open
        await api.aclose()
        assert not auth._http.is_open

    asyncio.run(go())
    assert len(PEERS) == 3 and len({port for _, port in PEERS}) == 1  # one connection, kept alive


def test_an_idp_timeout_is_a_504_and_an_idp_down_still_a_503(provider: str) -> None:
    slow = IntrospectionAuth(endpoint=f"{provider}/slow/introspect", client_id="gw", client_secret="s",
                             timeout=0.2)
    down = IntrospectionAuth(endpoint=f"http://127.0.0.1:{free_port()}/introspect", client_id="gw",
                             client_secret="s")

    async def go() -> tuple[httpx.Response, httpx.Response]:
        slow_api, down_api = Api(slow), Api(down)
        try:
            return await get(slow_api, "/me"), await get(down_api, "/me")
        finally:
            await slow_api.aclose()
            await down_api.aclose()

    timed_out, refused = asyncio.run(go())
    assert (timed_out.status_code, timed_out.json()["code"]) == (504, "upstream_timeout")
    assert (refused.status_code, refused.json()["code"]) == (503, "upstream_unavailable")


def test_client_credentials_reuse_one_client(provider: str) -> None:
    now = [0.0]
    credentials = ClientCredentials(token_url=f"{provider}/token", client_id="gw", client_secret="s",
                                    clock=lambda: now[0])

    async def go() -> list[str]:
        PEERS.clear()
        tokens = [await credentials.token()]
        now[0] = 1000.0  # expired: fetched again, over the same client
        tokens.append(await credentials.token())
        assert credentials._http.opened == 1
        await credentials.aclose()
        assert not credentials._http.is_open
        return tokens

    first, second = asyncio.run(go())
    assert first != second and len({port for _, port in PEERS}) == 1


def unverified_token(issuer: str) -> str:
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {"iss": issuer, "aud": "api", "sub": "alice", "exp": int(time.time()) + 60}
    return f"{part({'alg': 'RS256', 'kid': 'k1', 'typ': 'JWT'})}.{part(claims)}.c2ln"


def test_jwks_timeout_is_a_504(provider: str) -> None:
    auth = BearerAuth(issuer=f"{provider}/slow", audience="api", timeout=0.2)

    async def go() -> httpx.Response:
        api = Api(auth)
        try:
            return await get(api, "/me", unverified_token(f"{provider}/slow"))
        finally:
            await api.aclose()

    response = asyncio.run(go())
    assert (response.status_code, response.json()["code"]) == (504, "upstream_timeout")


def test_oidc_login_clients_close_through_its_policies() -> None:
    pytest.importorskip("authlib")
    from asgigate.policies.auth import OIDCLogin, SessionAuth, TokenRelay

    login = OIDCLogin(issuer="https://idp.example", client_id="web", client_secret="s", secret="x" * 32)

    async def go() -> None:
        client = login._http.get()
        await SessionAuth(login).aclose()
        assert client.is_closed and not login._http.is_open
        login._http.get()
        await TokenRelay(login).aclose()
        assert not login._http.is_open

    asyncio.run(go())


def test_a_policy_client_follows_the_event_loop() -> None:
    http = PolicyClient(timeout=1.0)

    async def use() -> httpx.AsyncClient:
        return http.get()

    first, second = asyncio.run(use()), asyncio.run(use())
    assert first is not second and http.opened == 2  # a client belongs to the loop it was used in
