"""RateLimit on Memcached, Redis Sentinel and Redis Cluster (real servers): exact across two gateway instances.

Each gateway runs under its own uvicorn with its own event loop and store client; they share only the store.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from starlette.responses import PlainTextResponse

from asgigate import ConcurrencyLimit, ConfigurationError, Direct, Exchange, Gateway, RateLimit, Route
from asgigate.policies.ratelimit import Limit, RateLimitStore, by_route
from asgigate.testing import BackgroundServer

from servers import run_closing
from storeservers import MemcachedServer, RedisCluster, RedisSentinel

LIMIT = 20
STRATEGIES = {
    "memcached": ("fixed-window", "sliding-window"),  # limits has no moving window on Memcached
    "sentinel": ("fixed-window", "moving-window", "sliding-window"),
    "cluster": ("fixed-window", "moving-window", "sliding-window"),
}
SERVERS = {"memcached": MemcachedServer, "sentinel": RedisSentinel, "cluster": RedisCluster}


@pytest.fixture(scope="module", params=sorted(SERVERS))
def store_uri(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    with SERVERS[request.param]() as server:
        yield request.param, server.uri


def gateway(uri: str, run: str, strategies: tuple[str, ...]) -> tuple[Gateway, RateLimitStore]:
    store = RateLimitStore(uri, timeout=2.0)  # one client per gateway instance
    policies = {strategy: RateLimit(Limit(f"{LIMIT}/hour", strategy=strategy),  # type: ignore[arg-type]
                                    key=by_route, store=store, name=f"{run}-{strategy}")
                for strategy in strategies}

    class Edge(Gateway):
        def routes(self) -> list[Route]:
            return [Route(f"/{strategy}", Direct(text=strategy), policies=[policy])
                    for strategy, policy in policies.items()]

    return Edge(request_id=False, access_log=False), store


def test_exact_across_two_gateways(store_uri: tuple[str, str]) -> None:
    kind, uri = store_uri
    strategies = STRATEGIES[kind]
    run = f"{kind}{time.time_ns()}"
    (first, first_store), (second, second_store) = gateway(uri, run, strategies), gateway(uri, run, strategies)

    async def hammer(urls: list[str]) -> dict[str, list[int]]:
        clients = [httpx.AsyncClient(base_url=url, timeout=10) for url in urls]
        semaphore = asyncio.Semaphore(24)

        async def one(n: int, path: str) -> tuple[str, int]:
            async with semaphore:
                return path, (await clients[n % 2].get(path)).status_code

        try:
            results = await asyncio.gather(*(one(n, f"/{strategy}")
                                             for n in range(3 * LIMIT) for strategy in strategies))
        finally:
            for client in clients:
                await client.aclose()
        found: dict[str, list[int]] = {}
        for path, status in results:
            found.setdefault(path, []).append(status)
        return found

    with BackgroundServer(first) as a, BackgroundServer(second) as b:
        found = asyncio.run(hammer([a.url, b.url]))
    for store in (first_store, second_store):  # every decision was made in the shared store
        assert (store.failures, store.last_error) == (0, None)
    for path, codes in found.items():
        assert set(codes) == {200, 429}, (path, codes)
        if path == "/sliding-window":
            assert 0 < codes.count(200) <= LIMIT, (kind, path, codes.count(200))
        else:
            assert codes.count(200) == LIMIT, (kind, path, codes.count(200))


def test_memcached_cannot_share_concurrency_slots() -> None:
    with pytest.raises(ConfigurationError, match="need Redis"):
        ConcurrencyLimit(5, store="memcached://127.0.0.1:11211")


@pytest.mark.parametrize("store_uri", ["cluster", "sentinel"], indirect=True)  # Memcached: see above
def test_concurrency_slots_shared_by_two_gateways(store_uri: tuple[str, str]) -> None:
    _, uri = store_uri
    name = f"slots{time.time_ns()}"
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most

    async def slow(exchange: Exchange) -> PlainTextResponse:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        try:
            await asyncio.sleep(1.0)  # long enough for the burst to arrive while two are held, even on a busy machine
        finally:
            with lock:
                in_flight[0] -= 1
        return PlainTextResponse("done")

    made: list[ConcurrencyLimit] = []

    def edge() -> Gateway:
        slots = ConcurrencyLimit(2, store=RateLimitStore(uri, timeout=2.0), name=name)  # the same slots in both
        made.append(slots)

        class Edge(Gateway):
            def routes(self) -> list[Route]:
                return [Route("/slow", slow, policies=[slots])]

        return Edge(request_id=False, access_log=False)

    first, second = edge(), edge()

    async def burst(urls: list[str]) -> list[int]:
        clients = [httpx.AsyncClient(base_url=url, timeout=10) for url in urls]
        try:
            responses = await asyncio.gather(*(clients[n % 2].get("/slow") for n in range(12)))
            return [response.status_code for response in responses]
        finally:
            for client in clients:
                await client.aclose()

    with BackgroundServer(first) as a, BackgroundServer(second) as b:
        statuses = asyncio.run(burst([a.url, b.url]))
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2
    assert in_flight[1] == 2  # never more than the limit, across both gateways
    assert run_closing(made[0].in_flight_everywhere(), made[0].store) == 0  # and every slot was given back
