"""ConcurrencyLimit: at most N requests in flight per key, in this process or across processes in Redis."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import urllib.parse
from typing import TYPE_CHECKING, Any

from ..._frozen import Frozen
from ...errors import ConfigurationError, RateLimited, RequestTerminated
from ...exchange import Exchange
from ...pipeline import Policy
from ...types import ASGIApp, Receive, Scope, Send
from .keys import Key, KeyLike, as_key
from .store import RateLimitStore, register_store_metrics

if TYPE_CHECKING:
    from limits.aio.storage import Storage

    from ...metrics import Metrics

__all__ = ["ConcurrencyLimit"]

# One sorted set per slot pool: a member per request in flight, scored with the end of its lease (Redis time, in
# milliseconds). Expired leases (a crashed gateway's) are dropped before counting, so they cannot leak slots.
_ACQUIRE = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
    return 0
end
redis.call('ZADD', KEYS[1], ms + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], lease)
return 1
"""
# extends the leases of the requests this process still serves (ARGV[2:]); XX: never revive a released one
_RENEW = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local lease = tonumber(ARGV[1])
for i = 2, #ARGV do
    redis.call('ZADD', KEYS[1], 'XX', ms + lease, ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], lease)
return 1
"""
_COUNT = """
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], ms, '+inf')
"""
_names: collections.Counter[str] = collections.Counter()
_tokens = itertools.count()


def _client(storage: Storage) -> Any:
    """The coredis client behind a `limits` Redis storage (basic, Sentinel or Cluster)."""
    return storage.bridge.get_connection()  # type: ignore[attr-defined]


class _Renewal:
    """The lease-renewing task of a ConcurrencyLimit with a shared store (started by the first slot taken)."""

    __slots__ = ("task",)

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None


class ConcurrencyLimit(Frozen, Policy):
    """``ConcurrencyLimit(20)``: at most 20 requests of the routes it is on are served at once (429 beyond).

    `key` splits the allowance (``key=by_subject``: 20 per user); `per_route` gives every route its own.
    A slot is held until the response is complete, and released however the request ends: a finished
    response, an upstream failure or a client that went away. Without `store` the slots are per process (a
    worker's capacity is what this protects); with a Redis `store` they are shared by every gateway process
    using it (an upstream's capacity): each slot is a lease of `lease` seconds, renewed while the request runs,
    so the slots of a crashed gateway come back after at most `lease`. Policies with the same `name` and store
    share their slots. Requests without a key value share one slot pool.
    """

    def __init__(self, limit: int, *, key: KeyLike | None = None, per_route: bool = False,
                 retry_after: int = 1, store: RateLimitStore | str | None = None, lease: float = 30.0,
                 name: str | None = None) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"ConcurrencyLimit({limit!r}) needs a positive number of requests.")
        if not lease > 0:
            raise ConfigurationError(f"ConcurrencyLimit lease={lease!r} must be > 0 seconds.")
        self.limit = limit
        self.key: Key | None = as_key(key) if key is not None else None
        self.per_route = per_route
        self.retry_after = retry_after
        self.lease = float(lease)
        resolved = store if isinstance(store, RateLimitStore) else RateLimitStore(store) if store is not None else None
        self.store = resolved if resolved is not None and resolved.remote else None
        if self.store is not None:
            scheme = urllib.parse.urlsplit(self.store.uri).scheme.removeprefix("async+")
            if not scheme.startswith("redis") or self.store.options.get("implementation") not in (None, "coredis"):
                raise ConfigurationError(
                    f"ConcurrencyLimit store {self.store.display()!r}: shared concurrency limits need Redis "
                    "(redis://, rediss://, redis+sentinel://, redis+cluster://) with its default client.")
        if name is None:
            base = f"{self.key.name if self.key else 'all'}:{limit}"
            _names[base] += 1
            name = f"{base}#{_names[base]}"  # the same code makes the same names in every process
        self.name = name
        self._in_flight: collections.Counter[tuple[str | None, ...]] = collections.Counter()
        self._held: dict[str, set[str]] = {}  # Redis key -> the tokens of this process's requests in flight
        self._renewal = _Renewal()  # the task renewing this process's leases, while requests hold slots

    @property
    def _renewer(self) -> asyncio.Task[None] | None:
        return self._renewal.task

    def register_metrics(self, metrics: Metrics) -> None:
        p = metrics.prefix + "_" if metrics.prefix else ""
        metrics.gauge(f"{p}concurrency_in_flight", "Requests holding a concurrency slot in this process.",
                      ["policy"], read=lambda: {(self.name,): sum(self._in_flight.values()) + sum(
                          len(tokens) for tokens in self._held.values())})
        if self.store is not None:
            register_store_metrics(metrics, self.store)

    async def aclose(self) -> None:
        """At gateway shutdown: stop renewing leases (ended requests hold none) and close the store."""
        renewer, self._renewal.task = self._renewal.task, None
        if renewer is not None and not renewer.done() and renewer.get_loop() is asyncio.get_running_loop():
            renewer.cancel()
            await asyncio.wait([renewer])
        if self.store is not None:
            await self.store.aclose()

    def in_flight(self, value: str | None = None, *, route: str | None = None) -> int:
        """How many requests hold a slot in this process (for one key value / route when the policy splits)."""
        slot = (route if self.per_route else None, value if self.key else None)
        if self.store is None:
            return self._in_flight[slot]
        return self._in_flight[slot] + len(self._held.get(self._redis_key(slot), ()))

    async def in_flight_everywhere(self, value: str | None = None, *, route: str | None = None) -> int | None:
        """How many requests hold a slot in the shared store (None while it is unavailable)."""
        slot = (route if self.per_route else None, value if self.key else None)
        if self.store is None:
            return self._in_flight[slot]
        key = self._redis_key(slot)

        async def count(storage: Storage) -> int:
            return int(await _client(storage).eval(_COUNT, keys=[_prefixed(storage, key)]))

        result, _ = await self.store.call(count)
        return result

    def _redis_key(self, slot: tuple[str | None, ...]) -> str:
        route, value = slot
        return "/".join(("asgigate-concurrency", self.name, route or "", value or ""))

    def _refuse(self) -> RateLimited:
        error = RateLimited("Too many requests in progress; try again shortly.", retry_after=self.retry_after)
        error.reason = "concurrency_limited"
        return error

    def wrap(self, app: ASGIApp) -> ASGIApp:
        in_flight = self._in_flight
        limit = self.limit

        async def concurrency_limited(scope: Scope, receive: Receive, send: Send) -> None:
            exchange = Exchange.of(scope)  # type: ignore[arg-type]
            route = exchange.route.name if self.per_route and exchange.route is not None else None
            slot = (route, (self.key(exchange) or "-") if self.key is not None else None)
            if self.store is not None:
                acquired = await self._acquire(slot)
                if acquired is not None:
                    try:
                        await app(scope, receive, send)
                    finally:  # runs on success, on errors and when the client's disconnect cancels the request
                        self._held.get(acquired[0], set()).discard(acquired[1])
                        await asyncio.shield(self._release(*acquired))
                    return
                if self.store.on_failure == "open":
                    await app(scope, receive, send)
                    return
            if in_flight[slot] >= limit:
                raise self._refuse()
            in_flight[slot] += 1
            try:
                await app(scope, receive, send)
            finally:
                in_flight[slot] -= 1
                if not in_flight[slot]:
                    del in_flight[slot]

        return concurrency_limited

    async def _acquire(self, slot: tuple[str | None, ...]) -> tuple[str, str] | None:
        """A slot in Redis: (key, token); refused: RateLimited; the store unavailable: None (or 503, closed)."""
        assert self.store is not None
        key = self._redis_key(slot)
        token = f"{os.getpid()}-{id(self)}-{next(_tokens)}"
        args = [self.limit, int(self.lease * 1000), token]

        async def acquire(storage: Storage) -> int:
            return int(await _client(storage).eval(_ACQUIRE, keys=[_prefixed(storage, key)], args=args))

        result, _ = await self.store.call(acquire)
        if result is None:
            if self.store.on_failure == "closed":
                raise RequestTerminated("Concurrency limiting is unavailable; try again shortly.", status=503,
                                        reason="ratelimit_store_unavailable", headers={"retry-after": "1"})
            return None
        if not result:
            raise self._refuse()
        self._held.setdefault(key, set()).add(token)
        if self._renewal.task is None or self._renewal.task.done():
            self._renewal.task = asyncio.get_running_loop().create_task(self._renew())
        return key, token

    async def _release(self, key: str, token: str) -> None:
        assert self.store is not None

        async def release(storage: Storage) -> None:
            await _client(storage).zrem(_prefixed(storage, key), [token])

        await self.store.call(release)  # if the store is down, the lease ends the slot instead
        if not self._held.get(key, True):
            del self._held[key]

    async def _renew(self) -> None:
        """Every third of the lease, extend the leases of this process's requests in flight."""
        assert self.store is not None
        lease_ms = int(self.lease * 1000)
        while self._held:
            await asyncio.sleep(self.lease / 3)
            for key, tokens in list(self._held.items()):
                if not tokens:
                    continue
                args = [lease_ms, *tokens]

                async def renew(storage: Storage, key: str = key, args: list[Any] = args) -> None:
                    await _client(storage).eval(_RENEW, keys=[_prefixed(storage, key)], args=args)

                await self.store.call(renew)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConcurrencyLimit) and self._fields() == other._fields()

    def _fields(self) -> tuple[Any, ...]:
        return (self.limit, self.key, self.per_route, self.retry_after, self.store, self.lease)

    def __hash__(self) -> int:
        return hash((self.limit, self.key, self.per_route))

    def __repr__(self) -> str:
        parts = [str(self.limit)]
        if self.key is not None:
            parts.append(f"key={self.key!r}")
        if self.per_route:
            parts.append("per_route=True")
        if self.store is not None:
            parts.append(f"store={self.store!r}")
        return f"ConcurrencyLimit({', '.join(parts)})"


def _prefixed(storage: Storage, key: str) -> str:
    return str(storage.bridge.prefixed_key(key))  # type: ignore[attr-defined]
