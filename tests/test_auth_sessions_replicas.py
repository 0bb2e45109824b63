"""Two gateway replicas sharing sessions in a real redis-server, with the real OpenID provider (tests/idp).

Access tokens live 60 s and the gateways refresh them 30 s before expiry; the replicas share a clock the test moves
forward (by 31 s) to make a refresh due, so that however slowly the requests run, the refreshed token stays fresh
for the rest of the burst. The provider counts its refresh grants (GET /test/grants): the tests see how many
really happened.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from idp.provider import OpenIDProvider, openid_provider
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute

from asgigate import Gateway, OIDCLogin, Proxy, Route, SessionAuth, TokenRelay, Upstream
from asgigate.policies.auth import RedisSessions
from asgigate.testing import BackgroundServer

from redisserver import RedisServer
from servers import ShiftedClock, close_sessions, free_port

PREFIX = "replicas:"


@dataclass
class Api:
    seen: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def record(request: Request) -> JSONResponse:
            with self.lock:
                self.seen.append(request.headers.get("authorization"))
            return JSONResponse({"ok": True})

        return Starlette(routes=[StarletteRoute("/{path:path}", record)])


class Replica(Gateway):
    def __init__(self, issuer: str, api_url: str, redis_uri: str, base_url: str, clock: ShiftedClock) -> None:
        super().__init__()
        self.api = Upstream(api_url, name="api")
        self.login = OIDCLogin(issuer=issuer, client_id="web-client", client_secret="web-secret",
                               secret="replicas-session-secret-0123456789ab", scope="openid orders:read",
                               base_url=base_url, refresh_before=30, store=RedisSessions(redis_uri, prefix=PREFIX),
                               clock=clock)

    def policies(self) -> list[Any]:
        return [SessionAuth(self.login), TokenRelay(self.login)]

    def routes(self) -> list[Any]:
        return [self.login.routes(), Route("/{rest:path}", Proxy(self.api))]


@dataclass
class Setup:
    idp: OpenIDProvider
    redis: RedisServer
    api: Api
    replicas: list[BackgroundServer]
    gateways: list[Replica]
    clock: ShiftedClock


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = Api()
    with RedisServer() as redis, openid_provider(token_ttl=60, rp_url=base) as idp, \
            BackgroundServer(api.app()) as upstream:
        # Both replicas answer for the same public origin (as behind a load balancer).
        clock = ShiftedClock()
        gateways = [Replica(idp.url, upstream.url, redis.uri, base, clock) for _ in range(2)]
        with BackgroundServer(gateways[0], port=port) as first, BackgroundServer(gateways[1]) as second:
            yield Setup(idp, redis, api, [first, second], gateways, clock)


def sign_in(setup: Setup, username: str) -> dict[str, str]:
    with httpx.Client(timeout=10) as client:
        done = setup.idp.sign_in(client, f"{setup.replicas[0].url}/auth/login?return_to=/orders", username)
        assert (done.status_code, done.headers["location"]) == (302, "/orders"), done.text
        jar = {c.name: c.value or "" for c in client.cookies.jar if c.name.startswith("asgigate_session")}
    assert list(jar) == ["asgigate_session"] and len(jar["asgigate_session"]) < 200  # only the sealed id
    return jar


def get(setup: Setup, replica: int, jar: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=setup.replicas[replica].url, cookies=jar, timeout=20) as client:
        return client.get("/orders", headers={"accept": "application/json"})


def test_one_refresh_across_replicas_and_rotated_tokens_kept(setup: Setup) -> None:
    jar = sign_in(setup, "carol")
    assert get(setup, 1, jar).status_code == 200  # the other replica knows the session
    first = setup.api.seen[-1]
    tokens = []
    for _ in range(2):  # twice: the second refresh works only with the refresh token rotated by the first
        setup.clock.advance(31)  # the access token is now within 30 s of its expiry
        refreshes, count = setup.idp.grants("refresh_token"), len(setup.api.seen)
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda i: get(setup, i % 2, jar), range(40)))
        assert [r.status_code for r in responses] == [200] * 40
        assert setup.idp.grants("refresh_token") - refreshes == 1, "exactly one refresh at the provider"
        batch = set(setup.api.seen[count:])
        assert len(batch) == 1, "every request of both replicas got the refreshed token"
        tokens.append(batch.pop())
    assert len({first, *tokens}) == 3


def test_a_refused_refresh_ends_the_session_on_every_replica(setup: Setup) -> None:
    jar = sign_in(setup, "dave")
    login = setup.gateways[0].login
    session_id = login._read_cookies(_probe(setup, jar))["id"]
    store = RedisSessions(setup.redis.uri, prefix=PREFIX)

    async def revoke() -> None:
        session = await store.get(session_id)
        assert session is not None and session.refresh_token
        session.refresh_token, session.expires_at = "revoked", time.time() - 1
        await store.set(session, ttl=60)
        await close_sessions(store)

    asyncio.run(revoke())
    refused = get(setup, 1, jar)
    assert refused.status_code == 401
    assert 'asgigate_session=""' in refused.headers["set-cookie"]
    async def read() -> Any:
        try:
            return await store.get(session_id)
        finally:
            await close_sessions(store)

    assert asyncio.run(read()) is None
    assert get(setup, 0, jar).status_code == 401


def _probe(setup: Setup, jar: dict[str, str]) -> Any:
    from asgigate import Exchange

    cookie = "; ".join(f"{k}={v}" for k, v in jar.items()).encode()
    return Exchange({"type": "http", "headers": [(b"cookie", cookie)]}, setup.gateways[0])
