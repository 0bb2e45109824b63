"""gRPC status codes and HTTP statuses, and error replies as google.rpc.Status JSON.

The mapping is the one google.rpc.Code documents (and grpc-gateway and Envoy use). Errors the gateway raises
itself (a bad JSON body, a rate limit, the upstream being down) get the same shape on transcoded routes: the
gRPC code that matches their HTTP status, their message, and a google.rpc.ErrorInfo detail whose `reason` is
the gateway's stable code.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor_pool import DescriptorPool
from starlette.responses import Response

from ..errors import GatewayError, GrpcStatusError

if TYPE_CHECKING:
    from ..exchange import Exchange

__all__: list[str] = []  # internal: google.rpc.Status replies

logger = logging.getLogger("asgigate")

CODE_NAMES = (
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
    "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
)  # fmt: skip

# google.rpc.Code number -> HTTP status
HTTP_STATUS = {
    0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400,
    12: 501, 13: 500, 14: 503, 15: 500, 16: 401,
}  # fmt: skip

# HTTP status -> google.rpc.Code, for the gateway's own errors
_FROM_HTTP = {
    400: 3, 401: 16, 403: 7, 404: 5, 405: 12, 408: 4, 409: 10, 413: 8, 415: 3, 429: 8, 499: 1,
    501: 12, 502: 14, 503: 14, 504: 4,
}  # fmt: skip

STATUS_DETAILS_KEY = "grpc-status-details-bin"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"


def http_status(code: int) -> int:
    return HTTP_STATUS.get(code, 500)


def code_for_http(status: int) -> int:
    if status in _FROM_HTTP:
        return _FROM_HTTP[status]
    return 3 if 400 <= status < 500 else 2


def decode_details(blob: bytes, pool: DescriptorPool | None) -> tuple[list[dict[str, Any]], str | None]:
    """The details of a grpc-status-details-bin trailer as JSON (`@type` first), and the message it carries."""
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2  # noqa: F401  (registers the standard detail types)

    try:
        status = status_pb2.Status.FromString(blob)
    except Exception:
        logger.warning("ignoring a malformed grpc-status-details-bin trailer")
        return [], None
    details = []
    for detail in status.details:
        details.append(detail_json(detail, pool, any_pb2))
    return details, status.message or None


def detail_json(detail: Any, pool: DescriptorPool | None, any_pb2: Any) -> dict[str, Any]:
    for candidate in (pool, None):
        try:
            out: dict[str, Any] = json_format.MessageToDict(
                detail, preserving_proto_field_name=False, descriptor_pool=candidate
            )
            return out
        except (TypeError, KeyError, json_format.Error):
            continue
    # A type neither pool knows: keep it, as the Any's own JSON form for unknown types would (bytes in base64).
    return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}


def status_body(exchange: Exchange, error: GatewayError) -> dict[str, Any]:
    """The google.rpc.Status JSON for an error: the backend's own status, or one made for a gateway error."""
    if isinstance(error, GrpcStatusError):
        return {"code": error.grpc_code, "message": error.grpc_message, "details": list(error.details)}
    info: dict[str, Any] = {"@type": ERROR_INFO_TYPE, "reason": error.code, "domain": "asgigate"}
    if exchange.request_id:
        info["metadata"] = {"request_id": exchange.request_id}
    return {
        "code": code_for_http(error.status_code),
        "message": error.detail or error.title,
        "details": [info],
    }


def status_reply(exchange: Exchange, error: GatewayError) -> Response:
    """The error renderer of transcoded routes (their default `errors=`): google.rpc.Status as JSON."""
    headers = dict(error.headers)
    if isinstance(error, GrpcStatusError):
        headers.update(error.response_headers)
    return Response(
        orjson.dumps(status_body(exchange, error)),
        status_code=error.status_code,
        headers=headers or None,
        media_type="application/json",
    )
