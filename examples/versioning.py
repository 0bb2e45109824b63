"""API versioning at the edge: by path (`/v1/...`, `/v2/...`) and by header (`X-API-Version: 2`).

    python examples/versioning.py            # serves on http://127.0.0.1:8000 (PORT=... to change)

Two sample "orders" services stand in for the old and the new backend. Clients that call the unversioned
path `/orders/...` get v1 unless they send `X-API-Version: 2`; an unknown version is a 400 problem reply.
The routes are tried in order and the first match wins, so the header-specific routes come before the
default ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from asgigate import BadRequest, Exchange, Gateway, Group, Proxy, Route, Upstream
from asgigate.testing import serve_in_thread


async def unsupported_version(exchange: Exchange) -> Response:
    """An async handler as a route target: it can answer, or raise a GatewayError like this one."""
    raise BadRequest(f"Unsupported API version {exchange.headers['x-api-version']!r}; use 1 or 2.")


def orders_routes(upstream: Upstream, prefix: str = "") -> list[Route]:
    """The routes of one API version. `prefix` is what the gateway removes before forwarding."""

    def proxy() -> Proxy:
        return Proxy(upstream, strip_prefix=prefix) if prefix else Proxy(upstream)

    return [
        Route("/orders", proxy(), methods=["GET"]),
        Route("/orders/{id:int}", proxy(), methods=["GET"]),
    ]


# --8<-- [start:routes]
class VersionedAPI(Gateway):
    def __init__(self, v1_url: str, v2_url: str) -> None:
        super().__init__()
        self.v1 = Upstream(v1_url, name="orders-v1")
        self.v2 = Upstream(v2_url, name="orders-v2")

    def routes(self) -> Sequence[Route | Group]:
        return [
            # 1. by path: the version is part of the URL and stripped before forwarding
            Group("/v1", orders_routes(self.v1, prefix="/v1")),
            Group("/v2", orders_routes(self.v2, prefix="/v2")),
            # 2. by header, on the same unversioned paths: first match wins, so specific routes come first
            Group("", orders_routes(self.v2), headers={"x-api-version": "2"}),
            Group("", orders_routes(self.v1), headers={"x-api-version": "1"}),
            Route("/orders/{rest:path}", unsupported_version, headers={"x-api-version": True}),
            Route("/orders", unsupported_version, headers={"x-api-version": True}),
            # 3. no header: the default version
            Group("", orders_routes(self.v1)),
        ]
# --8<-- [end:routes]


def build_gateway(v1_url: str, v2_url: str) -> VersionedAPI:
    return VersionedAPI(v1_url, v2_url)


app = build_gateway(
    os.environ.get("ORDERS_V1_URL", "http://127.0.0.1:9001"),
    os.environ.get("ORDERS_V2_URL", "http://127.0.0.1:9002"),
)


# --- two sample upstreams: the same orders, in the v1 and the v2 shape ------------------------------------

ORDERS = {1: 1250, 2: 990}  # order id → total in cents


def orders_service(version: int) -> Starlette:
    def render(order_id: int) -> dict[str, object]:
        cents = ORDERS[order_id]
        if version == 1:
            return {"id": order_id, "total": f"{cents / 100:.2f}"}
        return {"id": order_id, "total": {"amount": cents, "currency": "EUR"}, "api_version": 2}

    async def list_orders(request: Request) -> JSONResponse:
        return JSONResponse({"orders": [render(i) for i in ORDERS], "path": request.url.path})

    async def get_order(request: Request) -> JSONResponse:
        order_id = int(request.path_params["id"])
        if order_id not in ORDERS:
            return JSONResponse({"error": "no such order"}, status_code=404)
        return JSONResponse(render(order_id))

    return Starlette(
        routes=[StarletteRoute("/orders", list_orders), StarletteRoute("/orders/{id:int}", get_order)]
    )


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    gateway = build_gateway(serve_in_thread(orders_service(1)), serve_in_thread(orders_service(2)))
    base = f"http://127.0.0.1:{port}"
    print(f"gateway on {base}; try:", flush=True)
    for line in (
        f"curl -i {base}/v1/orders/1",
        f"curl -i {base}/v2/orders/1",
        f"curl -i {base}/orders/1                          # v1, the default",
        f"curl -i {base}/orders/1 -H 'X-API-Version: 2'",
        f"curl -i {base}/orders/1 -H 'X-API-Version: 3'    # 400",
    ):
        print("  " + line, flush=True)
    uvicorn.run(gateway, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
