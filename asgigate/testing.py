"""Helpers for testing a gateway through the front door: serve it, or a sample upstream, on a free local port.

    with BackgroundServer(MyGateway(...)) as server:      # real uvicorn, in a thread, on 127.0.0.1
        httpx.get(server.url + "/healthz")

Needs uvicorn (the `server` or `dev` extra).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any

__all__ = ["BackgroundServer", "serve_in_thread"]


class BackgroundServer:
    """An ASGI app under uvicorn in a daemon thread, on a free port unless one is given.

    uvicorn's own proxy-header handling is off, so the gateway's `trusted_proxies` decides, as in production
    setups the docs recommend (`--no-proxy-headers`). The socket is bound when the object is made, so `url` and
    `port` are known (and the port is held) before `start()`. Other keywords go to `uvicorn.Config` (`lifespan=`,
    `http="h11"`, `timeout_graceful_shutdown=` ...). `open_connections` counts the client connections the server
    holds open, for tests of connection reuse and of closing.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> None:
        import uvicorn

        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose protocol says TCP; without
        # it every small reply waits for the client's delayed ACK (about 40 ms a request instead of under 1 ms)
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                                     socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        uvicorn_options.setdefault("log_level", "warning")
        uvicorn_options.setdefault("proxy_headers", False)
        self._server = uvicorn.Server(uvicorn.Config(app, **uvicorn_options))
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"asgigate-server-{self.port}")

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        asyncio.run(self._server.serve(sockets=[self._socket]))

    @property
    def open_connections(self) -> int:
        """How many client connections the server holds open now."""
        return len(self._server.server_state.connections)

    def start(self, timeout: float = 15.0) -> BackgroundServer:
        """Serve in the background; return once the server accepts connections (raise if it fails to start)."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()  # the socket is not left open (for the garbage collector to warn about)
                raise RuntimeError(f"the server on {self.url} did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit, wait up to `timeout` seconds for it, and close the socket."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<BackgroundServer {self.url}>"


def serve_in_thread(app: Any, **options: Any) -> str:
    """Start `app` in the background for the life of the process (a sample upstream, a demo); return its URL."""
    return BackgroundServer(app, **options).start().url
