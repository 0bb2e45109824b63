"""An API gateway that checks JWT bearer tokens (or API keys) at the edge and tells the backend who called.

    python examples/api_gateway_jwt.py       # serves on http://127.0.0.1:8000 (PORT=... to change)

With OIDC_ISSUER and OIDC_AUDIENCE set, the gateway discovers the signing keys from your identity provider
(``{issuer}/.well-known/openid-configuration``). Without them, it runs as a self-contained demo: it makes a
signing key at startup, trusts only that key (static keys, no discovery), and prints ready-made tokens to curl
with. A sample "orders" service starts first, on a free local port; it trusts the `x-user-id` header because
only the gateway can set it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from typing import Any

import uvicorn
from joserfc import jwt
from joserfc.jwk import RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute

from asgigate import (
    AnyAuth,
    ApiKeyAuth,
    Authorize,
    BearerAuth,
    Direct,
    ForwardIdentity,
    Gateway,
    Group,
    Proxy,
    Route,
    Upstream,
)
from asgigate.policies.auth import Authenticator, Consumer
from asgigate.testing import serve_in_thread

DEMO_ISSUER = "https://login.example.com"
DEMO_AUDIENCE = "orders-api"
# API keys are configured hashed: hash_api_key("rk_demo_4f1d9a7c2b8e6d3a") gives this value.
REPORTING_KEY_HASH = "sha256:0882bbadc3d15ba01f5e51782c09934004d5f20caf5bb16b2f5c01577dbb51b4"


# --8<-- [start:gateway]
class OrdersAPI(Gateway):
    def __init__(self, orders_url: str, *, issuer: str, audience: str, keys: Any = None,
                 api_key_hashes: Iterable[str] = ()) -> None:
        super().__init__()
        self.orders = Upstream(orders_url, name="orders", timeout=5.0)
        # keys=None: discover the keys from the issuer; otherwise trust exactly these (JWKS, JWK or PEM).
        self.bearer = BearerAuth(issuer=issuer, audience=audience, algorithms=["RS256", "ES256"], keys=keys)
        self.api_keys = ApiKeyAuth([
            Consumer("reporting", keys=list(api_key_hashes), scopes=frozenset({"orders:read"}),
                     metadata={"plan": "internal"}),
        ])

    def policies(self) -> list[Any]:
        return [
            AnyAuth(self.bearer, self.api_keys),  # a bearer token, or else an API key
            # What the backend learns about the caller; clients' own copies of these headers are removed.
            ForwardIdentity({"x-user-id": "subject", "x-client-id": "client_id", "x-scopes": "scopes",
                             "x-consumer": "consumer"}),
        ]

    def routes(self) -> Sequence[Route | Group]:
        orders = Proxy(self.orders, strip_prefix="/api")
        return [
            Route("/healthz", Direct(json={"ok": True}), skip={Authenticator, ForwardIdentity}),
            Group("/api", [
                Route("/orders", orders, methods=["GET"], policies=[Authorize(scopes=["orders:read"])]),
                Route("/orders", orders, methods=["POST"], policies=[Authorize(scopes=["orders:write"])]),
                Route("/admin/{rest:path}", orders, policies=[Authorize(roles=["admin"])]),
            ]),
        ]
# --8<-- [end:gateway]


# --- the demo signing key and tokens (a real setup gets its tokens from the identity provider) ----------------

DEMO_KEY = RSAKey.generate_key(2048, parameters={"kid": "demo-1", "alg": "RS256", "use": "sig"})


def demo_token(subject: str, scopes: str, roles: Sequence[str] = (), ttl: int = 3600) -> str:
    now = int(time.time())
    claims = {"iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": subject, "client_id": "demo-app",
              "scope": scopes, "roles": list(roles), "iat": now, "exp": now + ttl}
    return jwt.encode({"alg": "RS256", "kid": "demo-1"}, claims, DEMO_KEY, algorithms=["RS256"])


def build_gateway(orders_url: str) -> OrdersAPI:
    issuer = os.environ.get("OIDC_ISSUER")
    if issuer:
        return OrdersAPI(orders_url, issuer=issuer, audience=os.environ.get("OIDC_AUDIENCE", DEMO_AUDIENCE))
    return OrdersAPI(orders_url, issuer=DEMO_ISSUER, audience=DEMO_AUDIENCE,
                     keys={"keys": [DEMO_KEY.as_dict(private=False)]}, api_key_hashes=[REPORTING_KEY_HASH])


app = build_gateway(os.environ.get("ORDERS_URL", "http://127.0.0.1:9000"))


# --- a sample upstream ---------------------------------------------------------------------------------------

ORDERS: list[dict[str, Any]] = [{"id": 1, "owner": "alice", "total": 1250}]


async def list_orders(request: Request) -> JSONResponse:
    return JSONResponse({"orders": ORDERS, "caller": request.headers.get("x-user-id"),
                         "consumer": request.headers.get("x-consumer"), "scopes": request.headers.get("x-scopes")})


async def create_order(request: Request) -> JSONResponse:
    order = {"id": len(ORDERS) + 1, "owner": request.headers.get("x-user-id"), **(await request.json())}
    ORDERS.append(order)
    return JSONResponse(order, status_code=201)


async def admin_stats(request: Request) -> JSONResponse:
    return JSONResponse({"orders": len(ORDERS), "caller": request.headers.get("x-user-id")})


orders_app = Starlette(routes=[
    StarletteRoute("/orders", list_orders, methods=["GET"]),
    StarletteRoute("/orders", create_order, methods=["POST"]),
    StarletteRoute("/admin/stats", admin_stats),
])


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    gateway = build_gateway(serve_in_thread(orders_app))
    base = f"http://127.0.0.1:{port}"
    print(f"gateway on {base}; try:", flush=True)
    lines = [f"curl -i {base}/api/orders                  # 401: no credentials"]
    if "OIDC_ISSUER" not in os.environ:
        reader = demo_token("alice", "orders:read")
        writer = demo_token("bob", "orders:read orders:write", roles=["admin"])
        lines += [
            f"curl -i {base}/api/orders -H 'Authorization: Bearer {reader}'",
            f"curl -i {base}/api/orders -X POST -d '{{\"total\": 990}}' -H 'Authorization: Bearer {reader}'"
            "   # 403: no orders:write",
            f"curl -i {base}/api/admin/stats -H 'Authorization: Bearer {writer}'",
            f"curl -i {base}/api/orders -H 'x-api-key: rk_demo_4f1d9a7c2b8e6d3a'",
        ]
    for line in lines:
        print("  " + line, flush=True)
    uvicorn.run(gateway, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
