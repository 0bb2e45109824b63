"""Rate limit counters kept in memory are bounded by bytes, whatever key values clients send: long values are
counted by their digest, and past the store's `max_bytes` the least recently used counters go (measured as the
RSS of a real gateway process, and on the store itself)."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from asgigate import ConfigurationError, Direct, Exchange, Gateway, Metrics, RateLimit, RateLimited, Route
from asgigate.policies.ratelimit import Limit, RateLimitStore, by_header
from asgigate.policies.ratelimit._memory import COUNTER_BYTES, MemoryCounters
from asgigate.testing import BackgroundServer

from servers import ManualClock, free_port, serve_process, uvicorn_cmd

MiB = 1024 * 1024


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# --- the counters ---------------------------------------------------------------------------------------

def test_counters_stay_within_their_byte_budget_and_drop_the_least_recently_used() -> None:
    counters = MemoryCounters(max_bytes=MiB)
    now = time.time()
    assert counters.hit("regular", 86400, 1, now) == (1, now + 86400)
    for index in range(20_000):  # a flood of new keys, each 1 KB
        counters.hit(f"{index:08d}" + "x" * 1000, 86400, 1, now)
        if index % 100 == 0:
            assert counters.hit("regular", 86400, 1, now)[0] == 2 + index // 100  # used all along: kept
    assert counters.bytes <= MiB
    assert len(counters) == MiB // (COUNTER_BYTES + 1008) or len(counters) == MiB // (COUNTER_BYTES + 1008) + 1
    assert counters.evictions == 20_001 - len(counters)
    kept = [key for key in counters._entries if key != "regular"]
    assert kept == sorted(kept) and kept[-1].startswith("00019999")  # the most recent ones


def test_expired_counters_go_first_without_any_scan() -> None:
    counters = MemoryCounters(max_bytes=MiB)
    now = time.time()
    for index in range(100):
        counters.hit(f"short-{index}", 1, 1, now)
    for index in range(100):  # one second later every new counter drops up to two expired ones
        counters.hit(f"later-{index}", 60, 1, now + 2)
    assert not any(key.startswith("short-") for key in counters._entries)
    assert counters.evictions == 0 and len(counters) == 100
    assert counters.bytes == sum(entry[2] for entry in counters._entries.values())


def test_every_strategy_counts_in_the_same_budget() -> None:
    from limits import RateLimitItemPerMinute
    from limits.aio.strategies import (
        FixedWindowRateLimiter,
        MovingWindowRateLimiter,
        SlidingWindowCounterRateLimiter,
    )

    async def run() -> None:
        counters = MemoryCounters(max_bytes=256 * 1024)
        item = RateLimitItemPerMinute(3)
        for strategy in (FixedWindowRateLimiter, MovingWindowRateLimiter, SlidingWindowCounterRateLimiter):
            limiter = strategy(counters)
            assert [await limiter.hit(item, "client") for _ in range(4)] == [True, True, True, False]
            stats = await limiter.get_window_stats(item, "client")
            assert stats.remaining == 0 and time.time() < stats.reset_time <= time.time() + 60
            await limiter.clear(item, "client")
            assert (await limiter.get_window_stats(item, "client")).remaining == 3
            for index in range(3000):  # distinct 500-character clients
                await limiter.hit(item, f"{index}" + "y" * 500)
            assert counters.bytes <= 256 * 1024
        many = MovingWindowRateLimiter(counters)
        big = RateLimitItemPerMinute(100_000)
        for _ in range(20_000):  # one client's moving window: a timestamp per hit, charged as it grows
            await many.hit(big, "busy")
        # the budget went to it: the others were dropped (the newest is always kept, at most a timestamp per hit
        # of its limit's amount)
        assert len(counters) == 1 and counters.bytes == COUNTER_BYTES + len(next(iter(counters._entries))) + 40 * 20_000
        assert counters.evictions > 1000
        await counters.reset()
        assert counters.bytes == 0 and len(counters) == 0

    asyncio.run(run())


def test_the_store_setting_is_checked_and_compared() -> None:
    assert RateLimitStore().max_bytes == 64 * MiB
    assert RateLimitStore(max_bytes=MiB) == RateLimitStore(max_bytes=MiB) != RateLimitStore()
    assert repr(RateLimitStore(max_bytes=MiB)) == "RateLimitStore('memory://', max_bytes=1048576)"
    for wrong in (0, 1000, 1.5, True):
        with pytest.raises(ConfigurationError, match="max_bytes"):
            RateLimitStore(max_bytes=wrong)  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        RateLimitStore().max_bytes = 1  # type: ignore[misc]


def test_a_memory_stores_windows_run_on_its_clock() -> None:
    """`clock=`: the memory store's windows (every strategy) and the policy's reset times follow the given clock."""
    clock = ManualClock(start=1_000_000.0)
    store = RateLimitStore(clock=clock)
    assert store.clock is clock and store != RateLimitStore()
    assert repr(store) == f"RateLimitStore('memory://', clock={clock!r})"
    with pytest.raises(ConfigurationError, match="only a memory store takes a clock"):
        RateLimitStore("redis://127.0.0.1:6379", clock=clock)

    async def run() -> None:
        gateway = Gateway(request_id=False, access_log=False)
        for strategy in ("fixed-window", "moving-window", "sliding-window"):
            limit = RateLimit("2/minute", strategy=strategy, key=by_header("x-k"), store=store, name=strategy)
            exchange = Exchange({"type": "http", "headers": [(b"x-k", b"a")]}, gateway)
            for _ in range(2):
                await limit.on_request(exchange)
            (usage,) = await limit.usage("a")
            assert usage.remaining == 0, strategy
            clock.advance(121)  # two windows on: nothing is left of the first (a sliding window weighs the last)
            (usage,) = await limit.usage("a")
            assert usage.remaining == 2, strategy
        fixed = RateLimit("1/hour", key=by_header("x-k"), store=store, name="retry")
        exchange = Exchange({"type": "http", "headers": [(b"x-k", b"b")]}, gateway)
        await fixed.on_request(exchange)
        clock.advance(600)
        with pytest.raises(RateLimited) as refused:
            await fixed.on_request(exchange)
        assert refused.value.retry_after == 3000  # the window opened 600 s ago on the clock, not in real time

    asyncio.run(run())


def test_a_redis_stores_fallback_is_bounded_too() -> None:
    async def run() -> None:
        with socket.socket() as s:  # a port nothing listens on
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        store = RateLimitStore(f"redis://127.0.0.1:{port}", timeout=0.5, connect_timeout=0.5, max_bytes=128 * 1024)
        limit = RateLimit("5/day", key=by_header("x-tenant"), store=store)
        gateway = Gateway(request_id=False, access_log=False)
        for index in range(2000):
            exchange = Exchange({"type": "http", "headers": [(b"x-tenant", f"{index}".encode() * 300)]}, gateway)
            await limit.on_request(exchange)
        assert not store.healthy and store.fallbacks >= 1999
        fallback = store.fallback()
        assert isinstance(fallback, MemoryCounters) and fallback.bytes <= 128 * 1024
        assert store.evictions == fallback.evictions > 1000
        await store.aclose()

    asyncio.run(run())


# --- key values ------------------------------------------------------------------------------------------

def test_long_key_values_are_counted_by_their_digest() -> None:
    limit = RateLimit("2/day", key=by_header("x-tenant"), store=RateLimitStore())

    class G(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/", Direct(text="ok"), policies=[limit])]

    long_value = "t" * 8000
    with BackgroundServer(G(request_id=False, access_log=False)) as server, httpx.Client(base_url=server.url) as client:
        assert [client.get("/", headers={"x-tenant": long_value}).status_code for _ in range(3)] == [200, 200, 429]
        assert client.get("/", headers={"x-tenant": long_value[:-1] + "u"}).status_code == 200  # another value
        assert client.get("/", headers={"x-tenant": "short"}).status_code == 200
        counters = limit.store.counters
        assert counters is not None
        keys = list(counters._entries)
        assert len(keys) == 3 and max(len(key) for key in keys) < 150
        assert any("/short/" in key for key in keys)  # short values are kept as they are
        usage = asyncio.run(limit.usage(long_value))
        assert usage[0].remaining == 0
        asyncio.run(limit.reset(long_value))
        assert client.get("/", headers={"x-tenant": long_value}).status_code == 200


# --- a served gateway ------------------------------------------------------------------------------------

def pipelined(port: int, requests: list[bytes], batch: int = 50) -> list[int]:
    """Send `requests` on one keep-alive connection, `batch` at a time pipelined; their status codes."""
    statuses: list[int] = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for start in range(0, len(requests), batch):
            chunk = requests[start:start + batch]
            sock.sendall(b"".join(chunk))
            data = b""
            while data.count(b"HTTP/1.1 ") < len(chunk):
                received = sock.recv(1 << 20)
                assert received, "the gateway closed the connection"
                data += received
            statuses += [int(part[:3]) for part in data.split(b"HTTP/1.1 ")[1:]]
    return statuses


def test_distinct_large_key_values_leave_a_served_gateways_memory_bounded() -> None:
    """The attack: every request carries a new 8 KB value of the header a limit counts by. Each value made a
    counter holding it (two for a moving window's bookkeeping), so 12,000 requests took the gateway about
    100 MiB further; now every counter is small and the store keeps within its budget."""
    port = free_port()
    env = {"RATELIMIT_MAX_BYTES": str(1 * MiB)}
    with serve_process(uvicorn_cmd("apps.ratelimit_gateway:app", port), port, env=env) as proc:
        def requests(count: int, seed: str) -> list[bytes]:
            return [f"GET /{('fixed', 'moving')[index % 2]} HTTP/1.1\r\nhost: gateway\r\n"
                    f"x-tenant: {seed}{index:08d}{'v' * 8000}\r\n\r\n".encode() for index in range(count)]

        assert set(pipelined(port, requests(1000, "warm-up"))) == {200}  # imports, first allocations
        before = rss(proc.pid)
        started = time.monotonic()
        assert set(pipelined(port, requests(12_000, "flood"))) == {200}
        grown = rss(proc.pid) - before
        assert grown < 24 * MiB, f"the gateway grew {grown / MiB:.0f} MiB"
        assert time.monotonic() - started < 120
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        evicted = [line for line in metrics.splitlines()
                   if line.startswith('asgigate_ratelimit_store_evictions_total{store="memory://"}')]
        assert evicted and int(evicted[0].split()[-1]) > 5000, evicted


def test_evictions_are_a_metric() -> None:
    store = RateLimitStore(max_bytes=64 * 1024)
    limit = RateLimit(Limit("5/minute"), key=by_header("x-tenant"), store=store)
    metrics = Metrics()

    class G(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/", Direct(text="ok"), policies=[limit]), Route("/metrics", metrics.endpoint())]

    with BackgroundServer(G(request_id=False, access_log=False, metrics=metrics)) as server, \
            httpx.Client(base_url=server.url) as client:
        for index in range(400):
            assert client.get("/", headers={"x-tenant": f"tenant-{index}"}).status_code == 200
        text = client.get("/metrics").text
    assert f'asgigate_ratelimit_store_evictions_total{{store="memory://"}} {store.evictions}' in text
    assert store.evictions > 100
