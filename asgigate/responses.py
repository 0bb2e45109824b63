"""Responses the gateway makes itself: orjson JSON and RFC 9457 problem details."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from starlette.responses import Response

if TYPE_CHECKING:
    from .errors import GatewayError
    from .exchange import Exchange

__all__ = ["JSONResponse", "ProblemResponse", "problem_response"]


class JSONResponse(Response):
    """A JSON response serialized with orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def problem_response(exchange: Exchange, error: GatewayError) -> Response:
    """The default error reply: RFC 9457 problem details carrying the stable code and the request id."""
    body: dict[str, Any] = {
        "type": f"urn:asgigate:error:{error.code}",
        "title": error.title,
        "status": error.status_code,
        "code": error.code,
    }
    if error.detail:
        body["detail"] = error.detail
    if exchange.request_id:
        body["request_id"] = exchange.request_id
    return ProblemResponse(body, status_code=error.status_code, headers=error.headers or None)
