"""Request ids and the JSON access log, through a real server (the gateway's; the sample upstream runs in process
where its sockets would add nothing to what is checked)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from asgigate import AccessLog, Direct, Gateway, Proxy, Route, Upstream
from asgigate.testing import BackgroundServer
from asgigate.types import ASGIApp

from apps.upstream import app as sample_upstream
from servers import free_port, wait_until


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
    def __init__(self, upstream_url: str, app: ASGIApp | None = None) -> None:
        super().__init__()
        self.backend = Upstream(upstream_url, name="backend", app=app)

    def routes(self) -> list[Route]:
        return [
            Route("/ok", Direct(text="fine"), name="ok"),
            Route("/up/{rest:path}", Proxy(self.backend, strip_prefix="/up"), name="up"),
        ]


def wait_for(records: Records, count: int) -> None:
    wait_until(lambda: len(records.lines) >= count)


def test_one_json_line_per_request(access_log: Records) -> None:
    with BackgroundServer(LoggedGateway("http://backend.internal", app=sample_upstream)) as server:
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
    with BackgroundServer(LoggedGateway(f"http://127.0.0.1:{free_port()}")) as server:
        response = httpx.get(f"{server.url}/up/x")
        wait_for(access_log, 1)
    assert response.status_code == 502
    assert access_log.lines[0]["reason"] == "upstream_connect_failed"
    assert access_log.lines[0]["status"] == 502


def test_dns_failure_is_502(access_log: Records) -> None:
    with BackgroundServer(LoggedGateway("http://no-such-host.invalid")) as server:
        response = httpx.get(f"{server.url}/up/x", timeout=30)
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_connect_failed"


def test_access_log_off_logs_nothing(access_log: Records) -> None:
    class Quiet(Gateway):
        def __init__(self) -> None:
            super().__init__(access_log=False)

        def routes(self) -> list[Route]:
            return [Route("/ok", Direct(text="fine"))]

    with BackgroundServer(Quiet()) as server:
        assert httpx.get(f"{server.url}/ok").status_code == 200
        assert httpx.get(f"{server.url}/nope").status_code == 404
    assert access_log.lines == []  # (the server has stopped: any line would have been written by now)


def test_buffered_access_log_writes_the_same_lines(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = AccessLog(path, flush_interval=0.05)

    class Buffered(LoggedGateway):
        def __init__(self) -> None:
            super().__init__("http://backend.internal", app=sample_upstream)
            self.access_log_sink = sink

    with BackgroundServer(Buffered()) as server:
        ok = httpx.get(f"{server.url}/ok")
        missing = httpx.get(f"{server.url}/missing")
        wait_until(lambda: path.read_bytes().count(b"\n") >= 2)
        # Flushed by the timer, long before the buffer is full.
        lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
        assert [line["status"] for line in lines] == [200, 404]
        assert lines[0]["request_id"] == ok.headers["x-request-id"]
        assert lines[1]["reason"] == "no_route" and lines[1]["request_id"] == missing.headers["x-request-id"]
        sink.flush_interval = 3600.0  # from now on only a full buffer or shutdown writes
        for _ in range(5):
            httpx.get(f"{server.url}/ok")
        wait_until(lambda: len(sink._parts) == 5)  # the five lines are queued (a moment after each reply)...
        assert path.read_bytes().count(b"\n") == 2  # ...and not written
    # Lifespan shutdown flushed what was left.
    assert path.read_bytes().count(b"\n") == 7


def test_buffered_access_log_flushes_when_full(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    sink = AccessLog(str(path), buffer_size=100, flush_interval=3600)

    async def main() -> None:
        sink.write(b'{"a":1}')
        assert path.read_bytes() == b""  # below the buffer size, and the timer is an hour away
        sink.write(b"x" * 120)
        assert path.read_bytes().splitlines() == [b'{"a":1}', b"x" * 120]

    asyncio.run(main())
    sink.write(b'{"outside":"a loop"}')  # no loop to flush it later: written at once
    assert path.read_bytes().splitlines()[-1] == b'{"outside":"a loop"}'
    assert "AccessLog(" in repr(sink)


# --- what is logged at which level ------------------------------------------------------------------------------


class H11StyleError(Exception):
    """Named as h11's error is, which uvicorn's h11 protocol lets through from its send."""


H11StyleError.__name__ = "LocalProtocolError"


class Refusing(Gateway):
    def routes(self) -> list[Route]:
        return [Route("/ok", Direct(text="fine")), Route("/bad", Direct(text="x", headers={"x-a": "b"}))]


async def serve_once(gateway: Gateway, path: str, failure: Exception | None) -> list[dict[str, object]]:
    """One request in-process; the server's `send` raises `failure` for the first message it is given."""
    sent: list[dict[str, object]] = []
    scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"gw")], "client": ("127.0.0.1", 1), "scheme": "http"}

    async def receive() -> dict[str, object]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)
        if failure is not None and len(sent) == 1:
            raise failure

    await gateway(scope, receive, send)
    return sent


@pytest.mark.parametrize(
    "failure",
    [
        OSError("what the ASGI specification asks for"),
        ConnectionResetError(104, "Connection reset by peer"),
        RuntimeError("unable to perform operation on <TCPTransport closed=True>; the handler is closed"),  # uvloop
        H11StyleError("can't handle event type Response when role=SERVER and state=MUST_CLOSE"),  # h11
    ],
    ids=["OSError", "reset", "uvloop", "h11"],
)
def test_a_send_that_finds_the_client_gone_is_a_disconnect(access_log: Records, failure: Exception,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="asgigate")
    sent = asyncio.run(serve_once(Refusing(), "/ok", failure))
    assert [message["type"] for message in sent] == ["http.response.start"]  # no error reply tried after it
    line = access_log.lines[-1]
    assert (line["status"], line["reason"], line["bytes_out"]) == (0, "client_disconnected", 0)
    gateway_records = [r for r in caplog.records if r.name == "asgigate"]
    assert [(r.levelname, r.exc_info) for r in gateway_records] == [("DEBUG", None)]
    assert gateway_records[0].getMessage().startswith("client disconnected [request_id=")


def test_a_send_the_server_refuses_for_another_reason_is_still_an_error(access_log: Records,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    # uvicorn refusing a header value is a defect of whoever made the header, not a client going away
    sent = asyncio.run(serve_once(Refusing(), "/bad", RuntimeError("Invalid HTTP header value.")))
    starts = [message["status"] for message in sent if message["type"] == "http.response.start"]
    assert starts == [200, 500]  # the 200 never started: the error reply is tried
    assert access_log.lines[-1]["reason"] == "internal_error"
    assert [(r.levelname, r.getMessage()[:20]) for r in caplog.records if r.name == "asgigate"] == [
        ("ERROR", "unhandled exception ")]
