"""The Redis rate limit's fixed-window call through client libraries, to set them against asgigate's `RedisWire`.

`RateLimitStore` counts a standalone Redis's fixed windows with one call, ``incr_window(key, expiry, amount)``:
one script (INCRBY, EXPIRE on the window's first hit, PTTL) that answers the count and the window's remaining
milliseconds in one round trip. Each class here makes that same call, with the same script, keys and
arguments, through a library, and `install` puts one in a store where `RedisWire` would be: everything else on
the request's path (the store's timeout, the headers) stays the same, so the difference in requests/s is the
client's alone.

- `RedisPyWindow`: redis-py's asyncio client (``redis.asyncio``, hiredis parser) as its documentation sets it up:
  ``Redis.from_url`` with its connection pool, the script through ``register_script`` (EVALSHA, loaded again
  on NOSCRIPT). Each concurrent request takes a pooled connection of its own: one write and one read per call.
- `RedisPyPipelineWindow`: redis-py too, but the calls made in one event-loop iteration go out as one redis-py
  pipeline (``transaction=False``), as `RedisWire` batches them: redis-py's connection, parser and pipeline,
  with a few lines of batching on top.
- `CoredisWindow`: coredis (the client `limits` uses), the same script through its ``register_script``.

Retries are off in every client, as `RateLimitStore` sets them for coredis: a retried script that did run would
count twice, and a failed call is the store's to handle (``on_failure``).
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from asgigate.policies.ratelimit import RateLimitStore
from asgigate.policies.ratelimit._redis_wire import _INCR_WINDOW


class _LibraryWindow:
    """A library client opened on first use in the running event loop (clients belong to one loop)."""

    _protocol = None  # RateLimitStore.aclose waits for RedisWire's connection to close; these close their own

    def __init__(self, uri: str, key_prefix: str = "LIMITS") -> None:
        self.uri = uri.removeprefix("async+")
        self.prefix = key_prefix + ":"
        self.client: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None

    script: Any = None  # the window script, registered by `_open` on the client it opens

    def _open(self) -> Any:
        raise NotImplementedError

    async def incr_window(self, key: str, expiry: int, amount: int = 1) -> tuple[int, int]:
        self._ready()
        count, ttl = await self.script(keys=[self.prefix + key], args=[expiry, amount])
        return int(count), int(ttl)

    def _ready(self) -> Any:
        loop = asyncio.get_running_loop()
        if self.client is None or self.loop is not loop:
            self.client = self._open()
            self.loop = loop
        return self.client

    def close(self) -> None:
        client, self.client = self.client, None
        if client is None or self.loop is None or self.loop.is_closed():
            return
        closing = getattr(client, "aclose", None)
        if closing is not None:
            self.loop.create_task(closing())
        else:  # coredis: its pool's disconnect
            client.connection_pool.disconnect()


class RedisPyWindow(_LibraryWindow):
    def _open(self) -> Any:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        client = redis.Redis.from_url(self.uri, retry=Retry(NoBackoff(), 0))
        self.script = client.register_script(_INCR_WINDOW)
        return client


class CoredisWindow(_LibraryWindow):
    def _open(self) -> Any:
        import coredis
        from coredis.retry import NoRetryPolicy

        client = coredis.Redis.from_url(self.uri, retry_policy=NoRetryPolicy())
        self.script = client.register_script(_INCR_WINDOW)
        return client


_SHA = hashlib.sha1(_INCR_WINDOW).hexdigest()


class RedisPyPipelineWindow(RedisPyWindow):
    """The calls of one loop iteration in one redis-py pipeline; a NOSCRIPT reply loads the script and resends."""

    def __init__(self, uri: str, key_prefix: str = "LIMITS") -> None:
        super().__init__(uri, key_prefix)
        self.pending: list[tuple[str, int, int, asyncio.Future[Any]]] = []
        self.batches: set[asyncio.Task[None]] = set()

    async def incr_window(self, key: str, expiry: int, amount: int = 1) -> tuple[int, int]:
        self._ready()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self.pending:
            loop.call_soon(self._send)
        self.pending.append((self.prefix + key, expiry, amount, future))
        count, ttl = await future
        return int(count), int(ttl)

    def _send(self) -> None:
        batch, self.pending = self.pending, []
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self.batches.add(task)  # a running task is referenced until it is done
        task.add_done_callback(self.batches.discard)

    async def _run(self, batch: list[tuple[str, int, int, asyncio.Future[Any]]]) -> None:
        from redis.exceptions import NoScriptError

        try:
            results = await self._pipeline([(key, expiry, amount) for key, expiry, amount, _ in batch])
            missing = [i for i, result in enumerate(results) if isinstance(result, NoScriptError)]
            if missing:  # a restarted server, or SCRIPT FLUSH
                await self.client.script_load(_INCR_WINDOW)
                again = await self._pipeline([batch[i][:3] for i in missing])
                for i, result in zip(missing, again, strict=True):
                    results[i] = result
        except Exception as exc:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if not future.done():  # a request that timed out no longer waits
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def _pipeline(self, calls: list[tuple[str, int, int]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for key, expiry, amount in calls:
            pipe.evalsha(_SHA, 1, key, expiry, amount)
        return list(await pipe.execute(raise_on_error=False))


CLIENTS: dict[str, type[_LibraryWindow]] = {
    "redispy": RedisPyWindow,
    "redispy-pipeline": RedisPyPipelineWindow,
    "coredis": CoredisWindow,
}


def install(store: RateLimitStore, client: str) -> None:
    """Count `store`'s fixed windows through `client` (a key of CLIENTS) instead of RedisWire."""
    if store.wire is None:
        raise ValueError(f"{store!r} does not count through RedisWire: nothing to replace")
    object.__setattr__(store, "wire", CLIENTS[client](store.uri))
