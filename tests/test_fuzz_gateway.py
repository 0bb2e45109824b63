"""Fuzzing a realistic gateway (tests/apps/fuzz_gateway.py): whatever a client sends, it gets no 5xx, and the
server logs no error and no traceback.

Two halves, both reproducible: raw bytes from a seeded generator over real sockets to the gateway under uvicorn
(uvloop and httptools, in its own process, its log in a file), and structured requests from hypothesis (paths,
parameters, query strings, headers, bodies) handed to the same gateway in-process, where nothing a server would
refuse first gets in the way. The upstream is a real one in its own process. Bounded: a few seconds each.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asgigate import Group
from asgigate.types import Message

from apps.fuzz_gateway import FuzzGateway
from servers import PYTHON, ROOT, free_port, logged_errors, serve_process, uvicorn_cmd, wait_port, wait_until

SEED = 20_260_516
CONNECTIONS = 1000  # each a request, a pipelined batch or garbage: a few seconds in all

LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
    "handlers": {"out": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["out"], "level": "WARNING", "propagate": False},
        "asgigate": {"handlers": ["out"], "level": "DEBUG", "propagate": False},  # the access log too
    },
}

# uvicorn's own line when a request with a pipelined one queued behind it has its connection closed under it (by
# uvicorn itself, answering a malformed pipelined request with a 400): uvicorn then tells only the queued request
# that the client is gone, and logs this when the first one's app returns. Not the gateway's to avoid; each comes
# after an "Invalid HTTP request received."
UVICORN_PIPELINING = "ERROR uvicorn.error ASGI callable returned without completing response."


class Served:
    """The fuzz gateway under uvicorn in its own process, with everything it logs in a file."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log

    def mark(self) -> int:
        return self.log.stat().st_size

    def logged_since(self, mark: int) -> str:
        with self.log.open("rb") as f:
            f.seek(mark)
            return f.read().decode("utf-8", "replace")


@pytest.fixture(scope="module")
def upstream_url() -> Iterator[str]:
    port = free_port()
    with serve_process(uvicorn_cmd("apps.upstream:app", port), port):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("fuzz")
    (workdir / "log.json").write_text(json.dumps(LOG_CONFIG))
    port = free_port()
    log = workdir / "server.log"
    args = [PYTHON, "-m", "uvicorn", "apps.fuzz_gateway:app", "--host", "127.0.0.1", "--port", str(port),
            "--loop", "uvloop", "--http", "httptools", "--no-proxy-headers", "--log-config", str(workdir / "log.json")]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "UPSTREAM_URL": upstream_url}
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, 20, proc)
        yield Served(port, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def exchange_bytes(port: int, data: bytes, *, half_close: bool = False, timeout: float = 1.0) -> bytes:
    """Send `data` as is and read until the server closes (or `timeout`); `half_close` ends our side first.

    A few connections stay open after their last response (a request whose Connection headers disagree), so
    the timeout is short: every response a well-framed request gets is there long before it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close before it read everything (a 400, a 413): what it sent still counts
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


STATUS_LINE = re.compile(rb"(?:^|\r\n)HTTP/1\.[01] (\d{3}) ")


def statuses(response: bytes) -> list[int]:
    # Bodies here are JSON (escaped), letters or problem details: a status line can only be a status line.
    return [int(m) for m in STATUS_LINE.findall(response)]


def problems(log: str) -> list[str]:
    """Lines of the server's log that are errors or tracebacks (uvicorn's pipelining line aside, see above)."""
    found = [line for line in log.splitlines()
             if (line.startswith(("ERROR", "CRITICAL")) or line.startswith("Traceback")) and line != UVICORN_PIPELINING]
    pipelining = log.count(UVICORN_PIPELINING)
    if pipelining > log.count("Invalid HTTP request received."):
        found.append(f"{pipelining} x {UVICORN_PIPELINING}")
    return found


# --- the pipelined request that finds its connection closed -----------------------------------------------------


def test_a_send_on_a_connection_the_server_closed_is_a_client_disconnect(served: Served) -> None:
    # uvicorn (httptools, uvloop) answers the malformed second request with a 400 and closes the connection while
    # the gateway is still fetching the first one's response: sending it fails. That is a client disconnect:
    # logged at DEBUG, `client_disconnected` in the access log, no error reply tried, no traceback.
    mark = served.mark()
    for _ in range(3):
        response = exchange_bytes(
            served.port,
            b"POST /api/stream?chunks=50&size=65536 HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello"
            b"POST /api/echo HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\nxx\r\n",
            timeout=5.0,
        )
        assert statuses(response)[-1:] == [400]  # uvicorn's, for the second request
    wait_until(lambda: served.logged_since(mark).count("INFO asgigate.access") >= 3)
    log = served.logged_since(mark)
    access = [json.loads(line.split(" ", 2)[2]) for line in log.splitlines() if line.startswith("INFO asgigate.access")]
    outcomes = [(line["path"], line["status"], line.get("reason"), line["bytes_out"]) for line in access]
    assert outcomes == [("/api/stream", 0, "client_disconnected", 0)] * 3
    assert log.count("DEBUG asgigate client disconnected") == 3
    assert problems(log) == []
    assert "error after the response started" not in log


# --- raw sockets: seeded random requests ---------------------------------------------------------------------


class Requests:
    """Random HTTP/1.1 connections from a seed.

    Most requests are well framed, so that they reach the gateway, but odd in every other way: paths with odd
    encodings and parameters around every limit, hop-by-hop and forwarding headers, many, large and repeated
    headers, bodies that are large, chunked, shorter or longer than declared, requests pipelined behind each
    other. About one in eight is broken where the server has to refuse it (the request line, a header's bytes,
    the body's framing), and a few connections carry no HTTP at all.
    """

    SEGMENTS = ["a", "b.txt", "..", ".", "%2e%2e", "%2E", "%2F", "a%2Fb", "%00", "%ZZ", "%", "%C0%AE", "%FF", "%E9",
                "%C3%A9", "\\", "..\\", ";", "..;x", "~", "%20", "+", "@", ":", "(", "*", "|{}^`", "a" * 300,
                "." * 300, "-" * 300 + ".", "9" * 4301, "1e999", "nan", "-1", "0x1F", "%D9%A3",
                str(uuid.UUID(int=7)), "{id}", "%7Bid%7D", "echo", ""]
    NUMBERS = ["0", "7", "007", "9" * 19, "9" * 64, "9" * 65, "9" * 4301, "-1", "+1", "1.5", "%31", "%D9%A3", "1_0",
               "1e5", ""]
    FLOATS = ["1.5", "0.0", "1e999", "nan", "inf", "1.", ".5", "9" * 400 + ".5", "1." + "5" * 100, "1,5", "%2e5"]
    UUIDS = [str(uuid.UUID(int=42)), str(uuid.UUID(int=42)).upper(), "{" + str(uuid.UUID(int=1)) + "}",
             str(uuid.UUID(int=1)).replace("-", ""), "0" * 36, "g" * 8 + "-0000-0000-0000-" + "0" * 12]
    HOSTS = ["gw", "api.example.com", "a.b.example.com", "[::1]:8000", "127.0.0.1:1", "", "x" * 2000, "\xe9vil.com",
             "example.com:notaport", "a b"]
    HEADER_NAMES = ["x-team", "accept", "content-type", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
                    "forwarded", "x-request-id", "cookie", "authorization", "user-agent", "accept-encoding",
                    "connection", "te", "trailer", "upgrade", "keep-alive", "proxy-connection", "expect", "range",
                    "if-none-match", "origin", "x-custom", "x-a", "x-b", "X-Mixed-Case"]
    HEADER_VALUES = ["", "x", "blocked", "*/*", "application/json", "text/html", "text/html;q=nan",
                     "application/problem+json;q=1e999", "1.2.3.4", "1.2.3.4, ::1, junk, 999.1.1.1, 127.0.0.1",
                     "for=junk;proto=gopher", "a" * 8000, "\x80\xff\xfe", "close", "keep-alive", "x-team, x-a",
                     "upgrade", "websocket", "100-continue", "bytes=0-1,5-", "Bearer " + "x" * 3000,
                     "abcdefghijklmnopqrstuvwxyz0123456789-_.:/+=@", "\t tabbed \t"]
    METHODS = ["GET"] * 8 + ["POST"] * 4 + ["PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "TRACE", "M-SEARCH",
                                          "PROPFIND"]
    # what the server must refuse: each broken request has one of these
    BROKEN = ["method", "version", "target", "header", "length", "chunked", "both"]

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def pick(self, items: list[str]) -> str:
        return self.rng.choice(items)

    def path(self) -> str:
        r = self.rng
        segments = [self.pick(self.SEGMENTS) for _ in range(r.randint(0, 4))]
        rest = ("//" if r.random() < 0.1 else "/").join(segments)
        templates = [
            "/healthz", "/metrics", "/items/{n}", "/items/{n}/files/{s}.{s}", "/items/{n}/files/{s}", "/prices/{f}",
            "/sessions/{u}", "/users/{s}", "/old/{n}", "/search?q={s}", "/search", "/static/{rest}",
            "/api/echo/{rest}", "/api/users/{n}", "/api/stream?chunks=3&size=100", "/api/bytes?n=300000",
            "/api/sse?events=2&interval=0.01", "/api/gzip", "/api/hop", "/limited/{s}", "/ws/{rest}", "/{rest}",
            "/nowhere/{s}",
        ]
        path = self.pick(templates)
        for name, choices in (("{n}", self.NUMBERS), ("{f}", self.FLOATS), ("{u}", self.UUIDS),
                              ("{s}", self.SEGMENTS)):
            while name in path:
                path = path.replace(name, self.pick(choices), 1)
        path = path.replace("{rest}", rest)
        if r.random() < 0.3:
            path += ("&" if "?" in path else "?") + self.query()
        roll = r.random()
        if roll < 0.02:
            return "*"
        if roll < 0.04:
            return "http://gw" + path
        return path

    def query(self) -> str:
        parts = []
        for _ in range(self.rng.randint(0, 6)):
            key = self.pick(["q", "a", "", "%", "%ZZ", "a+b", "x" * 500, "q%00", "%FF"])
            value = self.pick(["1", "", "%", "%E9", "%C3%A9", "a=b", "+", "%2B", "y" * 2000, "|{}"])
            parts.append(f"{key}={value}" if self.rng.random() < 0.9 else key)
        return "&".join(parts)

    def headers(self) -> list[tuple[str, str]]:
        r = self.rng
        out = []
        hosts = r.choices([0, 1, 2], weights=[1, 20, 1])[0]
        out += [("Host", self.pick(self.HOSTS)) for _ in range(hosts)]
        many = 300 if r.random() < 0.03 else r.randint(0, 12)
        for _ in range(many):
            name = self.pick(self.HEADER_NAMES)
            if r.random() < 0.05:
                name = "x-" + "n" * r.randint(1, 3000)
            out.append((name, self.pick(self.HEADER_VALUES)))
        return out

    def body(self, broken: str | None) -> tuple[list[tuple[str, str]], bytes, bool]:
        """Framing headers, the bytes after the head, and whether the client then stops sending."""
        r = self.rng
        size = r.choice([0, 1, 5, 1000, 70_000, 300_000])
        payload = r.randbytes(size)
        if broken == "length":
            value = self.pick(["-1", "abc", "9" * 30, "1, 2", "0x10", "5 5", "9" * 5000])
            return [("Content-Length", value)], payload, True
        if broken == "chunked":
            framing = [("Transfer-Encoding", "chunked")]
            body = self.pick(["ZZ\r\nxx\r\n", "ffffffffffffffffffff\r\n", "-1\r\n", "5\r\nabcdefgh\r\n"])
            return framing, body.encode(), r.random() < 0.5
        kind = r.choices(["none", "length", "short", "long", "chunked"], weights=[6, 6, 1, 1, 3])[0]
        if kind == "none" and broken != "both":
            return [], b"", False
        if kind == "length":
            return [("Content-Length", str(size))], payload, False
        if kind == "short":  # fewer bytes than declared, then the client stops
            return [("Content-Length", str(size + 100))], payload, True
        if kind == "long":  # more bytes than declared: the rest reads as the next request
            return [("Content-Length", str(size))], payload + b"GARBAGE / HTTP/1.1\r\n\r\n", False
        chunks = b""
        cursor = 0
        while cursor < size:
            step = r.randint(1, 20_000)
            extension = b";ext=1" if r.random() < 0.1 else b""
            piece = payload[cursor : cursor + step]
            chunks += b"%x%s\r\n%s\r\n" % (len(piece), extension, piece)
            cursor += step
        chunks += b"0\r\n\r\n"
        framing = [("Transfer-Encoding", self.pick(["chunked", "gzip, chunked", "Chunked"]))]
        if broken == "both":
            framing.append(("Content-Length", str(len(chunks))))
        return framing, chunks, False

    def request(self, last: bool) -> tuple[bytes, bool]:
        r = self.rng
        broken = self.pick(self.BROKEN) if r.random() < 0.125 else None
        method = self.pick(self.METHODS) if broken != "method" else self.pick(["get", "FOO", "G ET", ""])
        version = r.choices(["HTTP/1.1", "HTTP/1.0", "HTTP/2.0"], weights=[40, 4, 1])[0]
        if broken == "version":
            version = self.pick(["HTTP/1.1 x", "HTTX/1.1", "HTTP/1", "HTTP/9.9.9"])
        target = self.path()
        if broken == "target":
            target = self.pick([target.lstrip("/"), target + "\xff", "/caf\xc3\xa9" + target, target + "\x7f"])
        has_body = method not in ("GET", "HEAD") or r.random() < 0.1 or broken in ("length", "chunked", "both")
        framing, body, stop = self.body(broken) if has_body else ([], b"", False)
        headers = self.headers() + framing
        if broken == "header":
            headers.append(self.pick([("X-Bad", "a\x7fb"), ("Bad Name", "1"), ("", "empty"), ("X-Nul", "a\x00b")]))
        if last:
            headers.append(("Connection", "close"))
        r.shuffle(headers)
        head = f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        return head.encode("latin-1", "replace") + body, stop

    def connection(self) -> tuple[bytes, bool]:
        r = self.rng
        if r.random() < 0.03:  # not HTTP at all
            return self.pick(["\r\n\r\n", "GET\r\n\r\n", "\x16\x03\x01\x00\xa5\x01\x00\x00", "GET / HTTP/1.1\r\n",
                              "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"]).encode("latin-1"), True
        batch = r.choices([1, 2, 3], weights=[8, 2, 1])[0]
        data = b""
        stop = False
        for i in range(batch):
            request, stop = self.request(last=i == batch - 1)
            data += request
            if stop:
                break
        if r.random() < 0.05:
            data += b"\x00\x01garbage after the requests\r\n\r\n"
        return data, stop


def test_raw_requests_get_no_5xx_and_log_no_error(served: Served) -> None:
    mark = served.mark()
    generator = Requests(SEED)
    seen: dict[int, int] = {}
    for n in range(CONNECTIONS):
        data, stop = generator.connection()
        response = exchange_bytes(served.port, data, half_close=stop)
        for status in statuses(response):
            seen[status] = seen.get(status, 0) + 1
            assert status < 500, f"connection {n} (seed {SEED}) got {status} for {data[:300]!r}:\n{response[:600]!r}"
    # the gateway is still there, and its log holds nothing worse than what clients got wrong
    last = b"GET /healthz HTTP/1.1\r\nHost: gw\r\nX-Request-Id: fuzz-last\r\nConnection: close\r\n\r\n"
    assert statuses(exchange_bytes(served.port, last)) == [200]
    wait_until(lambda: '"request_id":"fuzz-last"' in served.logged_since(mark), within=5)
    log = served.logged_since(mark)
    assert problems(log) == [], "\n".join(problems(log)[:20])
    # the requests reached every route, not only uvicorn's parser
    access = [json.loads(line.split(" ", 2)[2]) for line in log.splitlines() if line.startswith("INFO asgigate.access")]
    assert len(access) > CONNECTIONS // 2, seen
    assert {line["route"] for line in access} >= {route.name for route in FuzzGateway("http://x").routes()
                                                  if not isinstance(route, Group)} | {"/api/{rest:path}"}


# --- hypothesis: structured requests, in-process -------------------------------------------------------------


class LoopThread:
    """One event loop in a thread for the whole module, so the gateway's upstream connections outlive an example."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float = 20.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture(scope="module")
def in_process(upstream_url: str) -> Iterator[Callable[..., tuple[int, bytes]]]:
    loop = LoopThread()
    gateway = FuzzGateway(upstream_url)
    gateway.build()

    async def call(method: str, raw_path: bytes, query: bytes, headers: list[tuple[bytes, bytes]],
                   body: bytes) -> tuple[int, bytes]:
        scope = {
            "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": unquote_to_bytes(raw_path).decode("latin-1"),
            "raw_path": raw_path, "query_string": query, "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
        }
        pending = [{"type": "http.request", "body": body, "more_body": False}]
        done = asyncio.Event()
        sent: list[Message] = []

        async def receive() -> Message:
            if pending:
                return pending.pop()
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            sent.append(message)

        try:
            await gateway(scope, receive, send)
        finally:
            done.set()
        assert sent and sent[0]["type"] == "http.response.start", sent
        return int(sent[0]["status"]), b"".join(m.get("body", b"") for m in sent[1:])

    yield lambda *args: loop.run(call(*args))
    loop.run(gateway.aclose())
    loop.close()


# A path segment: numbers around every limit, floats, UUIDs, any text percent-encoded, raw percent-escapes.
SEGMENT = st.one_of(
    st.builds(lambda digit, n: digit * n, st.sampled_from("90"), st.sampled_from([4301, 65, 64, 309, 1])),
    st.integers(min_value=-10, max_value=10**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.uuids().map(lambda u: str(u) if u.int % 3 else str(u).upper().replace("-", "", u.int % 2)),
    st.sampled_from(Requests.SEGMENTS),
    st.text(st.characters(codec="utf-8", exclude_characters="/?#"), max_size=12).map(lambda t: quote(t, safe="%.~")),
    st.binary(max_size=8).map(lambda b: "".join(f"%{byte:02X}" for byte in b)),
)
# Every route's template, its parameters to be filled with segments (and a few for no route at all).
TEMPLATES = ["/items/{}", "/prices/{}", "/sessions/{}", "/old/{}", "/items/{}/files/{}.{}", "/users/{}",
             "/api/users/{}", "/static/echo/{}", "/api/echo/{}/{}", "/search", "/limited/{}", "/{}", "/{}/{}/{}",
             "/healthz", "/metrics"]
# What a server hands on: no CR, LF, NUL or space in the request target, none of CR, LF and NUL in header values.
QUERY = st.one_of(
    st.just(b""),
    st.lists(st.tuples(st.sampled_from(["q", "a", "", "x%00"]), SEGMENT), max_size=4).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("latin-1", "replace")),
    st.binary(max_size=40).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00 ")),
)
HEADER_NAME = st.one_of(st.sampled_from([name.lower().encode() for name in Requests.HEADER_NAMES] +
                                        [b"host", b"content-length", b"transfer-encoding"]),
                        st.from_regex(rb"\A[a-z0-9!#$%&'*+.^_`|~-]{1,20}\Z"))
HEADER_VALUE = st.one_of(st.sampled_from([value.encode("latin-1") for value in Requests.HEADER_VALUES]),
                         st.binary(max_size=30).map(lambda b: bytes(c for c in b if c not in b"\r\n\x00")),
                         st.integers().map(lambda n: str(n).encode()))
HOST = st.sampled_from([b"gw", b"api.example.com", b"[::1]", b"", b"a" * 300, b"\xe9.example.com"])


def served_in_process(call: Callable[..., tuple[int, bytes]], method: str, raw_path: bytes, query: bytes,
                      headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    with logged_errors() as errors:
        status, reply = call(method, raw_path, query, headers, body)
    assert status < 500, (status, reply[:500])
    assert [record.getMessage() for record in errors] == []


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    template=st.sampled_from(TEMPLATES),
    values=st.lists(SEGMENT, min_size=3, max_size=3),
    method=st.sampled_from(["GET", "GET", "POST", "DELETE", "HEAD"]),
    query=QUERY,
    slashes=st.sampled_from(["/", "/", "//"]),
)
def test_paths_parameters_and_queries_get_no_5xx_and_log_no_error(
    in_process: Callable[..., tuple[int, bytes]], template: str, values: list[str], method: str, query: bytes,
    slashes: str,
) -> None:
    path = template.format(*values[: template.count("{}")]).replace("/", slashes)
    served_in_process(in_process, method, path.encode("utf-8"), query, [(b"host", b"api.example.com")], b"")


@settings(max_examples=250, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(["/items/7", "/items/7/files/a.txt", "/users/x", "/api/echo", "/api/users/3", "/static/x",
                          "/search?q=1", "/limited/x", "/nowhere", "/healthz"]),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "get", "X"]),
    headers=st.lists(st.tuples(HEADER_NAME, HEADER_VALUE), max_size=10),
    host=HOST,
    body=st.binary(max_size=300),
)
def test_headers_and_bodies_get_no_5xx_and_log_no_error(
    in_process: Callable[..., tuple[int, bytes]], path: str, method: str, headers: list[tuple[bytes, bytes]],
    host: bytes, body: bytes,
) -> None:
    raw_path, _, query = path.encode().partition(b"?")
    served_in_process(in_process, method, raw_path, query, [(b"host", host), *headers], body)
