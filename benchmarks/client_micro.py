"""Micro-benchmark: small GETs through asgigate's HTTP/1.1 pool vs aiohttp's ClientSession.

Starts a uvicorn + httptools hello-world upstream in a subprocess on a free port, then, in this process and on
the same event loop, measures requests/s for sequential GETs and for 50 concurrent workers. Rounds alternate
between the two clients and the median round is reported, to even out noise.

    .venv/bin/python benchmarks/client_micro.py [--loop uvloop|asyncio] [--seconds 1.5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import aiohttp

from asgigate._http1 import ConnectionPool

UPSTREAM = """
import uvicorn

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")]})
    await send({"type": "http.response.body", "body": b"Hello, world!"})

uvicorn.run(app, host="127.0.0.1", port=PORT, http="httptools", loop="uvloop",
            log_level="warning", access_log=False, lifespan="off")
"""

Request = Callable[[], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"upstream exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError("upstream did not start")


async def run_for(request: Request, concurrency: int, seconds: float) -> float:
    """Requests/s of `concurrency` workers each sending requests back to back for `seconds`."""
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await request()
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


async def bench(port: int, seconds: float, rounds: int) -> None:
    pool = ConnectionPool("127.0.0.1", port, max_connections=100)
    headers = [(b"host", b"127.0.0.1:%d" % port), (b"user-agent", b"bench"), (b"accept", b"*/*")]

    async def via_pool() -> None:
        resp = await pool.request(b"GET", b"/", headers)
        body = b""
        while chunk := await resp.receive():
            body += chunk
        assert resp.status == 200 and body == b"Hello, world!"

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
    url = f"http://127.0.0.1:{port}/"

    async def via_aiohttp() -> None:
        async with session.get(url, headers={"user-agent": "bench", "accept": "*/*"}) as resp:
            body = await resp.read()
        assert resp.status == 200 and body == b"Hello, world!"

    for request in (via_pool, via_aiohttp):  # warm up connections, caches, branch predictors
        await run_for(request, 50, 0.3)

    print(f"{'scenario':<16}{'asgigate pool':>16}{'aiohttp':>12}{'ratio':>9}")
    for concurrency in (1, 50):
        results: dict[str, list[float]] = {"pool": [], "aiohttp": []}
        for _ in range(rounds):
            results["pool"].append(await run_for(via_pool, concurrency, seconds))
            results["aiohttp"].append(await run_for(via_aiohttp, concurrency, seconds))
        ours, theirs = statistics.median(results["pool"]), statistics.median(results["aiohttp"])
        label = "sequential" if concurrency == 1 else f"{concurrency} concurrent"
        print(f"{label:<16}{ours:>12,.0f} r/s{theirs:>8,.0f} r/s{ours / theirs:>8.2f}x")

    await session.close()
    await pool.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of one measured round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", UPSTREAM.replace("PORT", str(port))])
    try:
        wait_port(port, proc)
        print(f"upstream: uvicorn+httptools hello-world on :{port}; client loop: {args.loop}")
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(bench(port, args.seconds, args.rounds))
        else:
            asyncio.run(bench(port, args.seconds, args.rounds))
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
