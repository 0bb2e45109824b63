"""A minimal Redis client for the one call on a Redis rate limit's hot path: count a fixed window.

It speaks RESP2 over one asyncio connection and pipelines automatically: the commands of every request that asks
in the same event-loop iteration go out in one write, and their replies come back in one read. The counter keys
and expiry are those of `limits`' own fixed window (``LIMITS:<key>``, INCRBY then EXPIRE on the window's first
hit), so `usage()`, `reset()` and other strategies through `limits` see the same counters.

A library client would be preferable, and is not used because the numbers say otherwise: with redis-py 8
(``redis.asyncio``, hiredis) making the same call, a Redis-limited gateway serves 0.54-0.56x the requests/s
(two timed runs) or an estimated 0.66x (instruction counts), coredis less still (issue 16 asked for 0.85x;
benchmarks/README.md, "Redis clients", measures them side by side with ``run.sh --redis-clients``).

Only standalone ``redis://`` / ``rediss://`` servers; Cluster, Sentinel and other stores go through `limits`.
It reads the URI as coredis (limits' client) does: ``user:password@``, the database, and the TLS settings of a
``rediss://`` URI's query (`tls_context`), so one URI configures both clients.
"""

from __future__ import annotations

import asyncio
import collections
import os
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

__all__ = ["RedisError", "RedisWire", "tls_context"]

# One round trip: the count and the window's remaining milliseconds (limits' incr_expire.lua, plus PTTL).
_INCR_WINDOW = b"""local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if current == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("pttl", KEYS[1])}
"""


def _sha1(data: bytes) -> bytes:
    import hashlib

    return hashlib.sha1(data).hexdigest().encode()


_INCR_WINDOW_SHA = _sha1(_INCR_WINDOW)


_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def tls_context(params: Mapping[str, str]) -> ssl.SSLContext:
    """The TLS context coredis builds from a ``rediss://`` URI's query, with the same names and defaults.

    ``ssl_ca_certs`` (a CA file or directory), ``ssl_certfile`` and ``ssl_keyfile`` (a client certificate),
    ``ssl_cert_reqs`` (``none``, ``optional``: the default, which for a client verifies like ``required``)
    and ``ssl_check_hostname`` (off by default). One URI thus configures RedisWire and `limits` alike.
    """
    context = ssl.create_default_context()
    certfile, keyfile = params.get("ssl_certfile"), params.get("ssl_keyfile")
    if bool(certfile) != bool(keyfile):
        raise ValueError("ssl_certfile and ssl_keyfile go together (a client certificate and its key)")
    if certfile and keyfile:
        context.load_cert_chain(certfile=certfile, keyfile=keyfile)
    if ca := params.get("ssl_ca_certs"):
        context.load_verify_locations(**{("capath" if os.path.isdir(ca) else "cafile"): ca})
    check = params.get("ssl_check_hostname", "")
    context.check_hostname = bool(check) and check.upper() not in ("0", "F", "FALSE", "N", "NO")
    reqs = params.get("ssl_cert_reqs") or "optional"
    if reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs={reqs!r}: use none, optional or required")
    context.verify_mode = _CERT_REQS[reqs]
    return context


class RedisError(Exception):
    """An error reply from the server (``-ERR ...``)."""


def _command(*words: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        parts.append(b"$%d\r\n%s\r\n" % (len(word), word))
    return b"".join(parts)


class _Incomplete(Exception):
    pass


def _parse(buffer: bytes | bytearray, pos: int) -> tuple[Any, int]:
    """One RESP2 value from `buffer` at `pos`: (value, next position); `_Incomplete` when more bytes are needed."""
    end = buffer.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buffer[pos]
    line = bytes(buffer[pos + 1 : end])
    pos = end + 2
    if kind == 58:  # ':'
        return int(line), pos
    if kind == 43:  # '+'
        return line, pos
    if kind == 45:  # '-'
        return RedisError(line.decode("utf-8", "replace")), pos
    if kind == 36:  # '$'
        size = int(line)
        if size < 0:
            return None, pos
        if len(buffer) < pos + size + 2:
            raise _Incomplete
        return bytes(buffer[pos : pos + size]), pos + size + 2
    if kind == 42:  # '*'
        count = int(line)
        if count < 0:
            return None, pos
        items = []
        for _ in range(count):
            item, pos = _parse(buffer, pos)
            items.append(item)
        return items, pos
    raise RedisError(f"unexpected reply byte {chr(kind)!r}")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.buffer = bytearray()
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False
        self.closed: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        pos = 0
        waiting = self.waiting
        try:
            while pos < len(buffer):
                value, pos = _parse(buffer, pos)
                if not waiting:
                    self._fail(RedisError("reply without a request"))
                    return
                future = waiting.popleft()
                if not future.done():
                    if isinstance(value, RedisError):
                        future.set_exception(value)
                    else:
                        future.set_result(value)
        except _Incomplete:
            pass
        except (ValueError, RedisError) as exc:
            self._fail(RedisError(f"malformed reply: {exc}"))
            return
        del buffer[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("Redis closed the connection"))

    def _fail(self, exc: Exception) -> None:
        self.closed = exc
        while self.waiting:
            future = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    def send(self, payload: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        if self.closed is not None:
            raise self.closed
        future: asyncio.Future[Any] = loop.create_future()
        self.waiting.append(future)
        self.outgoing.append(payload)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.transport is not None and self.closed is None:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()


class RedisWire:
    """One pipelined connection to a standalone Redis, opened on first use and re-opened after a failure.

    Calls have no timeout of their own: the rate limit store bounds each one (`RateLimitStore.timeout`).
    """

    def __init__(
        self,
        uri: str,
        *,
        key_prefix: str = "LIMITS",
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(uri.removeprefix("async+"))
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"RedisWire speaks to redis:// or rediss:// servers, not {parts.scheme}://")
        query = dict(urllib.parse.parse_qsl(parts.query))
        self.host = parts.hostname or "localhost"
        self.port = parts.port or 6379
        self.tls = parts.scheme == "rediss"
        # the URI's credentials win over the keyword ones, as in coredis
        self.username = urllib.parse.unquote(parts.username) if parts.username else username
        self.password = urllib.parse.unquote(parts.password) if parts.password else password
        path = parts.path.strip("/")
        self.db = int(query.get("db") or path or 0)
        self.ssl: ssl.SSLContext | None = None
        if self.tls:
            self.ssl = ssl_context if ssl_context is not None else tls_context(query)
        elif ssl_context is not None or any(name.startswith("ssl_") for name in query):
            raise ValueError("TLS settings (ssl_*) need a rediss:// URI")
        self.prefix = key_prefix + ":"
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @staticmethod
    def supports(uri: str) -> bool:
        scheme = urllib.parse.urlsplit(uri.removeprefix("async+")).scheme
        return scheme in ("redis", "rediss")

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        loop = asyncio.get_running_loop()
        if protocol is not None and protocol.closed is None and self._loop is loop:
            return protocol
        if self._connecting is not None and self._loop is loop and not self._connecting.done():
            return await asyncio.shield(self._connecting)
        self._loop = loop
        self._connecting = loop.create_future()
        try:
            protocol = await self._open(loop)
        except BaseException as exc:
            self._connecting.set_exception(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            self._connecting.exception()  # retrieved: waiters re-raise it
            self._connecting = None
            raise
        self._protocol = protocol
        self._connecting.set_result(protocol)
        return protocol

    async def _open(self, loop: asyncio.AbstractEventLoop) -> _Protocol:
        _, protocol = await loop.create_connection(_Protocol, self.host, self.port, ssl=self.ssl)
        setup = []
        if self.password is not None:
            auth = (b"AUTH", self.username.encode(), self.password.encode()) if self.username else (
                b"AUTH", self.password.encode())
            setup.append(protocol.send(_command(*auth), loop))
        if self.db:
            setup.append(protocol.send(_command(b"SELECT", b"%d" % self.db), loop))
        setup.append(protocol.send(_command(b"SCRIPT", b"LOAD", _INCR_WINDOW), loop))
        try:
            results = await asyncio.gather(*setup)
        except BaseException:
            protocol._fail(ConnectionError("Redis connection setup failed"))
            raise
        if results[-1] != _INCR_WINDOW_SHA:
            protocol._fail(RedisError("SCRIPT LOAD returned an unexpected digest"))
            raise RedisError(f"SCRIPT LOAD returned {results[-1]!r}")
        return protocol

    async def incr_window(self, key: str, expiry: int, amount: int = 1) -> tuple[int, int]:
        """Count `amount` in the fixed window `key` lasting `expiry` seconds: (count, milliseconds left)."""
        protocol = self._protocol
        loop = self._loop
        if protocol is None or protocol.closed is not None or loop is not asyncio.get_running_loop():
            protocol = await self._connection()
            loop = self._loop
            assert loop is not None
        full = (self.prefix + key).encode()
        payload = b"*6\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n$%d\r\n%s\r\n$%d\r\n%d\r\n$%d\r\n%d\r\n" % (
            _INCR_WINDOW_SHA, len(full), full, len(b"%d" % expiry), expiry, len(b"%d" % amount), amount)
        try:
            count, ttl = await protocol.send(payload, loop)
        except RedisError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # The server lost its scripts (a restart on the same connection is impossible, a SCRIPT FLUSH is not).
            count, ttl = await protocol.send(
                _command(b"EVAL", _INCR_WINDOW, b"1", full, b"%d" % expiry, b"%d" % amount), loop)
        return int(count), int(ttl)

    async def command(self, *words: bytes) -> Any:
        """Any command, its decoded reply (for tests and admin use)."""
        protocol = await self._connection()
        assert self._loop is not None
        return await protocol.send(_command(*words), self._loop)

    def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None

    def __repr__(self) -> str:
        return f"RedisWire({'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/{self.db})"
