"""RateLimit on a real redis-server: counters shared by several gateway processes (outages: test_ratelimit_outage)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from asgigate import ConcurrencyLimit, Direct, Exchange, Gateway, JSONResponse, Proxy, RateLimit, Route, Upstream
from asgigate.policies.ratelimit import Limit, RateLimitStore, by_header, by_route
from asgigate.testing import BackgroundServer

from redisserver import RedisServer
from servers import free_port, run_closing, serve_process, uvicorn_cmd, wait_until


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
    # every decision was made in Redis (a failure would have counted in a worker's memory instead)
    assert [(worker["failures"], worker["error"]) for worker in stats] == [(0, None)] * 2
    assert found["/moving-window"].count(200) == LIMIT
    assert found["/fixed-window"].count(200) == LIMIT
    assert 0 < found["/sliding-window"].count(200) <= LIMIT
    assert sum(worker["counts"]["moving-window"]["admitted"] for worker in stats) == LIMIT


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

    run_closing(run(), store)


# --- concurrency limits shared by several gateway processes ---------------------------------------------------------

SLOTS = 5


class CountingUpstream:
    """A real upstream that sleeps `delay` seconds per request and records how many it served at once."""

    def __init__(self) -> None:
        self.current = 0
        self.most = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        delay = float(dict(pair.split("=") for pair in scope["query_string"].decode().split("&") if pair)
                      .get("delay", "0"))
        self.current += 1
        self.most = max(self.most, self.current)
        try:
            await asyncio.sleep(delay)
        finally:
            self.current -= 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"done"})


def make_concurrency_app() -> Gateway:
    """Workers sharing SLOTS slots in Redis (uvicorn --factory), in front of CONCURRENCY_UPSTREAM."""
    store = RateLimitStore(os.environ["RATELIMIT_REDIS"], timeout=2.0)
    slots = ConcurrencyLimit(SLOTS, store=store, lease=float(os.environ["CONCURRENCY_LEASE"]),
                             name=os.environ["RATELIMIT_RUN"])

    class Worker(Gateway):
        def routes(self) -> list[Route]:
            return [
                Route("/slow", Proxy(Upstream(os.environ["CONCURRENCY_UPSTREAM"])), policies=[slots]),
                Route("/dead", Proxy(Upstream(f"http://127.0.0.1:{free_port()}")), policies=[slots]),
            ]

    return Worker(request_id=False, access_log=False)


@contextlib.contextmanager
def concurrency_workers(redis: RedisServer, upstream: str, lease: float) -> Iterator[tuple[list[str], Any, str]]:
    ports = [free_port(), free_port()]
    run = f"slots{time.time_ns()}"
    env = {"RATELIMIT_REDIS": redis.uri, "RATELIMIT_RUN": run, "CONCURRENCY_UPSTREAM": upstream,
           "CONCURRENCY_LEASE": str(lease)}
    command = [[*uvicorn_cmd("test_ratelimit_redis:make_concurrency_app", port), "--factory"] for port in ports]
    with serve_process(command[0], ports[0], env) as first, serve_process(command[1], ports[1], env):
        yield [f"http://127.0.0.1:{port}" for port in ports], first, f"LIMITS:asgigate-concurrency/{run}//"


def held(redis: RedisServer, key: str) -> int:
    return int(redis.command(b"ZCARD", key.encode()).strip(b":\r\n") or 0)


def test_concurrency_shared_across_processes(redis: RedisServer) -> None:
    counting = CountingUpstream()
    lease = 1.0
    # graceful shutdown would wait for the requests of the crashed gateway, still sleeping in the upstream
    with BackgroundServer(counting, timeout_graceful_shutdown=0.2) as upstream, \
            concurrency_workers(redis, upstream.url, lease) as (urls, first, key):

        async def wave() -> list[int]:
            clients = [httpx.AsyncClient(base_url=url, timeout=10) for url in urls]
            try:
                for client in clients:  # connect and load scripts outside the measured wave
                    assert (await client.get("/slow")).status_code == 200
                responses = await asyncio.gather(*(clients[n % 2].get("/slow", params={"delay": "0.3"})
                                                   for n in range(30)))
                return [response.status_code for response in responses]
            finally:
                for client in clients:
                    await client.aclose()

        statuses = asyncio.run(wave())
        assert set(statuses) == {200, 429}
        assert counting.most == SLOTS  # the upstream never saw more than the limit at once, and did see it
        assert statuses.count(200) >= SLOTS
        # a slot is given back after the response went out: the client can be done first
        wait_until(lambda: held(redis, key) == 0)
        assert held(redis, key) == 0  # every slot released

        # released when the client goes away and when the upstream fails
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(f"{urls[0]}/slow", params={"delay": "1"}, timeout=0.3)
        wait_until(lambda: held(redis, key) == 0)
        assert held(redis, key) == 0
        assert httpx.get(f"{urls[1]}/dead", timeout=5).status_code == 502
        wait_until(lambda: held(redis, key) == 0)
        assert held(redis, key) == 0

        # a gateway that crashes while holding slots: they come back when their leases run out
        async def crash() -> None:
            async with httpx.AsyncClient(base_url=urls[0], timeout=10) as doomed, \
                    httpx.AsyncClient(base_url=urls[1], timeout=10) as survivor:
                hung = [asyncio.create_task(doomed.get("/slow", params={"delay": "5"})) for _ in range(SLOTS)]
                deadline = time.monotonic() + 5
                while await asyncio.to_thread(held, redis, key) < SLOTS:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                await asyncio.sleep(lease * 1.5)  # past the first lease: the holder renewed them
                assert (await survivor.get("/slow")).status_code == 429
                first.kill()  # the holder crashes without releasing anything
                first.wait()
                assert (await survivor.get("/slow")).status_code == 429
                await asyncio.sleep(lease + 0.2)  # the leases run out
                assert (await survivor.get("/slow")).status_code == 200
                for task in hung:
                    with pytest.raises(httpx.TransportError):
                        await task

        asyncio.run(crash())
