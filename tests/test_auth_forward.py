"""ForwardAuth through the front door: a real decision service and the shared echo upstream, under uvicorn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from asgigate import (
    ApiKeyAuth,
    ConfigurationError,
    Consumer,
    ForwardAuth,
    Gateway,
    Proxy,
    Route,
    Upstream,
    hash_api_key,
)

from servers import ThreadServer


class DecisionService:
    """Allows `Bearer good` (as user alice), challenges no credentials, forbids /admin, fails on demand."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.app = Starlette(routes=[StarletteRoute("/verify", self.verify)])

    async def verify(self, request: Request) -> Response:
        self.calls.append(dict(request.headers))
        uri = request.headers.get("x-forwarded-uri", "")
        if request.headers.get("x-break"):
            return Response("boom", status_code=500)
        if request.headers.get("authorization") != "Bearer good":
            return Response(status_code=401, headers={"www-authenticate": 'Bearer realm="authz"'})
        if uri.startswith("/admin"):
            return Response(status_code=403)
        return JSONResponse({"ok": True}, headers={"x-user-id": "alice", "x-user-roles": "reader",
                                                  "x-internal": "not copied"})


@pytest.fixture(scope="module")
def decisions() -> Iterator[tuple[DecisionService, str]]:
    service = DecisionService()
    with ThreadServer(service.app) as server:
        yield service, server.url


class Guarded(Gateway):
    def __init__(self, authz_url: str, upstream_url: str, **options: Any) -> None:
        super().__init__()
        self.authz = Upstream(authz_url, name="authz", timeout=2.0)
        self.backend = Upstream(upstream_url, name="backend")
        self.options = options

    def policies(self) -> list[Any]:
        return [ForwardAuth(self.authz, path="/verify", send=["authorization", "x-break"],
                            copy=["x-user-id", "x-user-roles"], **self.options)]

    def routes(self) -> list[Any]:
        return [Route("/{rest:path}", Proxy(self.backend, path="/echo"))]


def seen(response: httpx.Response) -> dict[str, list[str]]:
    assert response.status_code == 200, response.text
    found: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        found.setdefault(name, []).append(value)
    return found


def test_allow_deny_and_copied_headers(decisions: tuple[DecisionService, str], upstream: ThreadServer) -> None:
    service, url = decisions
    with ThreadServer(Guarded(url, upstream.url)) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as c:
        headers = seen(c.get("/orders?x=1", headers={"authorization": "Bearer good", "x-user-id": "mallory"}))
        assert headers["x-user-id"] == ["alice"] and headers["x-user-roles"] == ["reader"]
        assert "x-internal" not in headers
        call = service.calls[-1]
        assert (call["x-forwarded-method"], call["x-forwarded-uri"]) == ("GET", "/orders?x=1")
        assert call["x-forwarded-for"] == "127.0.0.1" and call["x-request-id"]
        response = c.get("/orders")
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="authz"'
        assert c.get("/admin/x", headers={"authorization": "Bearer good"}).status_code == 403
        response = c.get("/orders", headers={"authorization": "Bearer good", "x-break": "1"})
        assert response.status_code == 503  # fail closed
        assert response.json()["code"] == "upstream_unavailable"


def test_service_down_fails_closed_or_open(upstream: ThreadServer) -> None:
    from servers import free_port

    nowhere = f"http://127.0.0.1:{free_port()}"
    with ThreadServer(Guarded(nowhere, upstream.url)) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as c:
        assert c.get("/orders", headers={"authorization": "Bearer good"}).status_code == 503
    with ThreadServer(Guarded(nowhere, upstream.url, fail_open=True)) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=10) as c:
        headers = seen(c.get("/orders", headers={"x-user-id": "mallory"}))
        assert "x-user-id" not in headers  # let through, but with no identity headers


def test_decisions_are_cached(decisions: tuple[DecisionService, str], upstream: ThreadServer) -> None:
    service, url = decisions
    with ThreadServer(Guarded(url, upstream.url, cache_ttl=60)) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=10) as c:
        before = len(service.calls)
        for _ in range(3):
            assert seen(c.get("/orders", headers={"authorization": "Bearer good"}))["x-user-id"] == ["alice"]
            assert c.get("/orders").status_code == 401
        assert c.get("/other", headers={"authorization": "Bearer good"}).status_code == 200
        assert len(service.calls) - before == 3  # one per (credentials, method, path)


def test_keyed_on_the_identity_after_an_authenticator(decisions: tuple[DecisionService, str],
                                                      upstream: ThreadServer) -> None:
    service, url = decisions
    consumers = [Consumer("app", keys=[hash_api_key("k1")])]

    class WithKeys(Guarded):
        def policies(self) -> list[Any]:
            return [ApiKeyAuth(consumers), *super().policies()]

    with ThreadServer(WithKeys(url, upstream.url, cache_ttl=60)) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=10) as c:
        before = len(service.calls)
        assert c.get("/orders", headers={"x-api-key": "k1", "authorization": "Bearer good"}).status_code == 200
        # the same consumer again, with other headers: the cached decision for "app" applies
        again = c.get("/orders", headers={"x-api-key": "k1", "authorization": "Bearer other"})
        assert seen(again)["x-user-id"] == ["alice"]
        assert len(service.calls) - before == 1
        assert c.get("/orders", headers={"authorization": "Bearer good"}).status_code == 401  # no API key


def test_configuration() -> None:
    authz = Upstream("http://authz:8080", name="authz")
    with pytest.raises(ConfigurationError, match="Upstream"):
        ForwardAuth("http://authz:8080")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="start with"):
        ForwardAuth(authz, path="verify")
    with pytest.raises(ConfigurationError, match="header name"):
        ForwardAuth(authz, copy=["x user"])
    assert ForwardAuth(authz, path="/v") == ForwardAuth(authz, path="/v")
    assert repr(ForwardAuth(authz, path="/v", copy=["X-User"], cache_ttl=5)) == (
        "ForwardAuth(authz/v, copy=['x-user'], cache_ttl=5)")
