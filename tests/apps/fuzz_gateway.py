"""A realistic gateway for the fuzz tests (tests/test_fuzz_gateway.py): most route kinds and the usual policies.

Served by uvicorn in its own process (``apps.fuzz_gateway:app``, upstream from UPSTREAM_URL) and called in-process
(`FuzzGateway(upstream_url)`). Nothing in it answers with a 5xx on purpose: every 5xx is a finding.
"""

from __future__ import annotations

import os

from asgigate import (
    ConcurrencyLimit,
    Direct,
    Exchange,
    Forbidden,
    Gateway,
    Group,
    Metrics,
    Policy,
    Proxy,
    RateLimit,
    Redirect,
    ResponseHead,
    Route,
    Upstream,
)
from asgigate.policies.ratelimit import by_header
from asgigate.responses import JSONResponse


class RequireTeam(Policy):
    """Reads a header on the way in, adds one on the way out: the usual hook policy."""

    async def on_request(self, exchange: Exchange) -> None:
        if exchange.headers.get("x-team", "") == "blocked":
            raise Forbidden("This team is blocked.")
        exchange.state["team"] = exchange.headers.get("x-team", "none")

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        head.headers["x-team-checked"] = "yes" if "team" in exchange.state else "no"


async def describe(exchange: Exchange) -> JSONResponse:
    """A local handler that reads everything a handler usually reads."""
    return JSONResponse({
        "params": {name: str(value) for name, value in exchange.params.items()},
        "query": list(exchange.query_params.multi_items())[:20],
        "client": exchange.client_ip,
        "host": exchange.headers.get("host"),
        "method": exchange.method,
    })


class FuzzGateway(Gateway):
    def __init__(self, upstream_url: str) -> None:
        super().__init__(max_body_size=256 * 1024, trusted_proxies=["127.0.0.1/32"], metrics=Metrics())
        self.backend = Upstream(upstream_url, timeout=10.0)

    def policies(self) -> list[Policy]:
        return [RateLimit("100000/second", headers="ietf")]

    def routes(self) -> list[Route | Group]:
        assert self.metrics is not None
        return [
            Route("/healthz", Direct(json={"ok": True}), methods=["GET"]),
            Route("/metrics", self.metrics.endpoint(), methods=["GET"]),
            Route("/items/{id:int}", describe, methods=["GET", "DELETE"]),
            Route("/items/{id:int}/files/{name}.{ext}", describe),
            Route("/prices/{amount:float}", describe),
            Route("/sessions/{sid:uuid}", describe),
            Route("/users/{name}", describe, host="*.example.com"),
            Route("/old/{id:int}", Redirect("/items/{id}", status=308)),
            Route("/search", describe, query={"q": True}),
            Route("/static/{rest:path}", Proxy(self.backend, strip_prefix="/static")),
            Route("/ws/{rest:path}", Proxy(self.backend, strip_prefix="/ws")),
            Group(
                "/api",
                [
                    Route("/users/{id:int}", Proxy(self.backend, path="/echo/users/{id}")),
                    Route("/{rest:path}", Proxy(self.backend, strip_prefix="/api")),
                ],
                policies=[RequireTeam(), RateLimit("1000/second", key=by_header("x-team"), missing_key="allow"),
                          ConcurrencyLimit(64)],
            ),
            Group("/limited", [Route("/{rest:path}", Direct(text="ok"))], policies=[RateLimit("20/second")]),
        ]


app = FuzzGateway(os.environ.get("UPSTREAM_URL", "http://127.0.0.1:9"))
