"""Upstream error responses replaced by the gateway's own reply: `Proxy(..., intercept_errors=InterceptErrors(...))`.

A real upstream under uvicorn answers errors with bodies that must never reach the client; the tests also check
what happens to the upstream connection (reused after a small body, closed after a large or endless one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from asgigate import (
    ConfigurationError,
    Gateway,
    Group,
    InterceptErrors,
    Proxy,
    Reply,
    Route,
    Upstream,
    UpstreamErrorResponse,
)
from asgigate.testing import BackgroundServer

SEEN: list[tuple[str, int]] = []  # (path, client port) per request the upstream received


async def backend(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path: str = scope["path"]
    SEEN.append((path, scope["client"][1]))
    query = scope["query_string"].decode()
    media = query.split("type=", 1)[1].encode() if "type=" in query else b"text/html"
    if path.startswith("/fail/"):
        status = int(path.rsplit("/", 1)[1])
        body = b"<h1>SECRET stack trace of " + path.encode() + b"</h1>"
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", media), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    elif path == "/big-fail":
        body = b"SECRET" * (200 * 1024)
        await send({"type": "http.response.start", "status": 500,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
    elif path == "/late-fail":  # a small body that arrives after the head: drained, not there yet
        await send({"type": "http.response.start", "status": 500,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"11")]})
        await asyncio.sleep(0.2)
        await send({"type": "http.response.body", "body": b"SECRET late"})
    elif path == "/endless-fail":
        await send({"type": "http.response.start", "status": 503, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"SECRET part 1", "more_body": True})
        with contextlib.suppress(TimeoutError):  # ends when the gateway hangs up (or after 10 s)
            async with asyncio.timeout(10):
                while (await receive())["type"] != "http.disconnect":
                    pass
            return
        await send({"type": "http.response.body", "body": b"SECRET part 2"})
    else:
        body = b"fine"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"4")]})
        await send({"type": "http.response.body", "body": body})


class Edge(Gateway):
    def __init__(self, url: str) -> None:
        super().__init__(access_log=False)
        self.up = Upstream(url, name="backend")

    def proxy(self, prefix: str, errors: InterceptErrors | None) -> Route:
        return Route(prefix + "/{rest:path}", Proxy(self.up, strip_prefix=prefix, intercept_errors=errors))

    def routes(self) -> list[Route | Group]:
        return [
            self.proxy("/plain", None),
            self.proxy("/replace", InterceptErrors(replace=["5xx"])),
            self.proxy("/remap", InterceptErrors(remap={"5xx": 502, 404: 503}, keep=[501], replace=[409])),
            self.proxy("/html", InterceptErrors(replace=["4xx", "5xx"], content_type=["text/html", "application/xml"])),
            self.proxy("/family", InterceptErrors(replace=["5xx"], content_type="text/*")),
            self.proxy("/detail", InterceptErrors(replace=[500], detail="The catalogue is unavailable.")),
            Route("/shaped/{rest:path}",
                  Proxy(self.up, strip_prefix="/shaped", intercept_errors=InterceptErrors(replace=["5xx"])),
                  errors=Reply(json={"oops": "{code}", "status": "{status}"})),
        ]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[BackgroundServer, Edge]]:
    with BackgroundServer(backend) as up:
        gateway = Edge(up.url)
        with BackgroundServer(gateway) as edge:
            yield edge, gateway


@pytest.fixture
def edge(servers: tuple[BackgroundServer, Edge]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=servers[0].url, timeout=10) as client:
        yield client


def test_default_relays_upstream_errors_untouched(edge: httpx.Client) -> None:
    response = edge.get("/plain/fail/500")
    assert response.status_code == 500
    assert response.text == "<h1>SECRET stack trace of /fail/500</h1>"
    assert response.headers["content-type"] == "text/html"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 599])
def test_replaced_errors_never_leak_the_body(edge: httpx.Client, status: int) -> None:
    response = edge.get(f"/replace/fail/{status}")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert "SECRET" not in response.text
    problem = response.json()
    assert problem["code"] == "upstream_error_response"
    assert problem["status"] == status
    assert "detail" not in problem  # nothing about the upstream is shown unless the route says so
    assert problem["request_id"] == response.headers["x-request-id"]


def test_statuses_outside_the_rules_pass(edge: httpx.Client) -> None:
    response = edge.get("/replace/fail/404")
    assert (response.status_code, response.text) == (404, "<h1>SECRET stack trace of /fail/404</h1>")
    assert edge.get("/replace/ok").text == "fine"


def test_remap_keep_and_exact_statuses(edge: httpx.Client) -> None:
    for path, status in [("/fail/500", 502), ("/fail/503", 502), ("/fail/404", 503), ("/fail/409", 409)]:
        response = edge.get("/remap" + path)
        assert response.status_code == status, path
        assert response.json()["code"] == "upstream_error_response"
        assert "SECRET" not in response.text
    kept = edge.get("/remap/fail/501")  # keep=[501] beats the "5xx" family
    assert (kept.status_code, kept.text) == (501, "<h1>SECRET stack trace of /fail/501</h1>")
    assert edge.get("/remap/fail/400").status_code == 400


def test_content_type_filter(edge: httpx.Client) -> None:
    assert edge.get("/html/fail/500").json()["code"] == "upstream_error_response"
    assert edge.get("/html/fail/418?type=application/xml; charset=utf-8").json()["status"] == 418
    passed = edge.get("/html/fail/500?type=application/json")
    assert passed.text.startswith("<h1>SECRET")  # a JSON error from the API itself is relayed
    assert edge.get("/family/fail/502?type=text/plain").json()["status"] == 502  # "text/*"
    assert edge.get("/family/fail/502?type=application/json").text.startswith("<h1>SECRET")


def test_detail_and_route_format(edge: httpx.Client) -> None:
    assert edge.get("/detail/fail/500").json()["detail"] == "The catalogue is unavailable."
    shaped = edge.get("/shaped/fail/503")
    assert shaped.status_code == 503
    assert shaped.json() == {"oops": "upstream_error_response", "status": 503}
    page = edge.get("/replace/fail/500", headers={"accept": "text/html"})
    assert page.headers["content-type"] == "text/html; charset=utf-8" and "SECRET" not in page.text


def test_replacement_is_logged_with_the_upstream_status(edge: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="asgigate"):
        response = edge.get("/replace/fail/502")
    message = next(r.getMessage() for r in caplog.records if response.headers["x-request-id"] in r.getMessage())
    assert "upstream_error_response" in message and "upstream=backend" in message
    assert "upstream answered 502" in message


def _port_of(path: str) -> int:
    return next(port for seen, port in reversed(SEEN) if seen == path)


def test_small_error_body_is_drained_and_the_connection_reused(
    edge: httpx.Client, servers: tuple[BackgroundServer, Edge]
) -> None:
    assert edge.get("/replace/fail/500").status_code == 500
    pool = servers[1].up.pool
    assert pool.idle_count >= 1
    assert edge.get("/replace/after-small").text == "fine"
    assert _port_of("/after-small") == _port_of("/fail/500")  # the same upstream connection


def test_late_small_error_body_is_drained_too(edge: httpx.Client) -> None:
    response = edge.get("/replace/late-fail")
    assert response.status_code == 500 and "SECRET" not in response.text
    assert edge.get("/replace/after-late").text == "fine"
    assert _port_of("/after-late") == _port_of("/late-fail")


def test_large_error_body_closes_the_connection(edge: httpx.Client) -> None:
    started = time.monotonic()
    response = edge.get("/replace/big-fail")
    assert response.status_code == 500 and "SECRET" not in response.text
    assert time.monotonic() - started < 5
    assert edge.get("/replace/after-big").text == "fine"
    assert _port_of("/after-big") != _port_of("/big-fail")  # that connection was closed, not reused


def test_endless_error_body_is_cut_short(edge: httpx.Client) -> None:
    started = time.monotonic()
    response = edge.get("/replace/endless-fail")
    elapsed = time.monotonic() - started
    assert response.status_code == 503 and "SECRET" not in response.text
    assert elapsed < 5  # the drain gives up after a second instead of waiting for the upstream
    assert edge.get("/replace/after-endless").text == "fine"
    assert _port_of("/after-endless") != _port_of("/endless-fail")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one status"),
        ({"replace": [302]}, "not an error status"),
        ({"replace": ["6xx"]}, "not an error status"),
        ({"replace": [True]}, "is not a status"),
        ({"replace": ["5xx"], "keep": ["5xx"]}, "'5xx' is named twice"),
        ({"remap": {500: 200}}, "not an error status"),
        ({"replace": [500], "content_type": "html"}, "is not 'type/subtype'"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        InterceptErrors(**kwargs)


def test_proxy_checks_the_option() -> None:
    with pytest.raises(ConfigurationError, match="takes an InterceptErrors"):
        Proxy(Upstream("http://127.0.0.1:1"), intercept_errors="5xx")  # type: ignore[arg-type]


def test_old_keyword_still_works_with_a_warning() -> None:
    errors = InterceptErrors(replace=["5xx"])
    with pytest.warns(DeprecationWarning, match="use intercept_errors="):
        proxy = Proxy(Upstream("http://127.0.0.1:1"), upstream_errors=errors)
    assert proxy.intercept_errors is errors
    with pytest.raises(ConfigurationError, match="not both"):
        Proxy(Upstream("http://127.0.0.1:1"), intercept_errors=errors, upstream_errors=errors)


def test_old_name_still_imports_with_a_warning() -> None:
    import asgigate
    import asgigate.targets.upstream_errors as old_module

    with pytest.warns(DeprecationWarning, match="asgigate.UpstreamErrors is deprecated: use asgigate.InterceptErrors"):
        assert asgigate.UpstreamErrors is InterceptErrors
    with pytest.warns(DeprecationWarning, match="use asgigate.targets.intercept_errors.InterceptErrors"):
        assert old_module.UpstreamErrors is InterceptErrors


def test_settings_compare_and_print() -> None:
    a = InterceptErrors(replace=["5xx"], remap={404: 502}, content_type="text/html")
    assert a == InterceptErrors(replace=["5xx"], remap={404: 502}, content_type="text/html")
    assert a != InterceptErrors(replace=["5xx"])
    assert repr(a) == "InterceptErrors(replace=['5xx'], remap={404: 502}, content_type=['text/html'])"
    with pytest.raises(AttributeError, match="immutable"):
        a.detail = "x"


def test_error_carries_both_statuses() -> None:
    error = UpstreamErrorResponse(upstream_status=500, status=502, upstream="users")
    assert (error.upstream_status, error.status_code, error.title) == (500, 502, "Bad Gateway")
    assert (error.code, error.stage, error.upstream) == ("upstream_error_response", "response_status", "users")
    assert UpstreamErrorResponse(upstream_status=418).title == "I'm a Teapot"
