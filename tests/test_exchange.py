"""Exchange: the per-request context. It knows no gateway and no feature; its public methods keep its views right."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

import asgigate
from asgigate import Exchange, Gateway
from asgigate._forwarding import TrustedProxies
from asgigate.exchange import GatewayContext

PACKAGE = Path(asgigate.__file__).parent


def request(query: bytes = b"", *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "scheme": "http",
        "path": "/p",
        "raw_path": b"/p",
        "query_string": query,
        "server": ("gw", 80),
        "client": ("192.0.2.1", 4000),
        "headers": [(b"host", b"gw"), *headers],
    }


def test_replace_headers_keeps_headers_and_request_right() -> None:
    exchange = Exchange(
        request(b"", (b"authorization", b"Bearer x"), (b"cookie", b"a=1"), (b"x-keep", b"1")), GatewayContext()
    )
    # every view made before the change, so that each must be made again
    assert exchange.headers["authorization"] == "Bearer x"
    assert (exchange.request.headers["authorization"], exchange.request.cookies) == ("Bearer x", {"a": "1"})
    assert str(exchange.request.url) == "http://gw/p"
    exchange.replace_headers(["Authorization", b"cookie", "host"], [("X-User", "alice"), (b"host", b"other")])
    assert exchange.scope["headers"] == [(b"x-keep", b"1"), (b"x-user", b"alice"), (b"host", b"other")]
    assert "authorization" not in exchange.headers and exchange.headers["x-user"] == "alice"
    assert "authorization" not in exchange.request.headers and exchange.request.cookies == {}
    assert str(exchange.request.url) == "http://other/p"
    exchange.replace_headers(add=[("x-user", "bob")])  # nothing removed: appended
    assert exchange.headers.getlist("x-user") == ["alice", "bob"]


def test_replace_query_keeps_query_params_and_request_right() -> None:
    exchange = Exchange(request(b"api_key=s3cret&q=1"), GatewayContext())
    assert exchange.query_params["api_key"] == "s3cret" and exchange.request.query_params["q"] == "1"
    assert str(exchange.request.url) == "http://gw/p?api_key=s3cret&q=1"
    exchange.replace_query("q=2")
    assert exchange.scope["query_string"] == b"q=2"
    assert dict(exchange.query_params) == dict(exchange.request.query_params) == {"q": "2"}
    assert str(exchange.request.url) == "http://gw/p?q=2"


@pytest.mark.anyio
async def test_a_request_keeps_its_body_across_a_replacement() -> None:
    exchange = Exchange({**request(), "method": "POST"}, GatewayContext())

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"payload", "more_body": False}

    exchange.give_body(receive)
    assert await exchange.request.body() == b"payload"
    exchange.replace_headers(["host"], [("host", "moved")])
    assert exchange.request.url.hostname == "moved"
    assert await exchange.request.body() == b"payload"  # read once, kept


def test_client_ip_comes_from_the_context() -> None:
    forwarded = request(b"", (b"x-forwarded-for", b"203.0.113.9"))
    assert Exchange(forwarded, GatewayContext()).client_ip == "192.0.2.1"
    assert Exchange(forwarded, GatewayContext(TrustedProxies(["192.0.2.0/24"]))).client_ip == "203.0.113.9"
    exchange = Exchange(forwarded, GatewayContext())
    exchange.client_ip = "198.51.100.1"  # a policy may settle it
    assert exchange.client_ip == "198.51.100.1"


def test_a_gateway_stands_for_its_context() -> None:
    gateway = Gateway(trusted_proxies=["192.0.2.0/24"], request_id_header="X-Correlation-ID")
    exchange = Exchange(request(b"", (b"x-forwarded-for", b"203.0.113.9")), gateway)
    assert exchange.context is gateway.context
    assert exchange.context.request_id_header == b"x-correlation-id"
    assert exchange.client_ip == "203.0.113.9"
    assert Gateway(request_id=False).context.request_id_header == b""
    with pytest.warns(DeprecationWarning, match="exchange.context"):
        assert exchange.gateway is gateway


def test_the_exchange_has_no_field_of_any_feature() -> None:
    fields = {name for name in vars(Exchange) if not name.startswith("__")}
    assert not {"response_hooks", "_ratelimit", "ratelimit", "session"} & fields
    assert not any("ratelimit" in name or "graphql" in name or "grpc" in name for name in fields)


def imported(module: str) -> set[str]:
    """The asgigate modules a module imports, at run time or for typing alike (relative imports resolved)."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / module).read_text())):
        if isinstance(node, ast.ImportFrom):
            base = "asgigate" + ("." + node.module if node.module else "") if node.level else node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("asgigate")}


def test_the_core_imports_no_feature() -> None:
    assert not {name for name in imported("exchange.py") if name.startswith("asgigate.gateway")}
    for module in ("exchange.py", "pipeline.py", "gateway.py", "_boundary.py", "_forwarding.py", "_request_id.py"):
        features = {
            name
            for name in imported(module)
            if name.split(".")[1:2] in (["policies"], ["graphql"], ["grpc"], ["targets"], ["soap"])
        }
        assert features <= {"asgigate.targets.base", "asgigate.targets.base.Target"}, (module, features)
