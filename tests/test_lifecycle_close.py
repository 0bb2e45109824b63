"""Policies let go of their resources at gateway shutdown: rate limit stores close their Redis connections.

Real parts: a redis-server per test (its CLIENT LIST is the judge of which connections are open), a real uvicorn,
a real upstream. The lifespan is driven as a server drives it, in an event loop closed without asyncio.run's
clean-up, so that a pending task or an unclosed socket left behind shows up as a log line or a ResourceWarning.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from starlette.responses import PlainTextResponse

from asgigate import ConcurrencyLimit, Direct, Gateway, Group, Policy, Proxy, RateLimit, Route, Upstream
from asgigate.policies.ratelimit import Limit, RateLimitStore, by_route
from asgigate.testing import BackgroundServer

from redisserver import RedisServer
from servers import wait_until, wait_until_async
from storeservers import RedisCluster, RedisSentinel

T = TypeVar("T")


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:  # one per test: every connection it lists is this test's
        yield server


def clients(redis: RedisServer | int) -> list[str]:
    """A server's client connections (CLIENT LIST), without the one asking and a Sentinel's own."""
    port = redis if isinstance(redis, int) else redis.port
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"*2\r\n$6\r\nCLIENT\r\n$4\r\nLIST\r\n")
        reply = conn.recv(1 << 20).decode()
    assert reply.startswith("$"), reply
    listing = reply.split("\r\n", 1)[1]
    return [line for line in listing.splitlines()
            if line.startswith("id=") and "cmd=client" not in line and " name=sentinel-" not in line]


def clients_left(redis: RedisServer | int) -> list[str]:
    """The connections still listed once the server had time to see the closed ones go (it reads FINs later)."""
    wait_until(lambda: not clients(redis), within=5)
    return clients(redis)


def run_in_new_loop(main: Callable[[], Awaitable[T]]) -> T:
    """`main()` in an event loop that is closed as soon as it returns: nothing pending is cleaned up for it."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


class Lifespan:
    """Drives a gateway's ASGI lifespan as a server does and records what the gateway answered."""

    def __init__(self, app: Gateway) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[str] = []
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message["type"])

    async def __aenter__(self) -> httpx.AsyncClient:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.get_running_loop().create_task(self.app(scope, self._receive, self._send))
        await self.inbox.put({"type": "lifespan.startup"})
        await wait_until_async(lambda: self.sent, within=10)
        assert self.sent == ["lifespan.startup.complete"]
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://gateway")
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self.inbox.put({"type": "lifespan.shutdown"})
        assert self.task is not None
        await asyncio.wait_for(self.task, 10)


def limited_gateway(*policies: Policy) -> Gateway:
    class Edge(Gateway):
        def routes(self) -> list[Route]:
            return [Route(f"/{n}", Direct(text=str(n)), policies=[policy]) for n, policy in enumerate(policies)]

    return Edge(request_id=False, access_log=False)


# --- connections are closed at lifespan shutdown ----------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window"])  # RedisWire; coredis (limits' client)
def test_uvicorn_shutdown_closes_the_stores_redis_connections(redis: RedisServer, strategy: str) -> None:
    store = RateLimitStore(redis.uri, timeout=2.0)
    policy = RateLimit(Limit("3/minute", strategy=strategy), key=by_route, store=store,  # type: ignore[arg-type]
                       name=f"close-{strategy}")
    with BackgroundServer(limited_gateway(policy)) as server:
        codes = [httpx.get(server.url + "/0").status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert clients(redis)  # the store's connections, open while serving
    # uvicorn has run the lifespan shutdown and its thread is gone: the server sees no client of the gateway
    assert clients_left(redis) == []
    assert (store.failures, store.last_error) == (0, None)


def test_shutdown_leaves_no_socket_and_no_task(redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    shared = RateLimitStore(redis.uri, timeout=2.0)  # shared by a RateLimit and a ConcurrencyLimit, gateway-wide
    limits = [RateLimit(Limit("50/minute", strategy="moving-window"), key=by_route, store=shared, name="shared-mw"),
              RateLimit("50/minute", key=by_route, store=shared, name="shared-fw"),
              ConcurrencyLimit(5, store=shared, name="shared-concurrency")]

    class Edge(Gateway):
        def policies(self) -> list[Policy]:
            return limits

        def routes(self) -> list[Route]:
            return [Route("/a", Direct(text="a")), Route("/b", Direct(text="b"))]

    gateway = Edge(request_id=False, access_log=False)

    tasks: list[asyncio.Task[None]] = []

    async def main() -> tuple[list[str], list[str]]:
        lifespan = Lifespan(gateway)
        async with lifespan as client:
            for path in ("/a", "/b", "/a"):
                assert (await client.get(path)).status_code == 200
            open_while_serving = clients(redis)
            renewer = limits[2]._renewer  # renews the leases of requests in flight: sleeps a third of the lease
            assert renewer is not None and not renewer.done()
            tasks.append(renewer)
        return open_while_serving, lifespan.sent

    gc.collect()  # what earlier tests left behind is not this test's
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR):
        warnings.simplefilter("always")
        open_while_serving, sent = run_in_new_loop(main)
        gc.collect()
    assert open_while_serving
    assert tasks[0].cancelled()
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert clients_left(redis) == []
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert not [r for r in caplog.records if "destroyed" in r.getMessage()]
    assert (shared.failures, shared.last_error) == (0, None)


def test_a_store_that_is_down_stops_probing_at_shutdown(redis: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    store = RateLimitStore(redis.uri, timeout=0.5, connect_timeout=0.5, retry_interval=0.1)
    policy = RateLimit("5/minute", key=by_route, store=store, name="down")
    gateway = limited_gateway(policy)
    probes: list[asyncio.Task[None]] = []

    async def main() -> None:
        async with Lifespan(gateway) as client:
            assert (await client.get("/0")).status_code == 200
            redis.stop()
            assert (await client.get("/0")).status_code == 200  # on_failure="local": counted here
            assert not store.healthy
            probe = store._probe
            assert probe is not None
            probes.append(probe)
            await asyncio.sleep(0.3)  # the probe keeps trying, and failing
            assert not probe.done()

    gc.collect()  # what earlier tests left behind is not this test's
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR):
        warnings.simplefilter("always")
        run_in_new_loop(main)
        gc.collect()
    assert probes[0].cancelled()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert not [r for r in caplog.records if "destroyed" in r.getMessage()]

    # served again in a new event loop: still down, so probed again; once Redis is back, counted there again
    redis.start()

    async def again() -> list[int]:
        async with Lifespan(gateway) as client:
            assert (await client.get("/0")).status_code == 200  # still known as down: local, and a new probe
            await wait_until_async(lambda: store.healthy, within=5)
            assert store.healthy
            return [(await client.get("/0")).status_code for _ in range(6)]

    assert asyncio.run(again()) == [200] * 5 + [429]  # a fresh Redis: the store counts from zero
    assert store.outages == 1
    assert clients_left(redis) == []


@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
def test_sentinel_and_cluster_clients_are_closed(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    server: RedisSentinel | RedisCluster
    with (RedisSentinel() if kind == "sentinel" else RedisCluster()) as server:
        ports = [server.primary_port, server.port] if isinstance(server, RedisSentinel) else server.ports
        store = RateLimitStore(server.uri, timeout=2.0)
        limits = [RateLimit(Limit("3/minute", strategy=strategy), key=by_route, store=store,  # type: ignore[arg-type]
                            name=f"{kind}-{strategy}-{time.time_ns()}")
                  for strategy in ("fixed-window", "moving-window")]
        gateway = limited_gateway(*limits, ConcurrencyLimit(5, store=store, name=f"{kind}-concurrency"))
        opened: list[list[str]] = []

        async def main() -> list[int]:
            async with Lifespan(gateway) as client:
                codes = [(await client.get(f"/{n}")).status_code for n in (0, 1, 2) for _ in range(4)]
                opened.extend(clients(port) for port in ports)
                return codes

        gc.collect()
        with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.ERROR):
            warnings.simplefilter("always")
            assert run_in_new_loop(main) == [200, 200, 200, 429] * 2 + [200] * 4
            gc.collect()
        assert opened[0]  # the primary (Sentinel) or a node (Cluster) had the store's connections
        assert [clients_left(port) for port in ports] == [[] for _ in ports]
        assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert not [r for r in caplog.records if "destroyed" in r.getMessage()]
        assert (store.failures, store.last_error) == (0, None)


# --- which policies are closed, and what a failing one does not stop -------------------------------------------


closed: list[str] = []


class Tracked(Policy):
    """Records its own closing; two of them with the same name compare equal, yet are distinct objects."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail

    async def aclose(self) -> None:
        closed.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} cannot close")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tracked) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def test_each_policy_closed_once_in_reverse_build_order_and_a_failure_stops_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    closed.clear()
    edge, twice, broken, inner = Tracked("edge"), Tracked("on-two-routes"), Tracked("broken", fail=True), \
        Tracked("inner")
    lookalike = Tracked("inner")  # equal to `inner`, but its own object: closed too

    with BackgroundServer(PlainTextResponse("upstream"), lifespan="off") as upstream_server:
        upstream = Upstream(upstream_server.url, name="backend")

        class Edge(Gateway):
            def policies(self) -> list[Policy]:
                return [edge]

            def routes(self) -> list[Route | Group]:
                return [
                    Route("/one", Proxy(upstream), policies=[twice, broken]),
                    Group("/g", policies=[twice], routes=[
                        Route("/two", Direct(text="two"), policies=[inner]),
                        Route("/three", Direct(text="three"), policies=[lookalike]),
                    ]),
                ]

            async def shutdown(self) -> None:
                closed.append("shutdown()")

        gateway = Edge(request_id=False, access_log=False)
        lifespan = Lifespan(gateway)

        async def main() -> None:
            async with lifespan as client:
                assert (await client.get("/one")).text == "upstream"
                assert (await client.get("/g/two")).text == "two"
                assert upstream_server.open_connections  # a pooled connection to the upstream

        with caplog.at_level(logging.ERROR, logger="asgigate"):
            asyncio.run(main())
        # the gateway's pool closed its connection although a policy failed to close before it
        wait_until(lambda: not upstream_server.open_connections, within=5)
        assert not upstream_server.open_connections

    assert lifespan.sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert closed == ["shutdown()", "inner", "inner", "broken", "on-two-routes", "edge"]
    failures = [r for r in caplog.records if "aclose() failed" in r.getMessage()]
    assert len(failures) == 1 and "Tracked" in failures[0].getMessage()
    assert failures[0].exc_info is not None and "broken cannot close" in str(failures[0].exc_info[1])


def test_a_failing_shutdown_still_closes_policies_and_reports_failure() -> None:
    closed.clear()

    class Edge(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/", Direct(text="ok"), policies=[Tracked("policy")])]

        async def shutdown(self) -> None:
            raise RuntimeError("shutdown hook broke")

    gateway = Edge(request_id=False, access_log=False)
    lifespan = Lifespan(gateway)

    async def main() -> None:
        async with lifespan as client:
            assert (await client.get("/")).text == "ok"

    asyncio.run(main())
    assert lifespan.sent == ["lifespan.startup.complete", "lifespan.shutdown.failed"]  # as before
    assert closed == ["policy"]


# --- a closed store works again ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window"])
def test_a_closed_store_serves_again_in_a_new_event_loop(redis: RedisServer, strategy: str) -> None:
    store = RateLimitStore(redis.uri, timeout=2.0)
    policy = RateLimit(Limit("5/minute", strategy=strategy), key=by_route, store=store,  # type: ignore[arg-type]
                       name=f"again-{strategy}-{time.time_ns()}")
    gateway = limited_gateway(policy)

    async def serve(requests: int) -> list[int]:
        async with Lifespan(gateway) as client:
            return [(await client.get("/0")).status_code for _ in range(requests)]

    assert run_in_new_loop(lambda: serve(3)) == [200, 200, 200]
    assert clients_left(redis) == []
    assert run_in_new_loop(lambda: serve(3)) == [200, 200, 429]  # the same counter, in Redis, continued
    assert clients_left(redis) == []

    async def twice() -> list[int]:  # closing twice, then using it in the same loop, then closing it again
        await store.aclose()
        await store.aclose()
        remaining = [(await policy.usage("/0"))[0].remaining]
        assert clients(redis)
        await store.aclose()
        return remaining

    assert run_in_new_loop(twice) == [0]
    assert clients_left(redis) == []
    assert (store.failures, store.last_error, store.healthy) == (0, None, True)


def test_closing_the_memory_store_keeps_its_counters() -> None:
    limits = [RateLimit("3/minute", key=by_route, name=f"memory-fw-{time.time_ns()}"),  # the shared default store
              RateLimit(Limit("3/minute", strategy="moving-window"), key=by_route, name=f"memory-mw-{time.time_ns()}")]
    assert limits[0].store is limits[1].store
    gateway = limited_gateway(*limits)

    async def serve(requests: int) -> list[int]:
        async with Lifespan(gateway) as client:
            return [(await client.get(f"/{n}")).status_code for n in (0, 1) for _ in range(requests)]

    async def twice_in_one_loop() -> tuple[list[int], list[int]]:
        return await serve(2), await serve(2)

    first, second = asyncio.run(twice_in_one_loop())
    assert first == [200, 200, 200, 200]
    assert second == [200, 429, 200, 429]
