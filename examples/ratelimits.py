"""Rate limits and per-consumer plans: a public API with free and pro tiers, a burst limit per client address,
and a cap on concurrent report downloads.

    python examples/ratelimits.py            # serves on http://127.0.0.1:8000 (PORT=... to change)
    REDIS_URL=redis://127.0.0.1:6379 python examples/ratelimits.py   # counters shared by every worker

Consumers send `x-api-key`; the key names the consumer and its plan (a real gateway would look them up, or
use the identity set by an authentication policy). Every reply carries the `RateLimit-Policy` / `RateLimit`
and `X-RateLimit-*` headers; a refusal is a 429 problem reply with `Retry-After`, `rate_limited` for a rate
and `quota_exceeded` for a used-up quota. Quotas turn over on the UTC calendar: the daily one at midnight,
the monthly one on the 1st.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from asgigate import (
    ConcurrencyLimit,
    Direct,
    Exchange,
    Gateway,
    Group,
    Policy,
    Proxy,
    RateLimit,
    Route,
    Unauthorized,
    Upstream,
)
from asgigate.policies.ratelimit import Plan, RateLimitStore, by_client_ip, by_subject
from asgigate.testing import serve_in_thread

# API key → (consumer, plan). Stands in for a consumer database or an authentication policy.
CONSUMERS = {"free-key": ("ada", "free"), "pro-key": ("grace", "pro")}


class ApiKeyConsumer(Policy):
    """Sets the consumer as the request's identity; requests without a known key stay anonymous."""

    async def on_request(self, exchange: Exchange) -> Response | None:
        key = exchange.headers.get("x-api-key")
        if key is not None:
            if key not in CONSUMERS:
                raise Unauthorized("Unknown API key.")
            name, plan = CONSUMERS[key]
            exchange.identity = {"sub": name, "plan": plan}
        return None


def plan_of(exchange: Exchange) -> str | None:
    return exchange.identity["plan"] if exchange.identity else None


# --8<-- [start:gateway]
class PublicAPI(Gateway):
    def __init__(self, catalog_url: str, store: RateLimitStore | None = None) -> None:
        super().__init__(trusted_proxies=["127.0.0.1/32"])
        self.catalog = Upstream(catalog_url, name="catalog")
        self.store = store  # None: counters in this process's memory

    def policies(self) -> Sequence[Policy]:
        return [
            ApiKeyConsumer(),
            # every client address: a burst limit in front of everything, whoever the consumer is
            RateLimit("20/second", key=by_client_ip, store=self.store, name="edge"),
        ]

    def routes(self) -> Sequence[Route | Group]:
        plans = RateLimit(
            plans={
                # quotas follow the UTC calendar: a day from midnight, a month from the 1st
                "free": Plan(rate="2/second", quota="5/day", calendar=True),
                "pro": Plan(rate="10/second", quota=["1000/day", "20000/month"], calendar=True),
            },
            plan=plan_of,
            key=by_subject,
            missing_key=Unauthorized,  # the API needs a key: anonymous requests are refused
            store=self.store,
            name="plans",
        )
        return [
            Route("/healthz", Direct(json={"ok": True}), skip={RateLimit}),
            Group("/api", [
                Route("/products", Proxy(self.catalog, strip_prefix="/api")),
                Route("/reports/{name}", Proxy(self.catalog, strip_prefix="/api"),
                      # two reports at a time per consumer: across every worker when the store is Redis
                      policies=[ConcurrencyLimit(2, key=by_subject, store=self.store, name="reports")]),
            ], policies=[plans]),
        ]
# --8<-- [end:gateway]


def build_gateway(catalog_url: str, redis_url: str | None = None) -> PublicAPI:
    store = RateLimitStore(redis_url, timeout=0.1, on_failure="local") if redis_url else None
    return PublicAPI(catalog_url, store)


app = build_gateway(os.environ.get("CATALOG_URL", "http://127.0.0.1:9000"), os.environ.get("REDIS_URL"))


# --- a sample catalog service -----------------------------------------------------------------------------


async def products(request: Request) -> JSONResponse:
    return JSONResponse({"products": [{"id": 1, "name": "Teapot"}, {"id": 2, "name": "Kettle"}]})


async def report(request: Request) -> JSONResponse:
    await asyncio.sleep(float(request.query_params.get("seconds", "0")))  # a slow report
    return JSONResponse({"report": request.path_params["name"]})


catalog_app = Starlette(routes=[StarletteRoute("/products", products), StarletteRoute("/reports/{name}", report)])


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    gateway = build_gateway(serve_in_thread(catalog_app), os.environ.get("REDIS_URL"))
    base = f"http://127.0.0.1:{port}"
    print(f"gateway on {base}; try:", flush=True)
    for line in (
        f"curl -i {base}/api/products -H 'x-api-key: free-key'    # 5 a day, then 429 quota_exceeded",
        f"curl -i {base}/api/products -H 'x-api-key: pro-key'",
        f"curl -i {base}/api/products                             # 401: the API needs a key",
    ):
        print("  " + line, flush=True)
    uvicorn.run(gateway, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
