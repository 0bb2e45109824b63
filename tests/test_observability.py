"""Request ids and the JSON access log, through a real server."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from asgigate import Direct, Gateway, Proxy, Route, Upstream

from servers import ThreadServer, free_port


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(record.getMessage()))


@pytest.fixture
def access_log() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("asgigate.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)


class LoggedGateway(Gateway):
    def __init__(self, upstream_url: str) -> None:
        super().__init__()
        self.backend = Upstream(upstream_url, name="backend")

    def routes(self) -> list[Route]:
        return [
            Route("/ok", Direct(text="fine"), name="ok"),
            Route("/up/{rest:path}", Proxy(self.backend, strip_prefix="/up"), name="up"),
        ]


def wait_for(records: Records, count: int) -> None:
    deadline = time.monotonic() + 3
    while len(records.lines) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def test_one_json_line_per_request(upstream: ThreadServer, access_log: Records) -> None:
    with ThreadServer(LoggedGateway(upstream.url)) as server:
        ok = httpx.get(f"{server.url}/ok")
        proxied = httpx.post(f"{server.url}/up/echo", content=b"12345")
        missing = httpx.get(f"{server.url}/missing")
        wait_for(access_log, 3)
    first, second, third = access_log.lines[:3]
    assert first["route"] == "ok" and first["status"] == 200 and first["bytes_out"] == 4
    assert first["request_id"] == ok.headers["x-request-id"]
    assert first["upstream"] is None
    assert second["route"] == "up" and second["upstream"] == "backend" and second["method"] == "POST"
    assert second["bytes_in"] == 5
    assert second["request_id"] == proxied.headers["x-request-id"]
    assert second["bytes_out"] == len(proxied.content)
    assert isinstance(second["duration_ms"], float) and isinstance(second["upstream_ms"], float)
    assert third["status"] == 404 and third["reason"] == "no_route" and third["route"] is None
    assert third["request_id"] == missing.headers["x-request-id"]


def test_upstream_failure_is_logged_with_its_reason(access_log: Records) -> None:
    with ThreadServer(LoggedGateway(f"http://127.0.0.1:{free_port()}")) as server:
        response = httpx.get(f"{server.url}/up/x")
        wait_for(access_log, 1)
    assert response.status_code == 502
    assert access_log.lines[0]["reason"] == "upstream_connect_failed"
    assert access_log.lines[0]["status"] == 502


def test_dns_failure_is_502(access_log: Records) -> None:
    with ThreadServer(LoggedGateway("http://no-such-host.invalid")) as server:
        response = httpx.get(f"{server.url}/up/x", timeout=30)
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_connect_failed"


def test_access_log_off_logs_nothing(access_log: Records) -> None:
    class Quiet(Gateway):
        def __init__(self) -> None:
            super().__init__(access_log=False)

        def routes(self) -> list[Route]:
            return [Route("/ok", Direct(text="fine"))]

    with ThreadServer(Quiet()) as server:
        assert httpx.get(f"{server.url}/ok").status_code == 200
        assert httpx.get(f"{server.url}/nope").status_code == 404
        time.sleep(0.1)
    assert access_log.lines == []
