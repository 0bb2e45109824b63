"""One upstream HTTP/1.1 connection: an asyncio.Protocol that writes requests and parses responses.

The protocol is a state machine driven by two sides:

* the event loop calls `data_received` / `connection_lost` / `pause_writing` / ...; the httptools parser
  turns bytes into `on_*` callbacks that fill in the current response;
* exactly one task at a time (first `ConnectionPool.request`, then the `UpstreamResponse` consumer) reads
  that state and, when it has to wait, parks on a single future (`waiter()`), which every state change wakes.
  Waking too often is harmless: waiters re-check their condition in a loop. One future instead of one per
  event keeps the hot path to a single suspension per request.

Errors are never set on futures: they are stored in `error` and raised by whoever reads the state, so no
"exception was never retrieved" noise when nobody is waiting.

Timers: one `TimerHandle` per connection, re-used for idle expiry, read and write timeouts. Activity just
moves `_deadline` forward (a float store); when the handle fires early it re-schedules itself at the new
deadline. So a steady stream of requests costs no `call_later`/`cancel` at all, unlike `asyncio.wait_for`.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from typing import TYPE_CHECKING, Final, cast

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from asgigate.errors import UpstreamConnectError, UpstreamError, UpstreamProtocolError, UpstreamTimeout

if TYPE_CHECKING:
    from asgigate._http1.pool import ConnectionPool

__all__ = ["HIGH_WATER", "LOW_WATER", "Connection"]

# Response-body buffering. Above HIGH_WATER buffered bytes the transport stops reading, so TCP pushes back on
# the upstream; it resumes once the consumer has drained the buffer to LOW_WATER. One read can add up to the
# transport's read size (256 KiB) on top, so the buffer stays well under 1 MiB per connection.
HIGH_WATER: Final = 256 * 1024
LOW_WATER: Final = 64 * 1024

# What the shared timer means when it fires.
_NO_TIMER: Final = 0
_IDLE: Final = 1  # close the idle connection
_READ: Final = 2  # the upstream was silent for read_timeout while we wait for the response
_WRITE: Final = 3  # a write stayed blocked (paused by flow control) for write_timeout

# A timer that fires this close to its deadline counts as expired (the loop may run handles slightly early).
_TIMER_SLACK: Final = 0.001


class _StopParsing(Exception):
    """Raised in a parser callback to make llhttp stop: after a HEAD response, or on bytes after a response."""


class Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to the upstream, carrying one request/response exchange at a time.

    Attributes without an underscore are read by the pool and the response object (same package).
    """

    __slots__ = (
        "_buffered",
        "_chunks",
        "_deadline",
        "_eof_body",
        "_informational",
        "_is_head",
        "_loop",
        "_parser",
        "_pool",
        "_read_timeout",
        "_reading_paused",
        "_timeout",
        "_timer",
        "_timer_mode",
        "_transport",
        "_waiter",
        "closed",
        "complete",
        "error",
        "got_data",
        "head_done",
        "headers",
        "http_version",
        "idle",
        "in_exchange",
        "keep_alive",
        "reason",
        "requests",
        "status",
        "write_paused",
    )

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool
        self._loop = asyncio.get_running_loop()  # protocol factories run inside the loop
        self._transport: asyncio.Transport | None = None
        # One parser for the connection's lifetime, from its first exchange until it closes: llhttp starts over
        # after each keep-alive message. It is replaced only after we stopped it on purpose (HEAD, trailing
        # garbage), leaving it in error state. It calls back into this protocol, so it is made only for a
        # connection that is open and dropped when it closes: a connection that failed is then no cycle.
        self._parser: HttpResponseParser | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_mode = _NO_TIMER
        self._deadline = 0.0
        self._timeout = 0.0  # the timeout of the armed mode; activity pushes the deadline by this much
        self._read_timeout: float | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reading_paused = False
        self._is_head = False
        self._eof_body = False
        self._informational = False
        self.closed = False
        self.idle = False
        self.in_exchange = False
        self.requests = 0  # exchanges started on this connection; > 1 means it was reused from the pool
        self.write_paused = False
        self.error: UpstreamError | None = None
        self.got_data = False  # any response byte arrived during the current exchange
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.http_version = "1.1"

    # ------------------------------------------------------------------ used by the pool and the response

    @property
    def reusable(self) -> bool:
        """The last exchange ended cleanly and the upstream allows another request on this connection.

        Request bytes still unsent mean the upstream answered without reading the whole request: the leftover
        would be read as the start of the next request, so such a connection is never reused.
        """
        return (
            self.complete
            and self.keep_alive
            and self.error is None
            and not self.closed
            and self._transport is not None
            and self._transport.get_write_buffer_size() == 0
        )

    def begin(self, is_head: bool, read_timeout: float | None) -> None:
        """Reset the per-exchange state before writing a new request."""
        self.requests += 1
        self.in_exchange = True
        self.idle = False
        self._timer_mode = _NO_TIMER  # the idle timer must not fire on a busy connection
        self._is_head = is_head
        self._read_timeout = read_timeout
        self._informational = False
        self._eof_body = False
        self.got_data = False
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.status = 0
        self.reason = b""
        self.headers = []
        self.error = None
        if self.closed:
            # Lost while parked (between the pool handing it out and now): report it like a stale keep-alive.
            self.error = self._lost_error(None)
        elif self._parser is None:
            self._parser = HttpResponseParser(self)

    def write(self, data: bytes) -> None:
        if not self.closed:
            assert self._transport is not None
            self._transport.write(data)

    async def drain(self, write_timeout: float | None) -> None:
        """Wait until the transport's write buffer is below its low-water mark (flow control)."""
        self._arm(_WRITE, write_timeout)
        while self.write_paused and self.error is None and not self.closed and not self.complete:
            await self.waiter()
        if self._timer_mode == _WRITE:
            self._timer_mode = _NO_TIMER
        if self.error is not None:
            raise self.error

    def request_sent(self) -> None:
        """The whole request is written: from now on the upstream owes us bytes within read_timeout."""
        if not self.complete and not self._reading_paused and not self.closed:
            self._arm(_READ, self._read_timeout)

    def waiter(self) -> asyncio.Future[None]:
        """A future resolved at the next state change (head, body chunk, end, drain, loss, error)."""
        fut = self._loop.create_future()
        self._waiter = fut
        return fut

    def head_ready(self) -> bool:
        """True once the final response head is parsed; raises the connection's error instead of waiting."""
        if self.head_done:
            return True
        if self.error is not None:
            raise self.error
        return False

    def next_chunk(self) -> bytes | None:
        """Next buffered body chunk; b"" when the body is complete; None if the caller must wait.

        Buffered bytes are handed out before an error is raised: they arrived intact, and the caller learns
        about the truncation on the next call, never through a b"" that would make the body look complete.
        """
        chunks = self._chunks
        if chunks:
            chunk = chunks.popleft()
            self._buffered -= len(chunk)
            if self._reading_paused and self._buffered <= LOW_WATER:
                self._resume_reading()
            return chunk
        if self.complete:
            return b""
        if self.error is not None:
            raise self.error
        return None

    def take_body(self) -> bytes:
        """The whole buffered body, for a response that was complete by the time its head was returned."""
        chunks = self._chunks
        if not chunks:
            return b""
        body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return body

    def end_exchange(self) -> None:
        """The exchange is over and the connection goes back to the pool (reusable is True)."""
        self.in_exchange = False
        self._chunks.clear()
        self._buffered = 0
        if self._reading_paused:
            # Keep reading while idle: that is how we notice the upstream closing the connection.
            self._resume_reading()

    def park(self, idle_timeout: float | None) -> None:
        """Put the connection into the idle set: it expires after idle_timeout."""
        self.idle = True
        self._arm(_IDLE, idle_timeout)

    def close(self, *, abort: bool = True) -> None:
        """Close the connection; abort drops unsent request bytes, which is what a dirty connection needs."""
        if self.closed:
            return
        self.closed = True
        self._cancel_timer()
        if self._transport is not None:
            if abort:
                self._transport.abort()
            else:
                self._transport.close()
        if self.idle:
            self.idle = False
            self._pool._idle_gone(self)
        self._parser = None  # it calls back into this protocol: a cycle once nothing else holds the connection
        self._wake()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, so no isinstance check here.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Requests are written in one go; never let Nagle hold the last segment back.
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass

    def data_received(self, data: bytes) -> None:
        if not self.in_exchange or self.complete:
            # Bytes nobody asked for (on an idle connection, or after the complete response): garbage or a
            # late answer. The connection can never be trusted for another request.
            self.keep_alive = False
            self.close()
            return
        self.got_data = True
        if self._timer_mode == _READ:
            self._deadline = self._loop.time() + self._timeout
        parser = self._parser
        assert parser is not None
        try:
            parser.feed_data(data)
        except HttpParserUpgrade:
            self._fail_protocol("unexpected protocol upgrade")
        except HttpParserError as exc:
            if self.complete:
                # We stopped llhttp on purpose: after a HEAD response, or because bytes followed the response.
                # The parser is now in an error state; the next exchange gets a fresh one. After a HEAD the
                # connection stays reusable only if this read ended exactly at the end of the head (no body
                # bytes we could have missed that would otherwise be read as the next response).
                self._parser = None
                if not (self._is_head and data.endswith(b"\r\n\r\n")):
                    self.keep_alive = False
            else:
                cause = exc.__context__
                self._fail_protocol(f"invalid response: {exc!r}" + (f" ({cause!r})" if cause else ""))

    def eof_received(self) -> bool | None:
        return None  # let the transport close; connection_lost decides what the EOF means

    def connection_lost(self, exc: Exception | None) -> None:
        was_closed = self.closed
        self.closed = True
        self._cancel_timer()
        # The parser calls back into this protocol and the transport holds it: without these links a closed
        # connection is a reference cycle, freed only by a full garbage collection.
        self._parser = None
        self._transport = None
        if self.idle:
            self.idle = False
            self._pool._idle_gone(self)
            return
        if self.in_exchange and not self.complete and self.error is None:
            if self.head_done and self._eof_body and exc is None and not was_closed:
                # A body without content-length or chunking ends when the upstream closes: that is success.
                self.complete = True
                self.keep_alive = False
            else:
                self.error = self._lost_error(exc)
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            raise _StopParsing  # the upstream sent bytes after the complete response

    def on_status(self, reason: bytes) -> None:
        self.reason += reason  # may arrive in pieces when the status line spans two reads

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.head_done:  # afterwards: chunked trailers, which we drop (the head is already out)
            self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise _StopParsing("unexpected 101 Switching Protocols")
            # 1xx informational (100 Continue, 103 Early Hints): skip it, the real response follows.
            self._informational = True
            self.reason = b""
            self.headers = []
            return
        self.status = status
        self.http_version = parser.get_http_version()
        keep_alive = parser.should_keep_alive()
        if self._is_head:
            # llhttp does not know the request was HEAD and would wait for a body the upstream never sends.
            self.keep_alive = keep_alive or _head_keep_alive(self.http_version, self.headers)
            self.head_done = True
            self._finish()
            raise _StopParsing
        self.keep_alive = keep_alive
        # should_keep_alive() is False for read-until-EOF bodies; only then is the header scan worth it.
        self._eof_body = not keep_alive and _body_until_eof(status, self.headers)
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._reading_paused:
            self._pause_reading()
        if self._waiter is not None:
            self._wake()

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        self._finish()

    # ------------------------------------------------------------------ internals

    def _finish(self) -> None:
        self.complete = True
        self._timer_mode = _NO_TIMER
        self._wake()

    def _wake(self) -> None:
        fut = self._waiter
        if fut is not None:
            self._waiter = None
            if not fut.done():
                fut.set_result(None)

    def _pause_reading(self) -> None:
        self._reading_paused = True
        if self._timer_mode == _READ:
            self._timer_mode = _NO_TIMER  # the consumer is slow, not the upstream
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()
        if self.in_exchange and not self.complete:
            self._arm(_READ, self._read_timeout)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.keep_alive = False
        self.close()

    def _fail_protocol(self, internal: str) -> None:
        stage = "response_body" if self.head_done else "response_headers"
        self._fail(
            UpstreamProtocolError(
                "The upstream sent an invalid response.",
                stage=stage,
                upstream=self._pool.name,
                internal=internal,
            )
        )

    def _lost_error(self, exc: Exception | None) -> UpstreamError:
        """The error for a connection that closed before the response was complete."""
        name = self._pool.name
        reason = f"connection lost: {exc!r}" if exc is not None else "connection closed by upstream"
        if not self.got_data:
            # Nothing of the response arrived. On a reused connection this is the keep-alive race the pool
            # retries; otherwise the upstream accepted the connection and dropped it.
            return UpstreamConnectError(
                "The upstream closed the connection.",
                stage="connect",
                upstream=name,
                internal=f"{reason} before any response byte (request #{self.requests} on this connection)",
            )
        stage = "response_body" if self.head_done else "response_headers"
        return UpstreamProtocolError(
            "The upstream closed the connection mid-response.",
            stage=stage,
            upstream=name,
            internal=f"{reason} during {stage}",
        )

    def _arm(self, mode: int, timeout: float | None) -> None:
        if timeout is None:
            self._timer_mode = _NO_TIMER
            return
        deadline = self._loop.time() + timeout
        self._deadline = deadline
        self._timeout = timeout
        self._timer_mode = mode
        timer = self._timer
        if timer is None:
            self._timer = self._loop.call_at(deadline, self._on_timer)
        elif timer.when() > deadline:
            # Only an earlier deadline needs a new handle; a later one is picked up when the old one fires.
            timer.cancel()
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        self._timer_mode = _NO_TIMER
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        mode = self._timer_mode
        if mode == _NO_TIMER or self.closed:
            return
        if self._deadline - self._loop.time() > _TIMER_SLACK:
            self._timer = self._loop.call_at(self._deadline, self._on_timer)  # activity moved the deadline
            return
        self._timer_mode = _NO_TIMER
        if mode == _IDLE:
            self.close(abort=False)
            return
        if mode == _READ:
            detail, internal = "The upstream did not respond in time.", "no response bytes"
        else:
            detail, internal = "The upstream stopped reading the request.", "request write blocked"
        stage = "read" if mode == _READ else "write"
        self._fail(
            UpstreamTimeout(
                detail,
                stage=stage,
                upstream=self._pool.name,
                internal=f"{stage} timeout: {internal} for {self._timeout}s",
            )
        )


def _body_until_eof(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a (non-HEAD) response body is delimited by the upstream closing the connection."""
    if status in (204, 304):
        return False
    for name, value in headers:
        if name == b"transfer-encoding":
            # Chunked as the final coding frames the body; any other coding means read until close.
            return not value.rstrip().lower().endswith(b"chunked")
        if name == b"content-length":
            return False
    return True


def _head_keep_alive(http_version: str, headers: list[tuple[bytes, bytes]]) -> bool:
    """Keep-alive for a HEAD response without framing headers (llhttp assumes such a body runs until EOF)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(token.strip().lower() for token in value.split(b","))
    if b"close" in tokens:
        return False
    return http_version == "1.1" or b"keep-alive" in tokens
