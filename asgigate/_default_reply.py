"""The built-in error reply, and the values that error templates' placeholders stand for.

Problem+json (RFC 9457) for API clients; for clients that prefer HTML (browsers), a small readable page with the
status, the title, the message, the code and the request id. The page is itself a template in the same syntax
users write theirs in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from ._accept import negotiate
from ._templates import TextTemplate, escape_markup
from .responses import problem_response

if TYPE_CHECKING:
    from .errors import GatewayError
    from .exchange import Exchange

PLACEHOLDERS = frozenset(
    {"code", "detail", "message", "method", "path", "request_id", "retry_after", "route", "status", "timestamp",
     "title", "type"}
)


async def default_reply(exchange: Exchange, error: GatewayError) -> Response:
    """The built-in reply (`Gateway.render_error`): problem+json, or a readable HTML page when the client prefers it."""
    return builtin_reply(exchange, error, negotiate(exchange.headers.get("accept", ""), ["json", "html"]))


def builtin_reply(exchange: Exchange, error: GatewayError, fmt: str) -> Response:
    if fmt != "html":
        return problem_response(exchange, error)
    values = error_values(exchange, error)
    meta = (_META_WITH_ID if exchange.request_id else _META).render(values, escape_markup)
    page = _PAGE.render(values, escape_markup).replace("<!--meta-->", meta)  # values are escaped: no "<!--" in them
    return Response(page, status_code=error.status_code, headers=error.headers or None,
                    media_type="text/html; charset=utf-8")


def error_values(exchange: Exchange, error: GatewayError) -> dict[str, Any]:
    """The placeholder values for one error reply."""
    retry_after: Any = getattr(error, "retry_after", None)
    if retry_after is None:
        header = error.headers.get("retry-after")
        retry_after = int(header) if header and header.isdigit() else header
    return {
        "code": error.code,
        "status": error.status_code,
        "title": error.title,
        "detail": error.detail,
        "message": error.detail or error.title,
        "type": f"urn:asgigate:error:{error.code}",
        "request_id": exchange.request_id or None,
        "route": exchange.route.name if exchange.route is not None else None,
        "method": exchange.method,
        "path": exchange.scope.get("path"),
        "retry_after": retry_after,
        "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


_PAGE = TextTemplate(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} {title}</title>
<style>
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;max-width:40rem;margin:12vh auto;
padding:0 1.5rem}
h1{font-size:1.5rem;margin:0 0 .5rem}
p{margin:0 0 1rem;white-space:pre-wrap}
.meta{color:#656d76;font-size:.875rem}
</style>
</head>
<body>
<h1>{status} {title}</h1>
<p>{message}</p>
<p class="meta"><!--meta--></p>
</body>
</html>
""",
    PLACEHOLDERS,
)
_META = TextTemplate("Error <code>{code}</code>", PLACEHOLDERS)
_META_WITH_ID = TextTemplate("Error <code>{code}</code><br>Request ID <code>{request_id}</code>", PLACEHOLDERS)
