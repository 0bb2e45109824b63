"""The upstream connection pool: hands out keep-alive connections, frames requests, and leases responses.

Accounting: every connection is either idle (in `_idle`) or active (counted in `_active`: connecting,
writing a request, or leased to an `UpstreamResponse`). `_active + len(_idle) <= max_connections` always
holds. An active connection goes back exactly once, through `_release` (clean and reusable: idle set or
straight to a waiter) or `_discard` (closed); the response object drops its reference first, so a slot is
never freed twice.

Waiters (requests arriving when every slot is busy) queue in FIFO order and are handed either a released
connection directly (no stampede, no re-check) or `None`, meaning "a slot is yours: connect".
"""

from __future__ import annotations

import asyncio
import ssl as _ssl
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Final

from asgigate._http1.connection import Connection
from asgigate.errors import (
    InvalidBody,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["ConnectionPool", "UpstreamResponse"]

# Methods whose requests normally carry content: without a body they get an explicit `content-length: 0`
# (some servers answer 411 otherwise). Others get no framing header at all (RFC 9110 section 8.6).
_BODY_METHODS: Final = frozenset((b"POST", b"PUT", b"PATCH"))

# Bodies up to this size are copied behind the head so the request leaves in one send(); larger ones are
# written separately (the copy would cost more than the extra syscall).
_COALESCE: Final = 64 * 1024

_NO_BODY_FRAMING: Final = b"\r\n"
_EMPTY_BODY_FRAMING: Final = b"content-length: 0\r\n\r\n"
_CHUNKED_FRAMING: Final = b"transfer-encoding: chunked\r\n\r\n"
_LAST_CHUNK: Final = b"0\r\n\r\n"


class _PoolDefault:
    """Marks a per-request setting left to the pool's own default."""

    def __repr__(self) -> str:
        return "POOL_DEFAULT"


POOL_DEFAULT: Final = _PoolDefault()


class UpstreamResponse:
    """A response head plus a lease on its connection until the body is read (or the response is closed).

    When the whole response had arrived by the time `request()` returned, the body is detached into the
    object and the connection is back in the pool already; `receive()` then never suspends.
    """

    __slots__ = ("_body", "_conn", "_error", "_pool", "headers", "http_version", "reason", "status")

    def __init__(self, conn: Connection, pool: ConnectionPool) -> None:
        self.status = conn.status
        self.reason = conn.reason
        self.headers = conn.headers
        self.http_version = conn.http_version
        self._pool = pool
        self._error: UpstreamError | None = None
        self._conn: Connection | None = None
        self._body = b""
        if conn.complete:
            self._body = conn.take_body()
            pool._release(conn)
        else:
            self._conn = conn

    @property
    def complete(self) -> bool:
        """The whole body has arrived: one `receive()` returns all that is left, without suspending."""
        return self._conn is None and self._error is None

    async def receive(self) -> bytes:
        """The next body chunk; b"" once the body is complete (and on every later call).

        Raises UpstreamProtocolError (stage="response_body") if the upstream dropped the connection before the
        body was complete, or UpstreamTimeout (stage="read") if it went silent for read_timeout.
        """
        conn = self._conn
        if conn is None:
            if self._error is not None:
                raise self._error
            body = self._body
            self._body = b""
            return body
        while True:
            try:
                chunk = conn.next_chunk()
            except UpstreamError as exc:
                self._error = exc
                self._conn = None
                self._pool._discard(conn)
                raise
            if chunk is not None:
                if not chunk:
                    self._conn = None
                    self._pool._release(conn)
                return chunk
            try:
                await conn.waiter()
            except BaseException:
                # Cancelled (the client went away): the rest of the body will never be read.
                self._conn = None
                self._pool._discard(conn)
                raise

    async def aclose(self) -> None:
        """Give the connection back: to the pool if the body was completely received, else closed."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._pool._release(conn)  # _release closes it unless complete and reusable

    def __del__(self) -> None:
        # Safety net for a response dropped without aclose(): never leak the pool slot.
        conn = self._conn
        if conn is not None:
            self._conn = None
            try:
                self._pool._discard(conn)
            except Exception:  # the loop may be closed already
                pass


class ConnectionPool:
    """HTTP/1.1 keep-alive connections to one upstream host:port, at most max_connections at a time."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        max_connections: int = 512,
        max_idle: int = 256,
        idle_timeout: float = 30.0,
        connect_timeout: float | None = 5.0,
        pool_timeout: float | None = 5.0,
        name: str = "",
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.host = host
        self.port = port
        self.name = name or f"{host}:{port}"
        self._ssl = ssl
        self._server_hostname = server_hostname if ssl is not None else None
        self._max_connections = max_connections
        self._max_idle = max(0, max_idle)
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._pool_timeout = pool_timeout
        # Insertion-ordered dict as an ordered set: popitem() takes the most recently parked connection (LIFO
        # keeps few connections warm and lets the rest expire), removal of a lost one is O(1).
        self._idle: dict[Connection, None] = {}
        self._active = 0
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._closed = False

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def active_count(self) -> int:
        return self._active

    async def request(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | AsyncIterator[bytes] | None = None,
        *,
        content_length: int | None = None,
        read_timeout: float | None = 30.0,
        write_timeout: float | None = 30.0,
        connect_timeout: float | _PoolDefault | None = POOL_DEFAULT,
    ) -> UpstreamResponse:
        """Send one request and return once the response head has arrived.

        `headers` go out verbatim and must not contain framing headers: the pool writes content-length or
        transfer-encoding itself. A bytes body (or None) is retried once on a fresh connection if a reused
        keep-alive connection turns out to be dead before any response byte arrived; a streamed body is not.
        """
        if self._closed:
            raise self._closed_error()
        if body is not None and not isinstance(body, bytes):
            return await self._request_streaming(
                method, target, headers, body, content_length, read_timeout, write_timeout, connect_timeout
            )
        if body:
            framing = b"content-length: %d\r\n\r\n" % len(body)
        else:
            framing = _EMPTY_BODY_FRAMING if method in _BODY_METHODS else _NO_BODY_FRAMING
        head = _build_head(method, target, headers, framing)
        if body and len(body) <= _COALESCE:
            head += body
            body = None
        is_head = method == b"HEAD"

        conn = self._pop_idle()
        if conn is None:
            conn = await self._acquire_slow(connect_timeout)
        retried = False
        while True:
            try:
                conn.begin(is_head, read_timeout)
                conn.write(head)
                if body:
                    conn.write(body)
                if conn.write_paused:
                    await conn.drain(write_timeout)
                conn.request_sent()
                while not conn.head_ready():
                    await conn.waiter()
                return UpstreamResponse(conn, self)
            except UpstreamError:
                # A reused connection that died before answering anything is the keep-alive race: the
                # upstream closed it while our request was on its way. Replay once on a brand-new connection.
                reused = conn.requests > 1
                stale = reused and not conn.got_data and isinstance(conn.error, UpstreamConnectError)
                if retried or not stale:
                    self._discard(conn)
                    raise
                self._discard(conn, keep_slot=True)
                retried = True
                conn = await self._connect_in_slot(connect_timeout)
            except BaseException:
                self._discard(conn)
                raise

    async def aclose(self) -> None:
        """Close idle connections and refuse new requests; leased connections close when released."""
        self._closed = True
        for conn in list(self._idle):
            conn.close(abort=False)
        self._idle.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(self._closed_error())

    # ------------------------------------------------------------------ request bodies from async iterators

    async def _request_streaming(
        self,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: AsyncIterator[bytes],
        content_length: int | None,
        read_timeout: float | None,
        write_timeout: float | None,
        connect_timeout: float | _PoolDefault | None,
    ) -> UpstreamResponse:
        chunked = content_length is None
        limit = -1 if content_length is None else content_length
        framing = _CHUNKED_FRAMING if chunked else b"content-length: %d\r\n\r\n" % limit
        pending = _build_head(method, target, headers, framing)
        # Pull the first chunk before taking a connection: a slow client does not hold a pool slot, and the
        # head and first chunk can leave in one send().
        chunk = await _next_chunk(body)
        conn = self._pop_idle()
        if conn is None:
            conn = await self._acquire_slow(connect_timeout)
        try:
            conn.begin(method == b"HEAD", read_timeout)
            sent = 0
            finished = True
            while chunk is not None:
                size = len(chunk)
                if size:
                    sent += size
                    if chunked:
                        chunk = b"%x\r\n%b\r\n" % (size, chunk)
                    elif sent > limit:
                        raise _length_mismatch(sent, limit, "more")
                    if pending:
                        if size <= _COALESCE:
                            conn.write(pending + chunk)
                        else:
                            conn.write(pending)
                            conn.write(chunk)
                        pending = b""
                    else:
                        conn.write(chunk)
                    if conn.write_paused:
                        await conn.drain(write_timeout)
                    if conn.closed or conn.complete:
                        # The upstream answered (and maybe closed) before taking the whole body: stop sending
                        # (RFC 9112 section 9.5) and never reuse a connection with a half-sent request on it.
                        finished = False
                        break
                chunk = await _next_chunk(body)
            if finished:
                if not chunked and sent != limit:
                    raise _length_mismatch(sent, limit, "fewer")
                conn.write(pending + _LAST_CHUNK if chunked else pending)
                if conn.write_paused:
                    await conn.drain(write_timeout)
            else:
                conn.keep_alive = False
            conn.request_sent()
            while not conn.head_ready():
                await conn.waiter()
            return UpstreamResponse(conn, self)
        except BaseException:
            self._discard(conn)
            raise

    # ------------------------------------------------------------------ slots and connections

    def _pop_idle(self) -> Connection | None:
        idle = self._idle
        while idle:
            conn = idle.popitem()[0]
            conn.idle = False
            if not conn.closed:
                self._active += 1
                return conn
        return None

    async def _acquire_slow(self, connect_timeout: float | _PoolDefault | None = POOL_DEFAULT) -> Connection:
        """A connection when none is idle: connect if a slot is free, else queue for one."""
        if self._closed:
            raise self._closed_error()
        if self._active + len(self._idle) < self._max_connections:
            self._active += 1
            return await self._connect_in_slot(connect_timeout)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Connection | None] = loop.create_future()
        self._waiters.append(waiter)
        timer = None
        if self._pool_timeout is not None:
            timer = loop.call_at(loop.time() + self._pool_timeout, self._expire_waiter, waiter)
        try:
            conn = await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                # Handed a connection or slot just as we were cancelled: pass it on, do not leak it.
                handed = waiter.result()
                if handed is None:
                    self._active -= 1
                    self._wake_waiters()
                else:
                    self._release(handed)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if waiter.cancelled():  # wakers and _expire_waiter take their waiter off the queue themselves
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
        if conn is None:
            return await self._connect_in_slot(connect_timeout)
        if conn.closed:  # lost between hand-over and now
            self._discard(conn, keep_slot=True)
            return await self._connect_in_slot(connect_timeout)
        return conn

    async def _connect_in_slot(self, connect_timeout: float | _PoolDefault | None = POOL_DEFAULT) -> Connection:
        """Open a new connection in a slot already counted in `_active`; give the slot back on failure."""
        try:
            return await self._connect(connect_timeout)
        except BaseException:
            self._active -= 1
            self._wake_waiters()
            raise

    async def _connect(self, connect_timeout: float | _PoolDefault | None = POOL_DEFAULT) -> Connection:
        loop = asyncio.get_running_loop()
        timeout = self._connect_timeout if isinstance(connect_timeout, _PoolDefault) else connect_timeout
        try:
            async with asyncio.timeout(timeout):
                _, conn = await loop.create_connection(
                    lambda: Connection(self),
                    self.host,
                    self.port,
                    ssl=self._ssl,
                    server_hostname=self._server_hostname,
                )
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            raise UpstreamTimeout(
                "Timed out connecting to the upstream.",
                stage="connect",
                upstream=self.name,
                internal=f"connect to {self.host}:{self.port} timed out after {timeout}s",
            ) from exc
        except OSError as exc:  # refused, unreachable, DNS failure (gaierror), TLS handshake failure
            raise UpstreamConnectError(
                "Could not connect to the upstream.",
                stage="connect",
                upstream=self.name,
                internal=f"connect to {self.host}:{self.port} failed: {exc!r}",
            ) from exc
        return conn

    def _release(self, conn: Connection) -> None:
        """An active connection is done with its exchange: reuse it if clean, else close it."""
        if not conn.reusable or self._closed:
            self._discard(conn)
            return
        conn.end_exchange()
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)  # the slot moves with the connection: _active is unchanged
                return
        if len(self._idle) >= self._max_idle:
            self._discard(conn)
            return
        self._active -= 1
        conn.park(self._idle_timeout)
        self._idle[conn] = None

    def _discard(self, conn: Connection, *, keep_slot: bool = False) -> None:
        """Close an active connection; free its slot unless the caller reuses it for a new connection."""
        conn.close()
        if not keep_slot:
            self._active -= 1
            self._wake_waiters()

    def _idle_gone(self, conn: Connection) -> None:
        """Called by an idle connection that closed (upstream hung up, expired, or pool shutdown)."""
        self._idle.pop(conn, None)
        if self._waiters:
            self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Give free slots to queued requests: each one connects on its own."""
        waiters = self._waiters
        while waiters and self._active + len(self._idle) < self._max_connections:
            waiter = waiters.popleft()
            if not waiter.done():
                self._active += 1
                waiter.set_result(None)

    def _expire_waiter(self, waiter: asyncio.Future[Connection | None]) -> None:
        if not waiter.done():
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
            waiter.set_exception(
                UpstreamUnavailable(
                    "The upstream is at its connection limit.",
                    stage="pool",
                    upstream=self.name,
                    internal=f"no free connection within pool_timeout={self._pool_timeout}s "
                    f"(max_connections={self._max_connections})",
                )
            )

    def _closed_error(self) -> UpstreamUnavailable:
        return UpstreamUnavailable(
            "The upstream is not available.",
            stage="pool",
            upstream=self.name,
            internal="connection pool closed",
        )


def _build_head(method: bytes, target: bytes, headers: Sequence[tuple[bytes, bytes]], framing: bytes) -> bytes:
    """Serialize the request line and headers; `framing` holds the framing header (if any) and blank line."""
    if headers:
        head = b"".join(
            (method, b" ", target, b" HTTP/1.1\r\n", b"\r\n".join(map(b": ".join, headers)), b"\r\n", framing)
        )
    else:
        head = b"".join((method, b" ", target, b" HTTP/1.1\r\n", framing))
    # One C-level pass each instead of a check per header: a CR or LF inside the method, target or a header
    # would add a line and let a caller smuggle headers or a second request.
    lines = 1 + len(headers) + framing.count(b"\n")
    if head.count(b"\n") != lines or head.count(b"\r") != lines:
        raise ValueError("CR or LF in request method, target or headers")
    return head


async def _next_chunk(body: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await body.__anext__()
    except StopAsyncIteration:
        return None


def _length_mismatch(sent: int, declared: int, which: str) -> InvalidBody:
    return InvalidBody(
        "The request body does not match its Content-Length.",
        internal=f"client body has {which} bytes than declared: {sent} vs content-length {declared}",
    )
