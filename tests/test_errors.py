"""The error tree and the one renderer every error reply goes through (default, gateway override, per route)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.responses import PlainTextResponse, Response

from asgigate import (
    ConfigurationError,
    Direct,
    Exchange,
    Forbidden,
    Gateway,
    GatewayError,
    Group,
    MethodNotAllowed,
    Policy,
    RateLimited,
    Route,
    UpstreamTimeout,
    errors,
)
from asgigate.responses import problem_response
from asgigate.testing import BackgroundServer

from servers import raw_get

# The stable contract: status and code of every class. Codes are what clients, logs and metrics key on.
CONTRACT: dict[str, tuple[str | None, int, str]] = {
    "GatewayError": (None, 500, "internal_error"),
    "ClientError": ("GatewayError", 400, "bad_request"),
    "BadRequest": ("ClientError", 400, "bad_request"),
    "InvalidPath": ("BadRequest", 400, "invalid_path"),
    "InvalidBody": ("BadRequest", 400, "invalid_body"),
    "InvalidRequest": ("BadRequest", 400, "invalid_request"),
    "Unauthorized": ("ClientError", 401, "unauthorized"),
    "InvalidToken": ("Unauthorized", 401, "invalid_token"),
    "ExpiredToken": ("InvalidToken", 401, "expired_token"),
    "Forbidden": ("ClientError", 403, "forbidden"),
    "InsufficientScope": ("Forbidden", 403, "insufficient_scope"),
    "NotFound": ("ClientError", 404, "no_route"),
    "MethodNotAllowed": ("ClientError", 405, "method_not_allowed"),
    "NotAcceptable": ("ClientError", 406, "not_acceptable"),
    "PayloadTooLarge": ("ClientError", 413, "payload_too_large"),
    "UnsupportedMediaType": ("ClientError", 415, "unsupported_media_type"),
    "RateLimited": ("ClientError", 429, "rate_limited"),
    "QuotaExceeded": ("RateLimited", 429, "quota_exceeded"),
    "RequestTerminated": ("GatewayError", 503, "request_terminated"),
    "FaultInjected": ("GatewayError", 503, "fault_injected"),
    "UpstreamError": ("GatewayError", 502, "bad_gateway"),
    "BadGateway": ("UpstreamError", 502, "bad_gateway"),
    "UpstreamConnectError": ("BadGateway", 502, "upstream_connect_failed"),
    "UpstreamProtocolError": ("BadGateway", 502, "upstream_protocol_error"),
    "UpstreamResponseTooLarge": ("BadGateway", 502, "upstream_response_too_large"),
    "UpstreamErrorResponse": ("UpstreamError", 502, "upstream_error_response"),
    "GrpcStatusError": ("UpstreamError", 502, "grpc_status"),
    "UpstreamUnavailable": ("UpstreamError", 503, "upstream_unavailable"),
    "UpstreamTimeout": ("UpstreamError", 504, "upstream_timeout"),
}


def error_classes() -> dict[str, type[GatewayError]]:
    return {
        name: value
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, GatewayError)
    }


def test_every_error_class_is_in_the_contract() -> None:
    assert set(error_classes()) == set(CONTRACT)


@pytest.mark.parametrize("name", sorted(CONTRACT))
def test_tree(name: str) -> None:
    parent, status, code = CONTRACT[name]
    cls = error_classes()[name]
    assert cls.status_code == status
    assert cls.code == code
    if parent is None:
        assert cls.__bases__ == (Exception,)
    else:
        assert cls.__bases__ == (error_classes()[parent],)
    assert cls.title


def test_the_drawn_tree_matches_the_classes() -> None:
    doc = errors.__doc__ or ""
    drawn: dict[str, tuple[int, int, str]] = {}  # name -> (depth, status, code)
    for line in doc.splitlines():
        m = re.match(r"^(\s*(?:[│├└─ ]*)?)(\w+)\s+(\d{3})\s+(\w+)\s*$", line)
        if m:
            drawn[m.group(2)] = (len(m.group(1)), int(m.group(3)), m.group(4))
    assert set(drawn) == set(CONTRACT)
    for name, (_, status, code) in drawn.items():
        assert (status, code) == CONTRACT[name][1:], name
    # indentation follows inheritance: a child is drawn deeper than its parent
    for name, (depth, _, _) in drawn.items():
        parent = CONTRACT[name][0]
        if parent is not None:
            assert depth > drawn[parent][0], name
    assert "ConfigurationError" in doc


def test_configuration_error_is_not_a_reply() -> None:
    assert not issubclass(ConfigurationError, GatewayError)
    assert issubclass(ConfigurationError, Exception)


def test_method_not_allowed_allow_header() -> None:
    error = MethodNotAllowed(["POST", "GET", "HEAD", "GET"])
    assert error.allow == ["GET", "HEAD", "POST"]
    assert error.headers == {"allow": "GET, HEAD, POST"}
    assert error.status_code == 405


def test_rate_limited_retry_after_header() -> None:
    assert RateLimited(retry_after=30).headers == {"retry-after": "30"}
    assert RateLimited(retry_after=30).retry_after == 30
    assert RateLimited().headers == {}
    merged = RateLimited("slow", retry_after=5, headers={"x-ratelimit-limit": "10"})
    assert merged.headers == {"x-ratelimit-limit": "10", "retry-after": "5"}
    assert merged.detail == "slow"


def test_error_fields_and_repr() -> None:
    error = Forbidden("no", headers={"x-a": "1"}, internal="secret")
    assert (error.detail, error.headers, error.internal) == ("no", {"x-a": "1"}, "secret")
    assert repr(error) == "Forbidden(code='forbidden', detail='no')"
    assert str(Forbidden()) == "Forbidden"
    timeout = UpstreamTimeout(stage="response_headers", upstream="users")
    assert (timeout.stage, timeout.upstream, timeout.status_code) == ("response_headers", "users", 504)


def test_problem_response_unit() -> None:
    exchange = Exchange({"type": "http", "method": "GET", "headers": []}, Gateway())
    exchange.request_id = "rid-1"
    response = problem_response(exchange, RateLimited("easy", retry_after=3, headers={"x": "y"}))
    assert response.status_code == 429
    assert response.media_type == "application/problem+json"
    assert response.headers["retry-after"] == "3"
    assert response.headers["x"] == "y"
    assert orjson.loads(response.body) == {
        "type": "urn:asgigate:error:rate_limited",
        "title": "Too Many Requests",
        "status": 429,
        "code": "rate_limited",
        "detail": "easy",
        "request_id": "rid-1",
    }


# --- renderers through a real server ---------------------------------------------------------------------------


class Refuse(Policy):
    async def on_request(self, exchange: Exchange) -> Response | None:
        raise Forbidden("refused", internal="policy internals")


class Throttle(Policy):
    async def on_request(self, exchange: Exchange) -> Response | None:
        raise RateLimited(retry_after=9)


async def crash(exchange: Exchange) -> Response:
    raise KeyError("boom-secret")


def route_renderer(exchange: Exchange, error: GatewayError) -> Response:  # sync renderers are fine too
    return PlainTextResponse(f"route renderer: {error.code}", status_code=error.status_code + 1)


async def group_renderer(exchange: Exchange, error: GatewayError) -> Response:
    return PlainTextResponse(f"group renderer: {error.code}", status_code=error.status_code)


def shared_routes() -> list[Any]:
    return [
        Route("/forbidden", Direct(text="x"), policies=[Refuse()]),
        Route("/throttled", Direct(text="x"), policies=[Throttle()]),
        Route("/crash", crash),
        Route("/only-post", Direct(text="x"), methods=["POST"]),
        Route("/own", Direct(text="x"), policies=[Refuse()], errors=route_renderer),
        Group(
            "/grouped",
            [
                Route("/a", Direct(text="x"), policies=[Refuse()]),
                Route("/b", Direct(text="x"), policies=[Refuse()], errors=route_renderer),
            ],
            errors=group_renderer,
        ),
    ]


class Default(Gateway):
    def routes(self) -> list[Any]:
        return shared_routes()


class Custom(Gateway):
    async def render_error(self, exchange: Exchange, error: GatewayError) -> Response:
        return PlainTextResponse(
            f"custom {error.status_code} {error.code} {exchange.request_id}",
            status_code=error.status_code,
            headers={**error.headers, "x-renderer": "gateway"},
        )

    def routes(self) -> list[Any]:
        return shared_routes()


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, BackgroundServer]]:
    with BackgroundServer(Default(access_log=False)) as default, BackgroundServer(Custom(access_log=False)) as custom:
        yield {"default": default, "custom": custom}


def test_default_replies_are_problem_json(servers: dict[str, BackgroundServer]) -> None:
    base = servers["default"].url
    for path, status, code in [
        ("/forbidden", 403, "forbidden"),
        ("/throttled", 429, "rate_limited"),
        ("/crash", 500, "internal_error"),
        ("/only-post", 405, "method_not_allowed"),
        ("/missing", 404, "no_route"),
    ]:
        response = httpx.get(base + path)
        assert response.status_code == status, path
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert (problem["status"], problem["code"]) == (status, code)
        assert problem["request_id"] == response.headers["x-request-id"]
        assert "internals" not in response.text
        assert "boom-secret" not in response.text
    assert httpx.get(base + "/throttled").headers["retry-after"] == "9"
    assert httpx.get(base + "/only-post").headers["allow"] == "POST"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/forbidden", 403, "forbidden"),
        ("/throttled", 429, "rate_limited"),
        ("/crash", 500, "internal_error"),
        ("/only-post", 405, "method_not_allowed"),
        ("/missing", 404, "no_route"),
    ],
)
def test_render_error_override_changes_every_error_reply(
    servers: dict[str, BackgroundServer], path: str, status: int, code: str
) -> None:
    response = httpx.get(servers["custom"].url + path)
    assert response.status_code == status
    assert response.text == f"custom {status} {code} {response.headers['x-request-id']}"
    assert response.headers["x-renderer"] == "gateway"


def test_render_error_override_for_invalid_paths(servers: dict[str, BackgroundServer]) -> None:
    status, raw = raw_get(servers["custom"].port, "/a/..%2Fb")
    assert status == 400
    assert b"custom 400 invalid_path " in raw
    assert b"\r\nx-renderer: gateway\r\n" in raw


def test_render_error_override_keeps_error_headers(servers: dict[str, BackgroundServer]) -> None:
    assert httpx.get(servers["custom"].url + "/throttled").headers["retry-after"] == "9"
    assert httpx.get(servers["custom"].url + "/only-post").headers["allow"] == "POST"


@pytest.mark.parametrize("server", ["default", "custom"])
def test_route_renderer_wins(servers: dict[str, BackgroundServer], server: str) -> None:
    base = servers[server].url
    own = httpx.get(base + "/own")
    assert (own.status_code, own.text) == (404, "route renderer: forbidden")
    grouped = httpx.get(base + "/grouped/a")
    assert (grouped.status_code, grouped.text) == (403, "group renderer: forbidden")
    closest = httpx.get(base + "/grouped/b")
    assert (closest.status_code, closest.text) == (404, "route renderer: forbidden")
