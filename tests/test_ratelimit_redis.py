"""RateLimit on a real redis-server: counters shared by several gateway processes, and store outages."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redisserver import RedisServer

from asgigate import (
    Direct,
    Exchange,
    Gateway,
    JSONResponse,
    Limit,
    RateLimit,
    RateLimitStore,
    Route,
    by_header,
    by_route,
)

from servers import ThreadServer, free_port, serve_process, uvicorn_cmd


@pytest.fixture(scope="session")
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


# --- several gateway processes sharing one Redis ----------------------------------------------------------------

LIMIT = 40


def make_app() -> Gateway:
    """The gateway every worker process runs (uvicorn --factory), on the Redis named by RATELIMIT_REDIS."""
    store = RateLimitStore(os.environ["RATELIMIT_REDIS"], timeout=2.0)
    run = os.environ["RATELIMIT_RUN"]  # fresh counters for every test run

    policies = {strategy: RateLimit(Limit(f"{LIMIT}/hour", strategy=strategy), key=by_route, store=store,
                                    name=f"{run}-{strategy}")
                for strategy in ("moving-window", "fixed-window", "sliding-window")}

    async def stats(exchange: Exchange) -> JSONResponse:
        counts = {name: dict(policy.counts) for name, policy in policies.items()}
        return JSONResponse({"failures": store.failures, "error": store.last_error, "counts": counts})

    class Worker(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/stats", stats)] + [
                Route(f"/{strategy}", Direct(text=strategy), policies=[policy])
                for strategy, policy in policies.items()
            ]

    return Worker(request_id=False, access_log=False)


def test_exact_across_processes(redis: RedisServer) -> None:
    ports = [free_port(), free_port()]
    env = {"RATELIMIT_REDIS": redis.uri, "RATELIMIT_RUN": f"run{time.time_ns()}"}
    per_route = 3 * LIMIT
    stats: list[dict[str, Any]] = []

    async def hammer() -> dict[str, list[int]]:
        limits = httpx.Limits(max_connections=16)
        clients = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10, limits=limits) for port in ports]
        semaphore = asyncio.Semaphore(32)

        async def one(n: int, path: str) -> int:
            async with semaphore:
                return (await clients[n % 2].get(path)).status_code

        try:
            paths = ["/moving-window", "/fixed-window", "/sliding-window"]
            results = await asyncio.gather(*(one(n, path) for n in range(per_route) for path in paths))
            stats.extend([(await client.get("/stats")).json() for client in clients])
        finally:
            for client in clients:
                await client.aclose()
        found: dict[str, list[int]] = {path: [] for path in paths}
        for i, status in enumerate(results):
            found[paths[i % 3]].append(status)
        return found

    command = [[*uvicorn_cmd("test_ratelimit_redis:make_app", port), "--factory"] for port in ports]
    with serve_process(command[0], ports[0], env), serve_process(command[1], ports[1], env):
        found = asyncio.run(hammer())
    for path, codes in found.items():
        assert set(codes) <= {200, 429}, (path, codes)
    assert found["/moving-window"].count(200) == LIMIT
    assert found["/fixed-window"].count(200) == LIMIT
    assert 0 < found["/sliding-window"].count(200) <= LIMIT
    assert [worker["failures"] for worker in stats] == [0, 0], stats  # every decision was made in Redis
    assert sum(worker["counts"]["moving-window"]["admitted"] for worker in stats) == LIMIT


# --- store outages -------------------------------------------------------------------------------------------------


def outage_gateway(uri: str) -> tuple[Gateway, dict[str, RateLimitStore]]:
    stores = {mode: RateLimitStore(uri, timeout=0.2, retry_interval=0.3, on_failure=mode)  # type: ignore[arg-type]
              for mode in ("local", "open", "closed")}

    class Edge(Gateway):
        def routes(self) -> list[Route]:
            return [Route(f"/{mode}", Direct(text=mode),
                          policies=[RateLimit("3/minute", key=by_header("x-k"), store=store)])
                    for mode, store in stores.items()]

    return Edge(), stores


def test_store_outage_and_recovery() -> None:
    with RedisServer() as redis:
        gateway, stores = outage_gateway(redis.uri)
        with ThreadServer(gateway) as server, httpx.Client(base_url=server.url, timeout=10) as client:

            def get(path: str, key: str) -> httpx.Response:
                return client.get(path, headers={"x-k": key})

            assert get("/local", "a").headers["x-ratelimit-remaining"] == "2"  # counted in Redis
            assert get("/open", "a").status_code == get("/closed", "a").status_code == 200

            redis.stop()  # a dead Redis: refused connections, answered at once
            started = time.monotonic()
            local = [get("/local", "b") for _ in range(4)]
            opened = [get("/open", "b") for _ in range(5)]
            closed = get("/closed", "b")
            assert time.monotonic() - started < 3
            # local: counted in this process's memory, still exact for this process
            assert [r.status_code for r in local] == [200, 200, 200, 429]
            # open: admitted, uncounted, without headers that would be made up
            assert [r.status_code for r in opened] == [200] * 5
            assert "x-ratelimit-remaining" not in opened[0].headers
            # closed: refused with 503 through the error renderer
            assert closed.status_code == 503
            assert closed.json()["code"] == "request_terminated"
            assert closed.headers["retry-after"] == "1"
            assert all(store.down and store.failures >= 1 for store in stores.values())

            redis.start()  # back on the same port, empty
            time.sleep(0.4)  # past retry_interval
            for path in ("/local", "/open", "/closed"):
                response = get(path, "c")
                assert response.status_code == 200, path
                assert response.headers["x-ratelimit-remaining"] == "2"
            assert not any(store.down for store in stores.values())

            # a hung Redis (stopped, its socket open): no request waits longer than the store timeout
            assert redis.proc is not None
            os.kill(redis.proc.pid, signal.SIGSTOP)
            try:
                timings = []
                for _ in range(3):
                    started = time.monotonic()
                    assert get("/local", "d").status_code == 200
                    timings.append(time.monotonic() - started)
                assert timings[0] < 0.2 + 0.3  # the store timeout, plus a margin
                assert max(timings[1:]) < 0.1  # while marked down, the store is not even tried
            finally:
                os.kill(redis.proc.pid, signal.SIGCONT)
            time.sleep(0.4)
            assert get("/local", "e").headers["x-ratelimit-remaining"] == "2"
            assert not stores["local"].down


def test_usage_and_reset_in_redis(redis: RedisServer) -> None:
    store = RateLimitStore(redis.uri)
    limit = RateLimit([Limit("2/minute", strategy="moving-window"), Limit("5/day", quota=True)],
                      key=by_header("x-k"), store=store, name=f"admin{time.time_ns()}")

    class Admin(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/x", Direct(text="x"), policies=[limit])]

    async def run() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=Admin()), base_url="http://t") as client:
            codes = [(await client.get("/x", headers={"x-k": "a"})).status_code for _ in range(3)]
            assert codes == [200, 200, 429]
            burst, daily = await limit.usage("a")
            assert (burst.remaining, daily.remaining) == (0, 3)
            await limit.reset("a")
            burst, daily = await limit.usage("a")
            assert (burst.remaining, daily.remaining) == (2, 5)

    asyncio.run(run())
