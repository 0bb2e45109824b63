"""1 GiB up and down through a gateway process: memory stays bounded (the issue allows +50 MB of RSS)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from asgigate.testing import BackgroundServer

from servers import free_port, serve_process, uvicorn_cmd

GIB = 1024 * 1024 * 1024
LIMIT = 50 * 1024 * 1024


def memory(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(("VmRSS", "VmHWM")):
                name, value = line.split(":")
                out[name] = int(value.split()[0]) * 1024
    return out


@pytest.fixture(scope="module")
def gateway_process(upstream: BackgroundServer) -> Iterator[tuple[int, int]]:
    port = free_port()
    with serve_process(uvicorn_cmd("apps.gateway_app:app", port), port, env={"UPSTREAM_URL": upstream.url}) as proc:
        with httpx.Client() as client:  # warm up: imports, pools, first buffers
            for _ in range(5):
                client.post(f"http://127.0.0.1:{port}/api/echo", content=b"w" * 1_000_000)
                client.get(f"http://127.0.0.1:{port}/api/bytes?n=1000000")
        yield proc.pid, port


@pytest.mark.slow
def test_one_gib_download_in_bounded_memory(gateway_process: tuple[int, int]) -> None:
    pid, port = gateway_process
    baseline = memory(pid)["VmRSS"]
    size = 0
    with httpx.stream("GET", f"http://127.0.0.1:{port}/api/bytes?n={GIB}", timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw(1024 * 1024):
            size += len(chunk)
    assert size == GIB
    growth = memory(pid)["VmHWM"] - baseline
    assert growth < LIMIT, f"RSS grew by {growth / 1e6:.1f} MB"


@pytest.mark.slow
def test_one_gib_upload_in_bounded_memory(gateway_process: tuple[int, int]) -> None:
    pid, port = gateway_process
    baseline = memory(pid)["VmRSS"]
    block = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for _ in range(1024):
            digest.update(block)
            yield block

    response = httpx.post(
        f"http://127.0.0.1:{port}/api/echo", content=body(), headers={"content-length": str(GIB)}, timeout=120
    )
    assert response.status_code == 200
    data = response.json()
    assert data["body_size"] == GIB
    assert data["body_sha256"] == digest.hexdigest()
    growth = memory(pid)["VmHWM"] - baseline
    assert growth < LIMIT, f"RSS grew by {growth / 1e6:.1f} MB"
