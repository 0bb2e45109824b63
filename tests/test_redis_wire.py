"""The rate limiter's minimal Redis client, against a real redis-server."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest
from limits import RateLimitItemPerMinute
from limits.aio.strategies import FixedWindowRateLimiter
from limits.storage import storage_from_string

from asgigate.policies.ratelimit._redis_wire import RedisError, RedisWire, _parse, _Protocol
from asgigate.policies.ratelimit.store import _close_clients

from redisserver import RedisServer
from servers import free_port, run_closing, wait_port


def test_counts_like_limits_fixed_window(redis: RedisServer) -> None:
    async def main() -> None:
        wire = RedisWire(redis.uri)
        item = RateLimitItemPerMinute(5, namespace="wire")
        key = item.key_for("client-1")
        results = [await wire.incr_window(key, 60) for _ in range(3)]
        assert [count for count, _ in results] == [1, 2, 3]
        assert all(55_000 < ttl <= 60_000 for _, ttl in results)
        # limits, reading the same server, sees the same counter and window
        storage = storage_from_string(redis.uri.replace("redis://", "async+redis://"))
        stats = await FixedWindowRateLimiter(storage).get_window_stats(item, "client-1")  # type: ignore[arg-type]
        assert stats.remaining == 2
        assert 50 <= await wire.command(b"TTL", b"LIMITS:" + key.encode()) <= 60
        # and limits' own hits add to it
        await FixedWindowRateLimiter(storage).hit(item, "client-1")  # type: ignore[arg-type]
        assert (await wire.incr_window(key, 60, amount=2))[0] == 6
        wire.close()
        await _close_clients(storage, "limits")

    asyncio.run(main())


def test_concurrent_calls_are_pipelined_and_exact(redis: RedisServer) -> None:
    async def main() -> None:
        wire = RedisWire(redis.uri)
        await wire.command(b"PING")
        protocol = wire._protocol
        assert protocol is not None and protocol.transport is not None
        writes = []
        write = protocol.transport.write
        protocol.transport.write = lambda data: (writes.append(data), write(data))[1]  # type: ignore[method-assign]
        counts = await asyncio.gather(*[wire.incr_window("burst", 30) for _ in range(500)])
        assert sorted(count for count, _ in counts) == list(range(1, 501))
        assert len(writes) == 1  # the 500 commands of one loop iteration went out in one write
        assert writes[0].count(b"EVALSHA") == 500
        wire.close()

    asyncio.run(main())


def test_scripts_flushed_on_the_server_are_loaded_again(redis: RedisServer) -> None:
    async def main() -> None:
        wire = RedisWire(redis.uri)
        assert (await wire.incr_window("flushed", 30))[0] == 1
        await wire.command(b"SCRIPT", b"FLUSH")
        assert (await wire.incr_window("flushed", 30))[0] == 2
        wire.close()

    asyncio.run(main())


def test_a_dead_server_fails_calls_and_a_restarted_one_is_used_again() -> None:
    async def main(server: RedisServer) -> None:
        wire = RedisWire(server.uri)
        assert (await wire.incr_window("outage", 30))[0] == 1
        server.stop()
        with pytest.raises(OSError):
            for _ in range(3):  # the first call may still find the old connection open
                await wire.incr_window("outage", 30)
                await asyncio.sleep(0.05)
        server.start()
        assert (await wire.incr_window("outage", 30))[0] == 1  # a fresh server: a fresh counter
        wire.close()

    with RedisServer() as server:
        asyncio.run(main(server))


def test_password_and_database_from_the_uri() -> None:
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--requirepass",
                             "s3cret"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, 10, proc)

        async def main() -> None:
            wire = RedisWire(f"redis://:s3cret@127.0.0.1:{port}/3")
            assert (await wire.incr_window("db3", 30))[0] == 1
            assert await wire.command(b"CLIENT", b"INFO") != b""
            assert b"db=3" in await wire.command(b"CLIENT", b"INFO")
            wire.close()
            wrong = RedisWire(f"redis://:nope@127.0.0.1:{port}")
            with pytest.raises(RedisError, match=r"WRONGPASS|invalid"):
                await wrong.incr_window("x", 30)
            wrong.close()

        asyncio.run(main())
    finally:
        proc.kill()
        proc.wait()


def test_replies_split_anywhere_are_parsed() -> None:
    replies = b"*2\r\n:7\r\n:59000\r\n+OK\r\n$5\r\nhello\r\n$-1\r\n-ERR boom\r\n*0\r\n"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for cut in range(1, len(replies)):
            protocol = _Protocol()
            futures = [loop.create_future() for _ in range(6)]
            protocol.waiting.extend(futures)
            protocol.data_received(replies[:cut])
            protocol.data_received(replies[cut:])
            assert futures[0].result() == [7, 59000]
            assert futures[1].result() == b"OK"
            assert futures[2].result() == b"hello"
            assert futures[3].result() is None
            assert isinstance(futures[4].exception(), RedisError)
            assert futures[5].result() == []
            assert not protocol.waiting and not protocol.buffer

    asyncio.run(main())


def test_malformed_replies_fail_the_connection_not_the_process() -> None:
    with pytest.raises(RedisError):
        _parse(b"?what\r\n", 0)

    async def main() -> None:
        protocol = _Protocol()
        future = asyncio.get_running_loop().create_future()
        protocol.waiting.append(future)
        protocol.data_received(b":notanumber\r\n")
        assert isinstance(future.exception(), RedisError)
        assert protocol.closed is not None

    asyncio.run(main())


def test_a_redis_rate_limit_counts_through_the_wire(redis: RedisServer) -> None:
    import httpx

    from asgigate import Direct, Gateway, RateLimit, Route
    from asgigate.policies.ratelimit import RateLimitStore
    from asgigate.testing import BackgroundServer

    store = RateLimitStore(redis.uri)
    limit = RateLimit("3/minute", store=store, name="wired")

    class Limited(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/x", Direct(text="ok"), policies=[limit])]

    with BackgroundServer(Limited()) as server, httpx.Client(base_url=server.url) as client:
        statuses = [client.get("/x").status_code for _ in range(5)]
        reply = client.get("/x")
        assert store.wire is not None and store.wire._protocol is not None  # the wire carried the counting
    assert store.wire._protocol is None  # and was closed when the server shut down
    assert statuses == [200, 200, 200, 429, 429]
    assert reply.headers["x-ratelimit-remaining"] == "0"
    assert 0 < int(reply.headers["retry-after"]) <= 60
    assert store.failures == 0

    async def read() -> None:
        wire = RedisWire(redis.uri)
        keys = await wire.command(b"KEYS", b"LIMITS:*wired*")
        assert len(keys) == 1
        assert await wire.command(b"GET", keys[0]) == b"6"
        wire.close()
        usage = await limit.usage("127.0.0.1")  # read back through `limits`
        assert usage[0].remaining == 0

    run_closing(read(), store)
