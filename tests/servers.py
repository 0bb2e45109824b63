"""Real servers for the tests: ASGI apps under uvicorn in a subprocess, on free 127.0.0.1 ports, and polling helpers.

An app served in a thread of the test process uses the public `asgigate.testing.BackgroundServer`, as users do."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def _ephemeral_ports() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_EPHEMERAL = _ephemeral_ports()


def free_port() -> int:
    """A free 127.0.0.1 port for a server the test starts, chosen outside the kernel's ephemeral range.

    Between this call and the server's own bind, the port is free for anyone: a sample upstream binding port 0
    inside the server's process, or any outgoing connection, could be given it by the kernel, and the test
    would then talk to the wrong server. Ports the kernel hands out are in the ephemeral range, so a port
    below it cannot be taken that way.
    """
    low = _EPHEMERAL[0]
    if low > 12_000:
        for _ in range(100):
            port = random.randrange(10_000, low)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def wait_until(condition: Callable[[], object], within: float = 10.0, interval: float = 0.01) -> None:
    """Poll until `condition()` is true or `within` seconds pass; the caller then asserts the state itself.

    For state a server updates a moment after its client has the last byte (or in the background):
    a loaded machine can take far longer than usual, and a failing test should still fail, only later."""
    deadline = time.monotonic() + within
    while not condition() and time.monotonic() < deadline:
        time.sleep(interval)


class ManualClock:
    """A clock for a `clock=` setting that moves only when the test says: `advance(seconds)` instead of sleeping.

    Starts at `start` (default: now, in Unix seconds, so it also stands in for `time.time`)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ShiftedClock:
    """Real time (`time.time`) plus `ahead` seconds: a `clock=` for a gateway that also talks to real servers (an
    IdP) whose own time runs on; `advance(seconds)` jumps the gateway forward instead of sleeping."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead

    def advance(self, seconds: float) -> None:
        self.ahead += seconds


async def wait_until_async(condition: Callable[[], object], within: float = 10.0, interval: float = 0.01) -> None:
    """`wait_until` inside an event loop (whose other tasks go on meanwhile)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(interval)


def run_closing(coroutine: Coroutine[Any, Any, T], *closing: Any) -> T:
    """`asyncio.run(coroutine)`, then `await c.aclose()` for each of `closing` in the same event loop.

    Store clients belong to the event loop they connected in: a loop closed under them leaves their sockets to
    the garbage collector (a ResourceWarning, an error in this suite)."""

    async def run() -> T:
        try:
            return await coroutine
        finally:
            for each in closing:
                await each.aclose()

    return asyncio.run(run())


async def close_sessions(store: Any) -> None:
    """Close this event loop's connections of a session store that has any (RedisSessions); a gateway's shutdown
    does it through OIDCLogin.aclose, this is for stores a test uses in an event loop of its own."""
    close = getattr(store, "aclose", None)
    if close is not None:
        await close()


@contextlib.contextmanager
def logged_errors(*names: str) -> Iterator[list[logging.LogRecord]]:
    """What in-process servers log at ERROR or with a traceback at any level while the block runs.

    Watches the gateway's loggers ("asgigate", at every level meanwhile) and uvicorn's by default."""

    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR or record.exc_info:
                records.append(record)

    handler = Collect(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in names or ("asgigate", "uvicorn")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        if logger.name == "asgigate":
            logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


@contextlib.contextmanager
def serve_process(
    args: list[str], port: int, env: dict[str, str] | None = None, timeout: float = 20.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a server command (uvicorn, hypercorn, granian ...) until the block ends; kill it by PID.

    After the block the pipe is closed and `proc.stdout` holds what the server wrote (an in-memory file)."""
    full_env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", **(env or {})}
    proc = subprocess.Popen(args, env=full_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    failed = True
    try:
        wait_port(port, timeout, proc)
        yield proc
        failed = False
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        pipe = proc.stdout
        assert pipe is not None
        # what is there now only: a child process of the server may still hold the pipe open
        os.set_blocking(pipe.fileno(), False)
        output = pipe.read() or b""
        pipe.close()
        proc.stdout = io.BytesIO(output)
        if failed:
            # the server's own account of a failed test (pytest shows it with the failure)
            print(f"--- output of {' '.join(args)} ---", file=sys.stderr)
            print(output.decode(errors="replace")[-4000:], file=sys.stderr)


def uvicorn_cmd(app: str, port: int) -> list[str]:
    return [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--loop", "uvloop", "--http", "httptools", "--no-proxy-headers"]


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes exactly as given (no client-side URL normalization) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def raw_get(port: int, target: str, headers: str = "") -> tuple[int, bytes]:
    """GET a raw request-target; returns (status, whole response bytes)."""
    response = raw_request(
        port, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Connection: close\r\n\r\n".encode()
    )
    status = int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0
    return status, response
