"""AccessLog: a buffered sink for the JSON access log, for when the `logging` module costs too much.

By default every access-log line goes through Python's `logging` (the "asgigate.access" logger), which fits
any logging setup but costs tens of microseconds per line (a LogRecord, handler locks, a write and a flush
each). `AccessLog` writes the same JSON lines into a memory buffer that is written out when it fills up or
after `flush_interval` seconds, like nginx's `access_log ... buffer=64k flush=1s`: one write per many lines.

    Gateway(access_log=AccessLog("/var/log/gateway/access.log"))
    Gateway(access_log=AccessLog(sys.stdout))            # containers: JSON lines on stdout

Lines still in the buffer are written at lifespan shutdown (`Gateway.aclose`) and at interpreter exit.

`access_record` is the line itself, one per request, written by the lifecycle (`asgigate.pipeline`) when the
request is done, through `log_access`.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import time
from typing import IO, TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["AccessLog"]

access_logger = logging.getLogger("asgigate.access")


def access_record(exchange: Exchange) -> dict[str, Any]:
    """The access log line of a finished request, as a dict (see docs/observability.md for the fields)."""
    scope = exchange.scope
    record: dict[str, Any] = {
        "ts": time.time(),
        "request_id": exchange.request_id,
        "client": exchange.client_ip,
        "method": scope.get("method", "WS"),
        "path": scope.get("path"),
        "route": exchange.route.name if exchange.route else None,
        "status": exchange.status,
        "bytes_in": exchange.bytes_received,
        "bytes_out": exchange.bytes_sent,
        "duration_ms": int(exchange.elapsed_ms() * 1000.0) / 1000.0,  # whole µs; cheaper than round(x, 3)
        "upstream": exchange.upstream,
        "upstream_ms": int(exchange.upstream_ms * 1000.0) / 1000.0 if exchange.upstream_ms is not None else None,
    }
    if exchange.reason:
        record["reason"] = exchange.reason
    return record


def log_access(exchange: Exchange, sink: AccessLog | None) -> None:
    """Write a finished request's line into `sink`, or, without one, to the "asgigate.access" logger (if enabled)."""
    if sink is not None:
        sink.write(orjson.dumps(access_record(exchange)))
    elif access_logger.isEnabledFor(logging.INFO):
        access_logger.info(orjson.dumps(access_record(exchange)).decode())


class AccessLog:
    """Buffered JSON-lines access log to a file path, a file descriptor or a stream."""

    def __init__(
        self,
        target: str | os.PathLike[str] | int | IO[Any],
        *,
        buffer_size: int = 64 * 1024,
        flush_interval: float = 1.0,
    ) -> None:
        self.target = target
        self.buffer_size = buffer_size
        self.flush_interval = flush_interval
        self._stream: IO[Any] | None = None
        self._fd: int | None = None
        if isinstance(target, int):
            self._fd = target
        elif isinstance(target, (str, os.PathLike)):
            self._fd = os.open(os.fspath(target), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        else:
            self._stream = target
        self._parts: list[bytes] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        atexit.register(self.flush)

    def write(self, line: bytes) -> None:
        """Queue one line (without its newline)."""
        self._parts.append(line)
        self._size += len(line) + 1
        if self._size >= self.buffer_size:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.flush_interval, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._parts:
            return
        data = b"\n".join(self._parts) + b"\n"
        self._parts = []
        self._size = 0
        if self._fd is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            return
        stream = self._stream
        assert stream is not None
        binary = getattr(stream, "buffer", None)
        if binary is not None:
            stream.flush()  # keep ordering with text already written to the same stream
            binary.write(data)
            binary.flush()
        else:
            try:
                stream.write(data)
            except TypeError:
                stream.write(data.decode())
            stream.flush()

    def __repr__(self) -> str:
        return f"AccessLog({self.target!r}, buffer_size={self.buffer_size}, flush_interval={self.flush_interval})"
