"""ForwardAuth through the front door: a real decision service and the shared echo upstream, under uvicorn."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from asgigate import ApiKeyAuth, ConfigurationError, ForwardAuth, Gateway, Proxy, Route, Upstream
from asgigate.policies.auth import Consumer, hash_api_key
from asgigate.testing import BackgroundServer


class DecisionService:
    """Allows `Bearer good` (as user alice), challenges no credentials, forbids /admin, fails on demand."""

    def __init__(self) -> None:
        self.calls: list[dict[str, str]] = []
        self.bodies: list[tuple[str, bytes]] = []
        self.app = Starlette(routes=[StarletteRoute("/verify", self.verify),
                                     StarletteRoute("/verify-body", self.verify_body, methods=["POST"])])

    async def verify_body(self, request: Request) -> Response:
        """Payments up to 100 are allowed: the decision needs the body."""
        body = await request.body()
        self.bodies.append((request.headers.get("content-type", ""), body))
        try:
            amount = json.loads(body)["amount"]
        except (ValueError, KeyError, TypeError):
            return Response(status_code=403)
        return Response(status_code=200 if amount <= 100 else 403, headers={"x-user-id": "alice"})

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
    with BackgroundServer(service.app) as server:
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


def test_allow_deny_and_copied_headers(decisions: tuple[DecisionService, str], upstream: BackgroundServer) -> None:
    service, url = decisions
    with BackgroundServer(Guarded(url, upstream.url)) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as c:
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


def test_service_down_fails_closed_or_open(upstream: BackgroundServer) -> None:
    from servers import free_port

    nowhere = f"http://127.0.0.1:{free_port()}"
    with BackgroundServer(Guarded(nowhere, upstream.url)) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=10) as c:
        assert c.get("/orders", headers={"authorization": "Bearer good"}).status_code == 503
    with BackgroundServer(Guarded(nowhere, upstream.url, fail_open=True)) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=10) as c:
        headers = seen(c.get("/orders", headers={"x-user-id": "mallory"}))
        assert "x-user-id" not in headers  # let through, but with no identity headers


def test_decisions_are_cached(decisions: tuple[DecisionService, str], upstream: BackgroundServer) -> None:
    service, url = decisions
    with BackgroundServer(Guarded(url, upstream.url, cache_ttl=60)) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=10) as c:
        before = len(service.calls)
        for _ in range(3):
            assert seen(c.get("/orders", headers={"authorization": "Bearer good"}))["x-user-id"] == ["alice"]
            assert c.get("/orders").status_code == 401
        assert c.get("/other", headers={"authorization": "Bearer good"}).status_code == 200
        assert len(service.calls) - before == 3  # one per (credentials, method, path)


def test_keyed_on_the_identity_after_an_authenticator(decisions: tuple[DecisionService, str],
                                                      upstream: BackgroundServer) -> None:
    service, url = decisions
    consumers = [Consumer("app", keys=[hash_api_key("k1")])]

    class WithKeys(Guarded):
        def policies(self) -> list[Any]:
            return [ApiKeyAuth(consumers), *super().policies()]

    with BackgroundServer(WithKeys(url, upstream.url, cache_ttl=60)) as gateway, \
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


class BodyGuarded(Guarded):
    def policies(self) -> list[Any]:
        return [ForwardAuth(self.authz, path="/verify-body", copy=["x-user-id"], **self.options)]


def test_the_body_is_forwarded_and_replayed_to_the_upstream(decisions: tuple[DecisionService, str],
                                                            upstream: BackgroundServer) -> None:
    service, url = decisions
    with BackgroundServer(BodyGuarded(url, upstream.url, body=4096, cache_ttl=60)) as gateway, \
            httpx.Client(base_url=gateway.url, timeout=10) as c:
        payment = json.dumps({"amount": 42, "note": "x" * 1000}).encode()
        response = c.post("/pay", content=payment, headers={"content-type": "application/json"})
        echoed = response.json()
        assert response.status_code == 200, response.text
        assert service.bodies[-1] == ("application/json", payment)
        assert (echoed["body_size"], echoed["body_sha256"]) == (len(payment), hashlib.sha256(payment).hexdigest())
        assert ["x-user-id", "alice"] in echoed["headers"]

        # streamed in chunks (no Content-Length): read whole, then replayed whole
        def chunks() -> Iterator[bytes]:
            yield b'{"amount": 7, '
            yield b'"note": "' + b"y" * 2000 + b'"}'
        streamed = c.post("/pay", content=chunks(), headers={"content-type": "application/json"}).json()
        assert streamed["body_size"] == len(service.bodies[-1][1]) == 2025
        assert streamed["body_sha256"] == hashlib.sha256(service.bodies[-1][1]).hexdigest()

        calls = len(service.bodies)
        assert c.post("/pay", content=b'{"amount": 500}').status_code == 403
        assert c.post("/pay", content=payment).status_code == 200  # the same body: the cached decision
        assert c.post("/pay", content=b'{"amount": 500}').status_code == 403
        assert len(service.bodies) == calls + 1  # decisions are keyed on the body too

        # Over the limit: 413 before the service is asked, declared or streamed.
        calls = len(service.bodies)
        big = os.urandom(5000)
        refused = c.post("/pay", content=big)
        assert refused.status_code == 413 and refused.json()["code"] == "payload_too_large"
        assert c.post("/pay", content=iter([big[:3000], big[3000:]])).status_code == 413
        assert len(service.bodies) == calls


def test_body_option_configuration() -> None:
    authz = Upstream("http://authz:8080", name="authz")
    with pytest.raises(ConfigurationError, match="body"):
        ForwardAuth(authz, body=-1)
    with_body = ForwardAuth(authz, body=1024)
    assert with_body.uses_wrap() and not with_body.uses_on_request() and isinstance(with_body, ForwardAuth)
    assert not ForwardAuth(authz).uses_wrap() and ForwardAuth(authz).uses_on_request()
    assert with_body == ForwardAuth(authz, body=1024) != ForwardAuth(authz)
    assert repr(with_body) == "ForwardAuth(authz/, body=1024)"
