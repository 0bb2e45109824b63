"""Where rate limit counters live: a `limits` async storage behind a timeout, a failure setting and a fallback.

While the store fails (an error, or no answer within `timeout`), the store is marked down for `retry_interval`
seconds: requests do not touch it, they follow `on_failure` right away, so a dead Redis costs nothing more than
the one failed call. After the interval the next request tries the store again; success marks it up.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from limits.aio.storage import MemoryStorage, Storage

__all__ = ["FixedWindowCounters", "OnFailure", "RateLimitStore", "require_limits"]

logger = logging.getLogger("asgigate.ratelimit")

OnFailure = Literal["local", "open", "closed"]
T = TypeVar("T")


def require_limits() -> None:
    """Rate limits need the `limits` package: a clear message at build time when it is missing."""
    try:
        import limits  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "rate limits need the 'limits' package: pip install 'asgigate[ratelimit]'"
        ) from None


class FixedWindowCounters:
    """Fixed-window counters of the memory store: a dict of [count, window end], no lock and no await.

    The event loop runs one request at a time between awaits, so a read-modify-write without an await in it is
    atomic: the cheapest exact counter a single process can have (the hot path of a memory rate limit).
    """

    __slots__ = ("_counters", "_sweep_at")

    def __init__(self) -> None:
        self._counters: dict[str, list[float]] = {}
        self._sweep_at = 0.0

    def hit(self, key: str, expiry: int, cost: int, now: float) -> tuple[int, float]:
        """Add `cost` to the key's counter; (the count, the window's end as a Unix time)."""
        entry = self._counters.get(key)
        if entry is None or entry[1] <= now:
            if now >= self._sweep_at:
                self._sweep(now)
            entry = self._counters[key] = [0, now + expiry]
        entry[0] += cost
        return int(entry[0]), entry[1]

    def get(self, key: str, now: float) -> tuple[int, float]:
        entry = self._counters.get(key)
        if entry is None or entry[1] <= now:
            return 0, now
        return int(entry[0]), entry[1]

    def clear(self, key: str) -> None:
        self._counters.pop(key, None)

    def _sweep(self, now: float) -> None:
        # expired windows are dropped at most once a second, when a new window starts anyway
        self._sweep_at = now + 1.0
        expired = [key for key, (_, end) in self._counters.items() if end <= now]
        for key in expired:
            del self._counters[key]


def _warmed_up(operation: Callable[[Storage], Awaitable[T]]) -> Callable[[Storage], Awaitable[T]]:
    """`operation`, after one use of every strategy on a throw-away key.

    That loads the store's scripts one at a time: coredis loses its connection when a burst of concurrent calls
    all find their script missing (NOSCRIPT) at once, which is what the first requests after a start or a
    Redis restart would do.
    """

    async def warmed_up(storage: Storage) -> T:
        from limits import RateLimitItemPerSecond
        from limits.aio import strategies

        item = RateLimitItemPerSecond(1, namespace="asgigate-warmup")
        for strategy in (strategies.FixedWindowRateLimiter, strategies.MovingWindowRateLimiter,
                         strategies.SlidingWindowCounterRateLimiter):
            try:
                limiter = strategy(storage)
            except NotImplementedError:  # a store without this strategy (memcached: no moving window)
                continue
            await limiter.hit(item, "warmup")
            await limiter.get_window_stats(item, "warmup")
            await limiter.clear(item, "warmup")
        return await operation(storage)

    return warmed_up


_SETTINGS = frozenset({"uri", "timeout", "connect_timeout", "on_failure", "retry_interval", "options", "remote"})


class RateLimitStore:
    """``RateLimitStore("redis://10.0.0.5:6379", timeout=0.1, on_failure="local")``; the default is in memory.

    `uri` is any `limits` storage URI (``memory://``, ``redis://``, ``rediss://``, ``redis+cluster://``,
    ``redis+sentinel://``, ``memcached://``, ...; the ``async+`` prefix is added for you); `options` go to the
    storage class. `timeout` bounds every store call (seconds), except the first one of a new client, which
    connects and loads the scripts (`connect_timeout`). `on_failure` says what a request does while the
    store is unavailable: ``"local"`` counts in this process's memory instead, ``"open"`` admits it uncounted,
    ``"closed"`` refuses it (503). `failures` and `fallbacks` count what happened, for metrics.
    """

    __slots__ = (
        "_down_until",
        "_fallback",
        "_loop",
        "_storage",
        "_warm",
        "_warming",
        "connect_timeout",
        "counters",
        "failures",
        "fallbacks",
        "last_error",
        "on_failure",
        "options",
        "remote",
        "retry_interval",
        "timeout",
        "uri",
    )

    _warming: asyncio.Lock | None

    def __init__(
        self,
        uri: str = "memory://",
        *,
        timeout: float = 0.25,
        connect_timeout: float = 2.0,
        on_failure: OnFailure = "local",
        retry_interval: float = 1.0,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        require_limits()
        from limits._storage_scheme import SCHEMES

        scheme = urllib.parse.urlsplit(uri).scheme
        full = uri if scheme.startswith("async+") else f"async+{uri}"
        if urllib.parse.urlsplit(full).scheme not in SCHEMES:
            known = sorted(s.removeprefix("async+") for s in SCHEMES if s.startswith("async+"))
            raise ConfigurationError(f"rate limit store {uri!r}: unknown scheme; known: {', '.join(known)}")
        if on_failure not in ("local", "open", "closed"):
            raise ConfigurationError(f"rate limit store on_failure={on_failure!r}: use 'local', 'open' or 'closed'.")
        if not timeout > 0 or not connect_timeout > 0 or not retry_interval >= 0:
            raise ConfigurationError("rate limit store timeouts must be > 0 and retry_interval >= 0 seconds.")
        self.uri = full
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.on_failure: OnFailure = on_failure
        self.retry_interval = float(retry_interval)
        self.options = MappingProxyType(dict(options or {}))
        self.remote = not full.startswith("async+memory:")
        self.failures = 0
        self.last_error: str | None = None
        self.fallbacks = 0
        self._storage: Storage | None = None
        self._fallback: MemoryStorage | None = None
        # the memory store's fixed windows are counted here, without the storage's locks and awaits
        self.counters = FixedWindowCounters() if not self.remote else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._down_until = 0.0
        self._warm = False
        self._warming = None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SETTINGS and hasattr(self, name):
            raise AttributeError("RateLimitStore settings are immutable; create a new store")
        object.__setattr__(self, name, value)

    @property
    def down(self) -> bool:
        return self._down_until > time.monotonic()

    def storage(self) -> Storage:
        """The storage client, created on first use in the running event loop (clients belong to one loop)."""
        loop = asyncio.get_running_loop()
        if self._storage is None or self._loop is not loop:
            from limits.aio.storage import Storage
            from limits.storage import storage_from_string

            options = dict(self.options)
            coredis = options.get("implementation") in (None, "coredis")
            if self.uri.startswith(("async+redis", "async+rediss")) and coredis:
                # coredis retries a command after a connection error or timeout by default: a rate limit script
                # that did run would then count twice. A failed call is handled here (on_failure) instead.
                from coredis.retry import NoRetryPolicy

                options.setdefault("retry_policy", NoRetryPolicy())
            storage = storage_from_string(self.uri, **options)
            if not isinstance(storage, Storage):
                raise ConfigurationError(f"rate limit store {self.uri!r} is not an async storage.")
            self._storage = storage
            self._warm = False
            self._fallback = None
            self._loop = loop
        return self._storage

    def fallback(self) -> MemoryStorage:
        if self._fallback is None or self._loop is not asyncio.get_running_loop():
            from limits.aio.storage import MemoryStorage

            self.storage()
            self._fallback = MemoryStorage()
        return self._fallback

    async def call(self, operation: Callable[[Storage], Awaitable[T]]) -> tuple[T | None, bool]:
        """Run `operation` on the store; (result, True) or, while the store is unavailable, (None, False)."""
        if not self.remote:
            return await operation(self.storage()), True
        if self._down_until:
            if self._down_until > time.monotonic():
                self.fallbacks += 1
                return None, False
        if not self._warm:
            # The first call of a client connects and loads the scripts, which takes longer: one request does it
            # (with connect_timeout) while the others of the first burst wait for it instead of piling up.
            if self._warming is None or self._loop is not asyncio.get_running_loop():
                self.storage()
                self._warming = asyncio.Lock()
            async with self._warming:
                if not self._warm:
                    return await self._attempt(_warmed_up(operation), max(self.timeout, self.connect_timeout))
        return await self._attempt(operation, self.timeout)

    async def _attempt(self, operation: Callable[[Storage], Awaitable[T]], limit: float) -> tuple[T | None, bool]:
        try:
            async with asyncio.timeout(limit):
                result = await operation(self.storage())
        except Exception as exc:  # any failure of the store client: a refused connection, a timeout, a bad reply
            self.failures += 1
            self.fallbacks += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            if not self._down_until:
                logger.warning("rate limit store %s unavailable (%s: %s); on_failure=%s", self.display(),
                               type(exc).__name__, exc, self.on_failure)
            self._down_until = time.monotonic() + self.retry_interval
            self._warm = False  # a restarted server has lost its scripts: load them again first
            return None, False
        self._warm = True
        if self._down_until:
            self._down_until = 0.0
            logger.warning("rate limit store %s is available again", self.display())
        return result, True

    def display(self) -> str:
        parts = urllib.parse.urlsplit(self.uri.removeprefix("async+"))
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        return f"{parts.scheme}://{netloc}"  # never the password

    def _fields(self) -> tuple[Any, ...]:
        return (self.uri, self.timeout, self.connect_timeout, self.on_failure, self.retry_interval, dict(self.options))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RateLimitStore) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((self.uri, self.timeout, self.on_failure, self.retry_interval))

    def __repr__(self) -> str:
        if not self.remote:
            return "RateLimitStore('memory://')"
        return (f"RateLimitStore({self.display()!r}, timeout={self.timeout}, on_failure={self.on_failure!r}, "
                f"retry_interval={self.retry_interval})")
