"""The in-process data path of ``Upstream(url, app=asgi_app)``: the proxy talks to an ASGI app without sockets.

`AsgiPool` has the `ConnectionPool.request()` shape the proxy uses, so the proxy code is the same for both. The
app runs in its own task, as behind a server: the request body is handed to its `receive()` as the client sends
it, and each response body message is passed on before the app may send the next (the flow control a socket
gives). Failures look like a real upstream's: an app that raises or returns before its response is complete is
a 502 `upstream_protocol_error`; one that does not answer within the read timeout a 504 `upstream_timeout`; a
client body over the limit still a 413. An exception after the response is complete (a background task) is only
logged, as a server would. The app's lifespan is not run: start what it needs yourself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ..errors import UpstreamProtocolError, UpstreamTimeout, UpstreamUnavailable

if TYPE_CHECKING:
    from ..types import ASGIApp, Message, Receive, Scope, Send
    from .http import Upstream

__all__ = ["AsgiPool", "AsgiResponse", "websocket_in_process"]

logger = logging.getLogger("asgigate.upstream")

_BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))  # as the network pool: these get content-length: 0


class _Call:
    """One request to the app: its `receive` / `send` on one side, the proxy's reads on the other."""

    def __init__(self, body: bytes | AsyncIterator[bytes] | None, name: str) -> None:
        self.body = body
        self.name = name
        self.messages: deque[Message] = deque()
        self.failure: BaseException | None = None  # the app failed: raised once its messages are passed on
        self.body_failure: BaseException | None = None  # reading the client's body failed: raised at once
        self.started = False  # the app sent http.response.start
        self.finished = False  # the app sent its last body message
        self.returned = False  # the app's coroutine ended
        self.disconnected = asyncio.Event()
        self._reader: asyncio.Future[None] | None = None  # the proxy waits for a message
        self._writer: asyncio.Future[None] | None = None  # the app waits for its message to be taken
        self._body_sent = False

    def _wake(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    # --- the app's side -------------------------------------------------------------------------------------

    async def receive(self) -> Message:
        if self._body_sent or self.body_failure is not None:
            await self.disconnected.wait()
            return {"type": "http.disconnect"}
        body = self.body
        if body is None or isinstance(body, bytes):
            self._body_sent = True
            return {"type": "http.request", "body": body or b"", "more_body": False}
        try:
            chunk = await anext(body, None)
        except Exception as exc:  # the client's body failed (too large, client gone): the request is aborted
            self.body_failure = exc
            self._wake()
            return {"type": "http.disconnect"}
        if chunk is None:
            self._body_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(self, message: Message) -> None:
        if self.disconnected.is_set() or self.finished:
            return  # nobody reads any more (a server would drop these too)
        kind = message["type"]
        if kind == "http.response.start" and not self.started:
            self.started = True
        elif kind == "http.response.body" and self.started:
            self.finished = not message.get("more_body", False)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} (response started: {self.started})")
        self.messages.append(message)
        self._wake()
        if not self.finished:
            # Flow control: the next message waits until the proxy has taken this one.
            self._writer = asyncio.get_running_loop().create_future()
            await self._writer

    async def run(self, app: ASGIApp, scope: Scope) -> None:
        try:
            await app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self.finished:
                logger.warning("in-process upstream %s raised after its response", self.name, exc_info=True)
            elif self.body_failure is None:
                logger.warning("in-process upstream %s raised", self.name, exc_info=True)
                self.failure = self.protocol_error(f"in-process app raised {exc!r}")
        finally:
            self.returned = True
            self._wake()

    # --- the proxy's side -----------------------------------------------------------------------------------

    def protocol_error(self, internal: str) -> UpstreamProtocolError:
        stage = "response_body" if self.started else "response_headers"
        return UpstreamProtocolError("The upstream sent an invalid response.", stage=stage, upstream=self.name,
                                     internal=internal)

    async def next(self, timeout: float | None) -> Message:  # noqa: ASYNC109
        while True:
            if self.body_failure is not None:  # the request itself failed: whatever the app made of it is moot
                raise self.body_failure
            if self.messages:  # what the app sent before it failed is passed on first, as from a socket
                message = self.messages.popleft()
                writer = self._writer
                if writer is not None and not writer.done():
                    writer.set_result(None)
                return message
            if self.failure is not None:
                raise self.failure
            if self.returned:
                raise self.protocol_error("in-process app returned before its response was complete")
            self._reader = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._reader
            except TimeoutError:
                raise UpstreamTimeout("The upstream did not respond in time.", stage="read", upstream=self.name,
                                      internal=f"read timeout: in-process app silent for {timeout}s") from None
            finally:
                self._reader = None


class AsgiResponse:
    """A response head from the app, and its body as the app sends it (the `UpstreamResponse` interface)."""

    http_version = "1.1"
    reason = b""

    def __init__(self, call: _Call, task: asyncio.Task[None], start: Message, read_timeout: float | None,
                 pool: AsgiPool) -> None:
        self.status: int = start["status"]
        self.headers: list[tuple[bytes, bytes]] = [(bytes(n).lower(), bytes(v)) for n, v in start.get("headers", ())]
        self._call = call
        self._task = task
        self._timeout = read_timeout
        self._pool = pool
        self._done = False

    @property
    def complete(self) -> bool:
        return self._done

    async def receive(self) -> bytes:
        """The next body chunk; b"" once the body is complete (and on every later call)."""
        while not self._done:
            message = await self._call.next(self._timeout)
            more = message.get("more_body", False)
            if not more:
                self._done = True
            chunk: bytes = message.get("body", b"")
            if chunk:
                return chunk
        return b""

    async def aclose(self) -> None:
        """Let go of the app: one still sending a body is cancelled; one done with it may finish its work."""
        self._call.disconnected.set()
        self._pool.release(self._task, finished=self._done)


class AsgiPool:
    """Runs each proxied request through `app`, as `ConnectionPool` sends it over a connection."""

    def __init__(self, app: ASGIApp, upstream: Upstream) -> None:
        self.app = app
        self.name = upstream.name
        self._server = (upstream.host, upstream.port)
        self._scheme = upstream.scheme
        self._tasks: set[asyncio.Task[None]] = set()  # apps still running (background work after a response)
        self._closed = False

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
        connect_timeout: Any = None,
    ) -> AsgiResponse:
        if self._closed:
            raise UpstreamUnavailable("The upstream is not available.", stage="pool", upstream=self.name,
                                      internal="in-process upstream closed")
        raw_path, _, query = target.partition(b"?")
        framed = list(headers)
        if isinstance(body, bytes):
            framed.append((b"content-length", str(len(body)).encode()))
        elif body is not None:
            framed.append((b"content-length", str(content_length).encode()) if content_length is not None
                          else (b"transfer-encoding", b"chunked"))
        elif method in _BODY_METHODS:
            framed.append((b"content-length", b"0"))
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method.decode("latin-1"),
            "scheme": self._scheme,
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": framed,
            "client": ("127.0.0.1", 0),
            "server": self._server,
            "extensions": {},
        }
        call = _Call(body, self.name)
        task = asyncio.get_running_loop().create_task(call.run(self.app, scope))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            start = await call.next(read_timeout)
        except BaseException:
            task.cancel()
            raise
        return AsgiResponse(call, task, start, read_timeout, self)

    def release(self, task: asyncio.Task[None], *, finished: bool) -> None:
        if not finished:
            task.cancel()  # like closing the connection mid-response

    async def aclose(self) -> None:
        self._closed = True
        tasks, self._tasks = list(self._tasks), set()
        for task in tasks:
            task.cancel()
        for task in tasks:
            try:
                await task
            except asyncio.CancelledError:
                pass

    def __repr__(self) -> str:
        return f"AsgiPool({self.name!r})"


async def websocket_in_process(app: ASGIApp, scope: Scope, target: bytes, receive: Receive, send: Send) -> None:
    """A WebSocket handed to the in-process app as it is, only its path changed to the upstream's."""
    raw_path, _, query = target.partition(b"?")
    inner = dict(scope, path=unquote(raw_path.decode("latin-1")), raw_path=raw_path, query_string=query,
                 root_path="")
    await app(inner, receive, send)
