"""Every reply the gateway makes itself, in your format: one JSON envelope, an HTML page for browsers.

    python examples/custom_errors.py         # serves on http://127.0.0.1:8000 (PORT=... to change)

One `errors=` setting on the gateway shapes every error reply it makes: 404s, refused credentials, a retired
API version, maintenance mode, upstream timeouts, and the catalogue service's own 5xx pages, which are replaced
(their bodies never reach the client). API clients get the JSON envelope; browsers get the HTML page. A route
for an old mobile app keeps that app's error format with a function, and a reviews route answers from examples
until its backend exists. A sample "catalog" service starts first, on a free local port.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from asgigate import (
    Direct,
    ErrorReplies,
    Exchange,
    Gateway,
    GatewayError,
    Group,
    InterceptErrors,
    Mock,
    NotFound,
    Policy,
    Proxy,
    Reply,
    Route,
    Terminate,
    Unauthorized,
    Upstream,
    UpstreamError,
)
from asgigate.testing import serve_in_thread

# --8<-- [start:errors]
# The one JSON shape of every error the gateway sends. A string that is exactly one placeholder keeps the
# value's type: "{status}" is the number 404, a missing "{retry_after}" is null.
ENVELOPE = {
    "error": {
        "code": "{code}",
        "status": "{status}",
        "message": "{message}",
        "request_id": "{request_id}",
        "retry_after": "{retry_after}",
        "docs": "https://docs.example.com/errors#{code}",
    }
}

# What a browser sees instead. Values are HTML-escaped; CSS braces are not placeholders.
ERROR_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{status} {title} - Example Shop</title>
<style>body{font-family:system-ui,sans-serif;max-width:36rem;margin:10vh auto;color:#222}
small{color:#777}</style></head>
<body>
<h1>{title}</h1>
<p>{message}</p>
<p><a href="/">Back to the shop</a></p>
<small>Error {code} &middot; request {request_id}</small>
</body>
</html>
"""

# Failures (not refusals like maintenance mode) never say what went wrong inside: the request id is what
# support needs, and the server log has the rest.
SORRY = Reply(detail="Something went wrong on our side. Please quote the request id if you contact us.")

SHOP_ERRORS = ErrorReplies(
    Reply(json=ENVELOPE, html=ERROR_PAGE),  # every error
    on={
        UpstreamError: SORRY,  # this class and its subclasses (timeouts, connection failures, ...)
        "internal_error": SORRY,  # an exception in our own code
        NotFound: Reply(detail="There is nothing at {path}."),
    },
)
# --8<-- [end:errors]


def legacy_errors(exchange: Exchange, error: GatewayError) -> Response:
    """The error format version 1 of the mobile app parses; a function, for full control."""
    return JSONResponse({"ok": False, "err": error.code.upper()}, status_code=error.status_code)


class ApiKey(Policy):
    def __init__(self, key: str) -> None:
        self.key = key

    async def on_request(self, exchange: Exchange) -> Response | None:
        if exchange.headers.get("x-api-key") != self.key:
            # the challenge goes out as WWW-Authenticate, whatever the body format
            raise Unauthorized("A valid x-api-key header is required.", challenge='ApiKey realm="shop"')
        return None


# --8<-- [start:gateway]
class Shop(Gateway):
    def __init__(self, catalog_url: str, admin_key: str = "admin-key") -> None:
        super().__init__(errors=SHOP_ERRORS)
        self.catalog = Upstream(catalog_url, name="catalog", timeout=2.0)
        self.admin = ApiKey(admin_key)
        # Off until an operator switches it on (see /admin/maintenance); monitoring gets through regardless.
        self.maintenance = Terminate(503, "The shop is down for maintenance.", retry_after=600,
                                     reason="maintenance", except_clients=["10.20.0.0/16"], enabled=False)

    def policies(self) -> Sequence[Policy]:
        return [self.maintenance]

    def routes(self) -> Sequence[Route | Group]:
        return [
            Route("/healthz", Direct(json={"ok": True}), skip={Terminate}),
            Route("/admin/maintenance", self.switch_maintenance, methods=["POST"], policies=[self.admin],
                  skip={Terminate}),
            Group("/api/v1", [Route("/{rest:path}", Direct(status=204))],
                  policies=[Terminate(410, "API v1 was retired; use /api/v2.", reason="retired_version")]),
            Group("/api/v2", [
                # the catalogue's own 5xx pages are replaced by the gateway's reply; its 404s pass as they are
                Route("/products/{rest:path}",
                      Proxy(self.catalog, strip_prefix="/api/v2", intercept_errors=InterceptErrors(replace=["5xx"]))),
                # no backend yet: answer from examples (`Prefer: example=empty` picks the other one)
                Route("/reviews/{product:int}",
                      Mock({"product": "{product}", "reviews": [{"stars": 5, "text": "Lovely."}]},
                           examples={"empty": {"product": "{product}", "reviews": []}})),
                Route("/orders", Direct(json=[]), policies=[self.admin]),
            ]),
            Group("/mobile/v1", [
                Route("/products/{rest:path}", Proxy(self.catalog, strip_prefix="/mobile/v1",
                                                     intercept_errors=InterceptErrors(replace=["5xx"]))),
            ], errors=legacy_errors),
        ]

    async def switch_maintenance(self, exchange: Exchange) -> Response:
        if exchange.query_params.get("on") == "1":
            self.maintenance.enable()
        else:
            self.maintenance.disable()
        return JSONResponse({"maintenance": self.maintenance.enabled})
# --8<-- [end:gateway]


def build_gateway(catalog_url: str) -> Shop:
    return Shop(catalog_url)


app = build_gateway(os.environ.get("CATALOG_URL", "http://127.0.0.1:9000"))


# --- a sample catalogue service, whose errors are not fit for clients ------------------------------------------

PRODUCTS = {1: "Green tea", 2: "Black tea"}


async def product(request: Request) -> Response:
    product_id = int(request.path_params["id"])
    if product_id == 500:
        # what a framework in debug mode shows: exactly what must never reach a client
        return HTMLResponse("<h1>Traceback</h1><pre>psycopg.OperationalError: password=hunter2</pre>", 500)
    if product_id not in PRODUCTS:
        return JSONResponse({"error": "no such product"}, status_code=404)
    return JSONResponse({"id": product_id, "name": PRODUCTS[product_id]})


catalog_app = Starlette(routes=[StarletteRoute("/products/{id:int}", product)])


def main() -> None:
    port = int(os.environ.get("PORT", "8000"))
    gateway = build_gateway(serve_in_thread(catalog_app))
    base = f"http://127.0.0.1:{port}"
    print(f"gateway on {base}; try:", flush=True)
    for line in (
        f"curl -i {base}/nowhere                                   # 404 in the JSON envelope",
        f"curl -i {base}/nowhere -H 'Accept: text/html'            # the HTML page",
        f"curl -i {base}/api/v2/products/500                       # the catalogue's 500, replaced",
        f"curl -i {base}/api/v2/orders                             # 401 with WWW-Authenticate",
        f"curl -i {base}/api/v1/products/1                         # 410: v1 was retired",
        f"curl -i {base}/api/v2/reviews/1 -H 'Prefer: example=empty'",
        f"curl -i {base}/mobile/v1/products/500                    # the same, in the old app's format",
        f"curl -i -X POST '{base}/admin/maintenance?on=1' -H 'x-api-key: admin-key'",
    ):
        print("  " + line, flush=True)
    uvicorn.run(gateway, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
