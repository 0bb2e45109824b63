"""Every cache and memo that client input fills outside rate limits stays bounded: by bytes where an entry's size
depends on what was sent or issued (verified tokens, introspection answers, forward-auth decisions, sessions),
by entries of a bounded size elsewhere (the proxy's forwarding headers and methods, the client-network memo),
by the requests in flight for concurrency slots. Each test sends many distinct large values and checks the
structure's size."""

from __future__ import annotations

import asyncio
import gc
import json
import time
import tracemalloc
import urllib.parse
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from joserfc import jws
from joserfc.jwk import OctKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from asgigate import (
    BearerAuth,
    ConcurrencyLimit,
    Direct,
    ForwardAuth,
    Gateway,
    IntrospectionAuth,
    OIDCLogin,
    Proxy,
    Route,
    Upstream,
    _forwarding,
)
from asgigate._cache import json_size
from asgigate.policies.auth._session import MemorySessions, Session
from asgigate.policies.ratelimit import by_client_network, by_header
from asgigate.targets import proxy
from asgigate.testing import BackgroundServer

from servers import raw_request, run_closing

MiB = 1024 * 1024
SECRET = "a-test-secret-that-is-long-enough-0123456789"
HMAC = OctKey.import_key(SECRET.encode() * 2)
FAT = [{} for _ in range(1500)]  # 4.5 KB of JSON, about 100 KB once parsed


def traced(action: Any) -> int:
    """How much more memory is held after `action()` than before (tracemalloc, after a collection)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        action()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_the_size_estimate_is_what_parsing_took() -> None:
    for text in (json.dumps({"big": FAT}), json.dumps({f"claim{i}": "x" * 3 for i in range(500)}),
                 json.dumps({"sub": "u1", "aud": ["a", "b"], "exp": 1.5, "scope": "read write", "n": None})):
        kept: list[Any] = [None]
        taken = traced(lambda: kept.__setitem__(0, json.loads(text)))  # noqa: B023
        # other threads' allocations (servers of earlier tests) add a little noise either way
        assert 0.95 * taken - 4096 <= json_size(kept[0]) <= 1.5 * taken + 4096


# --- authentication ----------------------------------------------------------------------------------------

def token(subject: str, **claims: Any) -> str:
    payload = {"iss": "https://idp.example.com", "aud": "api", "sub": subject, "exp": int(time.time()) + 600,
               **claims}
    return jws.serialize_compact({"alg": "HS256"}, json.dumps(payload), HMAC)


def test_verified_tokens_are_bounded_by_bytes() -> None:
    """Valid tokens whose claims parse to 100 KB each (a client holding many tokens, or an IdP putting large
    claims in them): 300 of them fit the entry count, not the byte budget."""
    auth = BearerAuth(issuer="https://idp.example.com", audience="api", algorithms=["HS256"], keys=HMAC,
                      cache_bytes=2 * MiB)
    tokens = [token(f"user-{index}", big=FAT) for index in range(300)]
    assert len(tokens[0]) < auth.max_token_bytes

    def verify_all() -> None:
        for one in tokens:
            asyncio.run(auth.verify(one))

    grown = traced(verify_all)
    assert auth._verified.bytes <= 2 * MiB and 5 <= len(auth._verified) < 300
    assert grown < 3 * MiB, f"{grown / MiB:.1f} MiB kept"
    last = asyncio.run(auth.verify(tokens[-1]))
    assert asyncio.run(auth.verify(tokens[-1])) is last  # still a cache: the most recent are kept
    assert BearerAuth(issuer="i", audience="a", algorithms=["HS256"], keys=HMAC, cache_size=0)._verified.max_bytes == 0


@pytest.fixture(scope="module")
def introspection() -> Iterator[str]:
    async def introspect(request: Request) -> Response:
        form = urllib.parse.parse_qs((await request.body()).decode())
        return JSONResponse({"active": True, "sub": form["token"][0][:13], "exp": int(time.time()) + 600,
                             "big": FAT})

    with BackgroundServer(Starlette(routes=[StarletteRoute("/introspect", introspect, methods=["POST"])])) as server:
        yield server.url + "/introspect"


def test_introspection_answers_are_bounded_by_bytes(introspection: str) -> None:
    auth = IntrospectionAuth(endpoint=introspection, client_id="gateway", client_secret="s", cache_bytes=MiB)

    async def verify_all() -> None:
        for index in range(60):
            assert (await auth.verify(f"opaque-{index:06d}-" + "t" * 4000)).subject == f"opaque-{index:06d}"

    run_closing(verify_all(), auth)
    assert auth._active.bytes <= MiB and 3 <= len(auth._active) < 60


class Profiles:
    """A decision service that allows everyone and copies a large profile header (it repeats the cookie)."""

    def __init__(self) -> None:
        self.app = Starlette(routes=[StarletteRoute("/verify", self.verify)])

    async def verify(self, request: Request) -> Response:
        return Response(headers={"x-profile": request.headers.get("cookie", "")[:16_000]})


def test_forward_auth_decisions_are_bounded_by_bytes() -> None:
    with BackgroundServer(Profiles().app) as service:
        authz = Upstream(service.url, name="authz")
        policy = ForwardAuth(authz, path="/verify", send=["cookie"], copy=["x-profile"], cache_ttl=60,
                             cache_bytes=256 * 1024)

        class Guarded(Gateway):
            def __init__(self) -> None:
                super().__init__(access_log=False)
                self.authz = authz  # kept on the gateway (as the docs say): closed at its shutdown

            def routes(self) -> list[Route]:
                return [Route("/", Direct(text="ok"), policies=[policy])]

        with BackgroundServer(Guarded()) as server, httpx.Client(base_url=server.url) as client:
            for index in range(100):  # every client a new cookie of 12 KB: a new decision each
                cookie = f"session={index:06d}{'c' * 12_000}"
                assert client.get("/", headers={"cookie": cookie}).status_code == 200
    assert policy._decisions.bytes <= 256 * 1024 and 5 <= len(policy._decisions) < 100


@pytest.mark.anyio
async def test_memory_sessions_are_bounded_by_bytes() -> None:
    store = MemorySessions(max_bytes=MiB)
    sessions = [Session(Session.new_id(), {"sub": f"user-{index}", "groups": ["g" * 100] * 20},
                        "i" * 5000, access_token="a" * 10_000, refresh_token="r" * 5000) for index in range(300)]
    for session in sessions:
        await store.set(session, ttl=600)
    assert store.bytes <= MiB and 20 <= len(store) < 300
    assert await store.get(sessions[-1].id) is sessions[-1]  # the newest are kept, the oldest went first
    assert await store.get(sessions[0].id) is None
    await store.delete(sessions[-1].id)
    assert store.bytes == sum(entry[2] for entry in store._sessions.values())
    assert repr(store) == "MemorySessions(max_sessions=100000, max_bytes=1048576)"


@pytest.mark.anyio
async def test_remembered_refreshes_of_cookie_sessions_are_bounded_by_bytes() -> None:
    login = OIDCLogin(issuer="https://idp.example.com", client_id="web", client_secret="s", secret=SECRET)

    async def token_request(grant_type: str, params: dict[str, str]) -> dict[str, Any] | None:
        rotated = "n" + params["refresh_token"][1:]
        return {"access_token": "a" * 100_000, "refresh_token": rotated, "expires_in": 300}

    login._token_request = token_request  # type: ignore[method-assign]
    for index in range(300):  # 300 sessions refreshed, each with a 100 KB access token
        session = Session(Session.new_id(), {"sub": f"user-{index}"}, "id-token", access_token="old",
                          refresh_token=f"r{index}", expires_at=time.time() - 1)
        assert await login.access_token(session) == "a" * 100_000
    assert login._rotated.bytes <= 16 * MiB and 100 <= len(login._rotated) < 300


# --- the proxy and rate limit keys --------------------------------------------------------------------

def test_the_proxy_keeps_no_forwarding_headers_or_methods_a_client_made_up(upstream: BackgroundServer) -> None:
    class Edge(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/api/{rest:path}", Proxy(Upstream(upstream.url), strip_prefix="/api"))]

    _forwarding._CACHE.clear()
    with BackgroundServer(Edge(access_log=False), http="h11") as server:  # h11 takes any method token
        for index in range(40):
            host = f"h{index:04d}" + "x" * 4000
            method = f"M{index:04d}" + "Y" * 2000
            for request in (f"GET /api/echo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
                            f"{method} /api/echo HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"):
                assert raw_request(server.port, request.encode()).startswith(b"HTTP/1.1 ")
        assert raw_request(server.port, b"GET /api/echo HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n"
                           ).startswith(b"HTTP/1.1 200")
    assert _forwarding._CACHE and max(len(key[2]) for key in _forwarding._CACHE) <= 260
    assert max(len(method) for method in proxy._METHODS) <= 32


def test_concurrency_slots_of_a_key_last_only_while_its_requests_run() -> None:
    limit = ConcurrencyLimit(2, key=by_header("x-tenant"))

    class Edge(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/", Direct(text="ok"), policies=[limit])]

    with BackgroundServer(Edge(access_log=False)) as server, httpx.Client(base_url=server.url) as client:
        for index in range(200):
            assert client.get("/", headers={"x-tenant": f"{index}" + "k" * 8000}).status_code == 200
    assert not limit._in_flight and not limit._held


def test_the_client_network_memo_keeps_only_plain_addresses() -> None:
    """An IPv6 zone makes an address as long as the X-Forwarded-For hop it came from."""
    key = by_client_network(ipv6_prefix=128)
    values: list[int] = []

    def count_all() -> None:
        for index in range(3000):
            value = key(SimpleNamespace(client_ip=f"fe80::{index:x}%" + "z" * 4000))  # type: ignore[arg-type]
            values.append(len(value or ""))

    assert traced(count_all) < MiB
    assert key(SimpleNamespace(client_ip="2001:db8::1")) == "2001:db8::1"  # type: ignore[arg-type]
