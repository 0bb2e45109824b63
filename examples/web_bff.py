"""A backend-for-frontend for a browser app: users sign in with your OpenID provider; the API gets their token.

    OIDC_ISSUER=https://login.example.com OIDC_CLIENT_ID=web OIDC_CLIENT_SECRET=... \\
    SESSION_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))') \\
    python examples/web_bff.py               # serves on http://127.0.0.1:8000 (PORT=... to change)
    REDIS_URL=redis://127.0.0.1:6379 ...     # sessions in Redis, shared by every replica (default: in cookies)

Register ``http://127.0.0.1:8000/auth/callback`` as the client's redirect URI and ``http://127.0.0.1:8000/``
as its post-logout redirect URI. The page at ``/`` needs a login: the browser is sent to the provider and comes
back signed in. Its script calls ``/api/me``; the gateway forwards the call to a sample "orders API" (started
on a free local port) with the user's access token as ``Authorization: Bearer``. The browser never sees a
token, only HttpOnly session cookies (the session sealed in them, or with REDIS_URL only its sealed id).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as StarletteRoute

from asgigate import Direct, Gateway, Group, OIDCLogin, Proxy, Route, SessionAuth, TokenRelay, Upstream
from asgigate.policies.auth import RedisSessions
from asgigate.testing import serve_in_thread

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Orders</title></head>
<body>
  <h1>Your orders</h1>
  <p id="me">loading...</p>
  <form method="post" action="/auth/logout"><button id="logout">Sign out</button></form>
  <script>
    fetch("/api/me").then(r => r.json()).then(me => {
      document.getElementById("me").textContent = `Signed in as ${me.user}, ${me.orders.length} orders`;
    });
  </script>
</body></html>
"""


# --8<-- [start:gateway]
class WebBFF(Gateway):
    def __init__(self, api_url: str, *, issuer: str, client_id: str, client_secret: str, secret: str,
                 base_url: str | None = None, scope: str = "openid", redis_url: str | None = None) -> None:
        super().__init__()
        self.api = Upstream(api_url, name="orders-api", timeout=5.0)
        # Sessions are sealed into the browser's cookies by default; Redis shares them between replicas.
        store = RedisSessions(redis_url) if redis_url else None
        self.login = OIDCLogin(issuer=issuer, client_id=client_id, client_secret=client_secret, secret=secret,
                               base_url=base_url, scope=scope, api_paths=["/api"], store=store)

    def policies(self) -> list[Any]:
        # Every route needs a session (except the login's own routes), and calls upstream with its token.
        return [SessionAuth(self.login), TokenRelay(self.login)]

    def routes(self) -> Sequence[Route | Group]:
        return [
            self.login.routes(),  # /auth/login, /auth/callback, /auth/logout
            Route("/healthz", Direct(json={"ok": True}), skip={SessionAuth, TokenRelay}),
            Route("/", Direct(text=PAGE, content_type="text/html; charset=utf-8"), methods=["GET"]),
            Route("/api/{rest:path}", Proxy(self.api, strip_prefix="/api")),
        ]
# --8<-- [end:gateway]


def build_gateway(api_url: str, env: dict[str, str] | None = None) -> WebBFF:
    env = dict(os.environ if env is None else env)
    return WebBFF(api_url, issuer=env["OIDC_ISSUER"], client_id=env["OIDC_CLIENT_ID"],
                  client_secret=env["OIDC_CLIENT_SECRET"], secret=env["SESSION_SECRET"],
                  base_url=env.get("BASE_URL"), scope=env.get("OIDC_SCOPE", "openid"),
                  redis_url=env.get("REDIS_URL"))


# --- a sample upstream: an API that trusts the gateway's bearer token ---------------------------------------


def claims_of(request: Request) -> dict[str, Any]:
    """The token's claims. A demo shortcut: a real API verifies the token, e.g. with asgigate's BearerAuth."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return {}
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


async def me(request: Request) -> JSONResponse:
    claims = claims_of(request)
    if not claims:
        return JSONResponse({"error": "no token"}, status_code=401)
    return JSONResponse({"user": claims.get("sub"), "orders": [{"id": 1, "total": 1250}]})


api_app = Starlette(routes=[StarletteRoute("/me", me)])


def main() -> None:
    missing = [name for name in ("OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "SESSION_SECRET")
               if not os.environ.get(name)]
    if missing:
        print(f"set {', '.join(missing)} (see the top of {__file__})", file=sys.stderr)
        raise SystemExit(2)
    port = int(os.environ.get("PORT", "8000"))
    gateway = build_gateway(serve_in_thread(api_app))
    print(f"open http://127.0.0.1:{port}/ in a browser", flush=True)
    uvicorn.run(gateway, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
