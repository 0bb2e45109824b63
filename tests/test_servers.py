"""The same gateway module served by uvicorn, hypercorn and granian, each in its own process."""

from __future__ import annotations

import hashlib
import os
import time

import httpx
import pytest

from asgigate.testing import BackgroundServer

from servers import PYTHON, free_port, serve_process, uvicorn_cmd


def commands(server: str, port: int) -> list[str]:
    app = "apps.gateway_app:app"
    if server == "uvicorn":
        return uvicorn_cmd(app, port)
    if server == "hypercorn":
        return [PYTHON, "-m", "hypercorn", app, "--bind", f"127.0.0.1:{port}", "--log-level", "warning"]
    return [PYTHON, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--log-level", "warning", app]


@pytest.mark.parametrize("server", ["uvicorn", "hypercorn", "granian"])
def test_gateway_under_each_server(server: str, upstream: BackgroundServer) -> None:
    port = free_port()
    with serve_process(commands(server, port), port, env={"UPSTREAM_URL": upstream.url}):
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=10) as client:
            assert client.get(f"{base}/healthz").json() == {"ok": True}
            data = client.get(f"{base}/api/echo/a%2Fb?q=%20x").json()
            assert data["raw_path"] == "/echo/a%2Fb"
            assert data["query_string"] == "q=%20x"
            body = os.urandom(300_000)
            posted = client.post(f"{base}/api/echo", content=body).json()
            assert posted["body_sha256"] == hashlib.sha256(body).hexdigest()
            streamed = client.get(f"{base}/api/stream?chunks=30&size=4096")
            assert len(streamed.content) == 30 * 4096
            missing = client.get(f"{base}/nope")
            assert missing.status_code == 404
            assert missing.headers["content-type"] == "application/problem+json"


def test_background_server_replies_without_waiting_for_delayed_acks() -> None:
    """Its sockets are TCP_NODELAY (asyncio sets it only on a socket made with IPPROTO_TCP): a small reply goes out
    at once instead of after the client's delayed ACK, about 40 ms a request on Linux."""
    from asgigate import Direct, Gateway, Route

    class Hello(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/", Direct(text="hi"))]

    with BackgroundServer(Hello(access_log=False)) as server, httpx.Client(base_url=server.url) as client:
        client.get("/")
        started = time.perf_counter()
        for _ in range(20):
            client.get("/")
        assert time.perf_counter() - started < 0.6  # 20 x 40 ms = 0.8 s with the delayed ACKs
