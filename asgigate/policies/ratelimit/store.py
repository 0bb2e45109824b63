"""Where rate limit counters live: a `limits` async storage behind a timeout, a failure setting and a fallback.

When a store call fails (an error, or no answer within `timeout`), the store is marked unhealthy: from then on
requests do not touch it, they follow `on_failure` at once, so a dead or hung Redis costs only the calls that
were in flight when it failed. A background task probes the store every `retry_interval` seconds (connecting
and loading the scripts, bounded by `connect_timeout`); when it answers, the store is healthy again.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from ...errors import ConfigurationError
from ._redis_wire import RedisWire

if TYPE_CHECKING:
    from limits.aio.storage import Storage

    from ...metrics import Metrics
    from ._memory import MemoryCounters

__all__ = ["OnFailure", "RateLimitStore"]

logger = logging.getLogger("asgigate.ratelimit")

OnFailure = Literal["local", "open", "closed"]
T = TypeVar("T")
MEMORY_MAX_BYTES = 64 * 1024 * 1024


def require_limits() -> None:
    """Rate limits need the `limits` package: a clear message at build time when it is missing."""
    try:
        import limits  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "rate limits need the 'limits' package: pip install 'asgigate[ratelimit]'"
        ) from None


async def _load_scripts(storage: Storage) -> None:
    """SCRIPT LOAD of `limits`' scripts on a standalone Redis through coredis, before their first EVALSHA.

    coredis answers NOSCRIPT by closing the connection and reconnecting the same protocol object; over TLS the
    old connection's close completes later and then tears down the new one (seen on a loaded machine).
    """
    from limits.aio.storage.redis.coredis import CoredisBridge

    bridge = getattr(storage, "bridge", None)
    if not isinstance(bridge, CoredisBridge):
        return
    from coredis import Redis
    from coredis.commands.script import Script

    client = bridge.get_connection()
    if isinstance(client, Redis):  # not a cluster: there every node needs the scripts, coredis sees to it
        for script in {value.script for value in vars(bridge).values() if isinstance(value, Script)}:
            await client.script_load(script)


def _warmed_up(operation: Callable[[Storage], Awaitable[T]]) -> Callable[[Storage], Awaitable[T]]:
    """`operation`, after one use of every strategy on a throw-away key.

    That loads the store's scripts one at a time: coredis loses its connection when a burst of concurrent calls
    all find their script missing (NOSCRIPT) at once, which is what the first requests after a start or a
    Redis restart would do.
    """

    async def warmed_up(storage: Storage) -> T:
        from limits import RateLimitItemPerSecond
        from limits.aio import strategies

        await _load_scripts(storage)
        for name, strategy in (("fixed", strategies.FixedWindowRateLimiter),
                               ("moving", strategies.MovingWindowRateLimiter),
                               ("sliding", strategies.SlidingWindowCounterRateLimiter)):
            # a key per strategy: processes warming up at once must not meet a key of another type (WRONGTYPE)
            item = RateLimitItemPerSecond(1, namespace=f"asgigate-warmup-{name}")
            try:
                limiter = strategy(storage)
            except NotImplementedError:  # a store without this strategy (memcached: no moving window)
                continue
            await limiter.hit(item, "warmup")
            await limiter.get_window_stats(item, "warmup")
            await limiter.clear(item, "warmup")
        return await operation(storage)

    return warmed_up


# options RedisWire understands as coredis does; any other option is for `limits`' client alone
_WIRE_OPTIONS = frozenset({"key_prefix", "username", "password", "ssl_context"})
_SETTINGS = frozenset({"uri", "timeout", "connect_timeout", "on_failure", "retry_interval", "options", "remote",
                       "max_bytes", "clock"})

StoreListener = Callable[["RateLimitStore", bool], None]


class RateLimitStore:
    """``RateLimitStore("redis://10.0.0.5:6379", timeout=0.1, on_failure="local")``; the default is in memory.

    `uri` is any `limits` storage URI (``memory://``, ``redis://``, ``rediss://``, ``redis+cluster://``,
    ``redis+sentinel://``, ``memcached://``, ...; the ``async+`` prefix is added for you); `options` go to the
    storage class. Credentials and TLS settings are read from the URI as coredis reads them
    (``rediss://user:pw@host:6380/0?ssl_ca_certs=/ca.pem``), by both clients of a standalone Redis. `timeout`
    bounds every store call (seconds), except the first one of a new client, which connects and loads the
    scripts (`connect_timeout`). `on_failure` says what a request does while the
    store is unavailable: ``"local"`` counts in this process's memory instead, ``"open"`` admits it uncounted,
    ``"closed"`` refuses it (503). `max_bytes` bounds the memory the counters of this process take (the memory
    store's, or the fallback's): past it the least recently used are dropped. For metrics: `healthy`, `outages`
    (times it went down), `failures` (failed calls), `fallbacks` (decisions made without it), `evictions`
    (counters dropped to stay within `max_bytes`), `last_error`, and `on_change(store, healthy)`, called at
    every transition. `clock` (memory store only; default `time.time`) is the time, in Unix seconds, its windows
    and the rate limit headers are reckoned by: tests pass a clock they move forward instead of sleeping. A remote
    store's windows expire on its server's clock, so it takes none.
    """

    __slots__ = (
        "_fallback",
        "_fallback_evictions",
        "_loop",
        "_probe",
        "_storage",
        "_warm",
        "_warming",
        "clock",
        "connect_timeout",
        "counters",
        "failures",
        "fallbacks",
        "healthy",
        "last_error",
        "max_bytes",
        "on_change",
        "on_failure",
        "options",
        "outages",
        "remote",
        "retry_interval",
        "timeout",
        "uri",
        "wire",
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
        on_change: StoreListener | None = None,
        max_bytes: int = MEMORY_MAX_BYTES,
        clock: Callable[[], float] | None = None,
    ) -> None:
        require_limits()
        from limits._storage_scheme import SCHEMES

        from ._memory import MemoryCounters

        scheme = urllib.parse.urlsplit(uri).scheme
        full = uri if scheme.startswith("async+") else f"async+{uri}"
        if urllib.parse.urlsplit(full).scheme not in SCHEMES:
            known = sorted(s.removeprefix("async+") for s in SCHEMES if s.startswith("async+"))
            raise ConfigurationError(f"rate limit store {uri!r}: unknown scheme; known: {', '.join(known)}")
        if on_failure not in ("local", "open", "closed"):
            raise ConfigurationError(f"rate limit store on_failure={on_failure!r}: use 'local', 'open' or 'closed'.")
        if not timeout > 0 or not connect_timeout > 0 or not retry_interval > 0:
            raise ConfigurationError("rate limit store timeouts and retry_interval must be > 0 seconds.")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 64 * 1024:
            raise ConfigurationError(f"rate limit store max_bytes={max_bytes!r}: give at least 65536 bytes.")
        if on_change is not None and not callable(on_change):
            raise ConfigurationError(f"rate limit store on_change={on_change!r} is not callable.")
        remote = not full.startswith("async+memory:")
        if clock is not None and (remote or not callable(clock)):
            raise ConfigurationError(f"rate limit store clock={clock!r}: only a memory store takes a clock (a function "
                                     "returning Unix seconds); a remote store's windows run on its server's clock.")
        self.clock: Callable[[], float] = clock or time.time
        self.uri = full
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self.on_failure: OnFailure = on_failure
        self.retry_interval = float(retry_interval)
        self.options = MappingProxyType(dict(options or {}))
        self.remote = remote
        self.on_change = on_change
        self.max_bytes = max_bytes
        self.healthy = True
        self.outages = 0
        self.failures = 0
        self.last_error: str | None = None
        self.fallbacks = 0
        self._storage: Storage | None = None
        self._fallback: MemoryCounters | None = None
        self._fallback_evictions = 0  # of fallbacks of event loops gone
        # the memory store: every strategy counted here, the fixed windows without an await
        self.counters = MemoryCounters(max_bytes, self.clock) if not self.remote else None
        # a standalone Redis counts fixed windows through RedisWire: redis-py and coredis cost 200-300 µs of CPU
        # more per request (benchmarks/README.md, "Redis clients")
        self.wire = self._new_wire()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._warm = False
        self._warming = None
        self._probe: asyncio.Task[None] | None = None
        if self.remote:
            self._new_storage()  # a missing client library or a bad URI fails now, not at the first request

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SETTINGS and hasattr(self, name):
            raise AttributeError("RateLimitStore settings are immutable; create a new store")
        object.__setattr__(self, name, value)

    @property
    def down(self) -> bool:
        return not self.healthy

    @property
    def evictions(self) -> int:
        """Counters dropped from this process's memory to stay within `max_bytes`."""
        memory = self.counters if self.counters is not None else self._fallback
        return self._fallback_evictions + (memory.evictions if memory is not None else 0)

    def _new_wire(self) -> RedisWire | None:
        if not RedisWire.supports(self.uri) or not set(self.options) <= _WIRE_OPTIONS:
            return None
        try:
            return RedisWire(self.uri, **self.options)
        except (ValueError, OSError) as exc:  # a bad TLS setting, a missing CA or certificate file
            raise ConfigurationError(f"rate limit store {self.display()!r}: {exc}") from None

    def _new_storage(self) -> Storage:
        from limits.aio.storage import Storage
        from limits.errors import ConfigurationError as LimitsConfigurationError
        from limits.storage import storage_from_string

        options = dict(self.options)
        # coredis retries a command after a connection error or timeout by default: a rate limit script that did
        # run would then count twice. A failed call is handled here (on_failure) instead.
        coredis = self.uri.startswith("async+redis") and options.get("implementation") in (None, "coredis")
        sentinel = self.uri.startswith("async+redis+sentinel")
        if coredis and not sentinel:
            from coredis.exceptions import ClusterDownError
            from coredis.retry import ConstantRetryPolicy, NoRetryPolicy

            cluster = self.uri.startswith("async+redis+cluster")
            # a cluster that is down did not run the command: that one is safe to retry
            options.setdefault("retry_policy", ConstantRetryPolicy((ClusterDownError,), 2, 0.05)
                               if cluster else NoRetryPolicy())
            if not cluster:
                # coredis passes ssl_* keywords on to its connections, which refuse them at the first call
                misplaced = sorted(name for name in options if name.startswith("ssl_") and name != "ssl_context")
                if misplaced:
                    raise ConfigurationError(
                        f"rate limit store {self.display()!r}: give {', '.join(misplaced)} in the URI's query "
                        "(rediss://host:port/0?ssl_ca_certs=...), or pass options={'ssl_context': ...}")
                # a percent-encoded password in the URI means the same to coredis as to RedisWire and redis-py
                options.setdefault("decode_components", True)
        if coredis and (sentinel or self.uri.startswith("async+redis+cluster")):
            self._multi_host_options(options, sentinel)
        try:
            storage = storage_from_string(self.uri, **options)
        # a missing client library, a bad URI or TLS setting, a missing CA or certificate file
        except (LimitsConfigurationError, ValueError, TypeError, KeyError, OSError) as exc:
            raise ConfigurationError(f"rate limit store {self.display()!r}: {exc}") from None
        if not isinstance(storage, Storage):
            raise ConfigurationError(f"rate limit store {self.display()!r} is not an async storage.")
        if coredis and sentinel and "retry_policy" not in options:  # Sentinel's clients take no retry_policy
            from coredis.retry import NoRetryPolicy

            bridge: Any = getattr(storage, "bridge", None)
            for client in (getattr(bridge, "storage", None), getattr(bridge, "storage_replica", None)):
                if client is not None:
                    client.retry_policy = NoRetryPolicy()
        return storage

    def _multi_host_options(self, options: dict[str, Any], sentinel: bool) -> None:
        """Cluster and Sentinel URIs through coredis: what `limits` would otherwise get wrong only at the first call.

        `limits` reads neither their query (TLS settings there would be ignored, and the client would speak plain
        text to a TLS port) nor their percent-encoding (an encoded password would be sent encoded).
        """
        parts = urllib.parse.urlsplit(self.uri.removeprefix("async+"))
        if parts.query:
            names = ", ".join(sorted(urllib.parse.parse_qs(parts.query, keep_blank_values=True))) or parts.query
            tls = "options={'ssl_context': ...}" + (", sentinel_kwargs={'ssl_context': ...}" if sentinel else "")
            raise ConfigurationError(
                f"rate limit store {self.display()!r}: a Cluster or Sentinel URI takes no query ({names}); give "
                f"TLS settings as {tls} and other settings as options")
        if sentinel:  # Sentinel's connections take ssl_context only
            misplaced = sorted(name for name in options if name == "ssl" or (
                name.startswith("ssl_") and name != "ssl_context"))
            if misplaced:
                raise ConfigurationError(
                    f"rate limit store {self.display()!r}: Sentinel connections do not take {', '.join(misplaced)};"
                    " pass options={'ssl_context': ..., 'sentinel_kwargs': {'ssl_context': ...}}")
        credentials = {}
        if parts.username:
            credentials["username"] = urllib.parse.unquote(parts.username)
        if parts.password is not None:
            credentials["password"] = urllib.parse.unquote(parts.password)
        for name, value in credentials.items():
            options.setdefault(name, value)
        if sentinel and credentials:  # limits gives the URI's credentials to the Sentinels too, undecoded
            options["sentinel_kwargs"] = {**credentials, **(options.get("sentinel_kwargs") or {})}

    def storage(self) -> Storage:
        """The storage client, created on first use in the running event loop (clients belong to one loop)."""
        if self.counters is not None:
            return self.counters
        loop = asyncio.get_running_loop()
        if self._storage is None or self._loop is not loop:
            self._storage = self._new_storage()
            self._warm = False
            self._warming = asyncio.Lock()
            self._drop_fallback()
            self._probe = None
            self._loop = loop
            if not self.healthy:  # it failed in another event loop: probe it in this one
                self._start_probe()
        return self._storage

    def fallback(self) -> Storage:
        if self.counters is not None:
            return self.counters
        if self._fallback is None or self._loop is not asyncio.get_running_loop():
            from ._memory import MemoryCounters

            self.storage()
            self._fallback = MemoryCounters(self.max_bytes)
        return self._fallback

    def _drop_fallback(self) -> None:
        if self._fallback is not None:
            self._fallback_evictions += self._fallback.evictions
            self._fallback = None

    async def call(self, operation: Callable[[Storage], Awaitable[T]]) -> tuple[T | None, bool]:
        """Run `operation` on the store; (result, True) or, while the store is unavailable, (None, False)."""
        if not self.remote:
            return await operation(self.storage()), True
        if not self.healthy:
            if self._loop is not asyncio.get_running_loop():
                self.storage()  # a new event loop: a client and a probe of its own
            self.fallbacks += 1
            return None, False
        storage = self.storage()
        if not self._warm:
            # The first call of a client connects and loads the scripts, which takes longer: one request does it
            # (within connect_timeout) while the others of the first burst wait for it instead of piling up.
            assert self._warming is not None
            try:
                async with asyncio.timeout(max(self.timeout, self.connect_timeout)):
                    await self._warming.acquire()
            except TimeoutError:
                self.fallbacks += 1
                return None, False
            try:
                if not self.healthy:  # the request that held the lock found the store down: do not try again
                    self.fallbacks += 1
                    return None, False
                if not self._warm:
                    return await self._attempt(_warmed_up(operation), storage,
                                               max(self.timeout, self.connect_timeout))
            finally:
                self._warming.release()
        return await self._attempt(operation, storage, self.timeout)

    async def _attempt(
        self, operation: Callable[[Storage], Awaitable[T]], storage: Storage, limit: float
    ) -> tuple[T | None, bool]:
        try:
            async with asyncio.timeout(limit):
                result = await operation(storage)
        except Exception as exc:  # any failure of the store client: a refused connection, a timeout, a bad reply
            self.failures += 1
            self.fallbacks += 1
            self.last_error = _describe(exc)
            self._warm = False  # a restarted server has lost its scripts: load them again first
            if self.healthy:
                self._change(False)
            return None, False
        self._warm = True
        return result, True

    def _change(self, healthy: bool) -> None:
        self.healthy = healthy
        if not healthy and self.wire is not None:
            self.wire.close()  # a hung server's connection is not used again: the next call connects afresh
        if healthy:
            logger.warning("rate limit store %s is available again", self.display())
        else:
            self.outages += 1
            logger.warning("rate limit store %s unavailable (%s); on_failure=%s, retrying every %ss",
                           self.display(), self.last_error, self.on_failure, self.retry_interval)
            self._start_probe()
        if self.on_change is not None:
            try:
                self.on_change(self, healthy)
            except Exception:  # a broken metrics hook must not break rate limiting
                logger.exception("rate limit store on_change hook failed")

    def _start_probe(self) -> None:
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_healthy())

    async def _probe_until_healthy(self) -> None:
        """Every `retry_interval`, connect and load the scripts; when that works, the store is healthy again."""

        async def nothing(storage: Storage) -> None:
            return None

        while not self.healthy:
            await asyncio.sleep(self.retry_interval)
            storage = self.storage()
            try:
                async with asyncio.timeout(max(self.timeout, self.connect_timeout)):
                    await _warmed_up(nothing)(storage)
            except Exception as exc:
                self.last_error = _describe(exc)
                continue
            self._warm = True
            self._change(True)

    async def aclose(self) -> None:
        """At gateway shutdown: stop the probe and close the connections; harmless twice, counters in memory stay.

        The next call connects afresh, in this event loop or another, as after a change of event loop; a store
        that was unavailable stays so (and is probed again) until it answers.
        """
        probe, self._probe = self._probe, None
        if probe is not None and not probe.done() and not probe.get_loop().is_closed():
            if probe.get_loop() is asyncio.get_running_loop():
                probe.cancel()
                await asyncio.wait([probe])  # it is done when this returns: no pending task left to destroy
            else:
                probe.get_loop().call_soon_threadsafe(probe.cancel)
        if not self.remote:
            return
        storage, self._storage = self._storage, None
        self._loop = None
        self._drop_fallback()
        self._warm = False
        self._warming = None
        closing = None
        if self.wire is not None:
            closing = self.wire._protocol  # the connection being closed, to wait for below
            try:
                self.wire.close()
            except RuntimeError:  # its event loop is closed, and the connection with it
                closing = None
        if storage is not None:
            await _close_clients(storage, self.display())
        # A closed transport lets go of its socket in a later loop iteration (after the close_notify with TLS):
        # wait for that, briefly, so that a loop closed right after this leaves no socket behind.
        await asyncio.sleep(0)
        for _ in range(200):  # at most a second
            if closing is None or closing.closed is not None:
                break
            await asyncio.sleep(0.005)

    def display(self) -> str:
        parts = urllib.parse.urlsplit(self.uri.removeprefix("async+"))
        hosts = parts.netloc.rpartition("@")[2]  # never the password; several hosts for Cluster and Sentinel
        return f"{parts.scheme}://{hosts}"

    def _fields(self) -> tuple[Any, ...]:
        return (self.uri, self.timeout, self.connect_timeout, self.on_failure, self.retry_interval, dict(self.options),
                self.max_bytes, self.clock)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RateLimitStore) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash((self.uri, self.timeout, self.on_failure, self.retry_interval))


    def __repr__(self) -> str:
        size = f", max_bytes={self.max_bytes}" if self.max_bytes != MEMORY_MAX_BYTES else ""
        if not self.remote:
            clock = f", clock={self.clock!r}" if self.clock is not time.time else ""
            return f"RateLimitStore('memory://'{size}{clock})"
        return (f"RateLimitStore({self.display()!r}, timeout={self.timeout}, on_failure={self.on_failure!r}, "
                f"retry_interval={self.retry_interval}{size})")


async def _close_clients(storage: Storage, name: str) -> None:
    """Disconnect the Redis clients of a `limits` storage, by their public API.

    coredis (standalone, Cluster, Sentinel's primary and replica clients and its clients of the Sentinels)
    has no close of its own: its connection pool's `disconnect()`. redis-py and valkey clients have `aclose()`.
    Other storages (Memcached) keep their clients private and close them when they are dropped.
    """
    bridge = getattr(storage, "bridge", None)
    sentinel = getattr(bridge, "sentinel", None)
    clients = [getattr(bridge, "storage", None), getattr(bridge, "storage_replica", None),
               *getattr(sentinel, "sentinels", ())]
    seen: set[int] = set()
    for client in clients:
        if client is None or id(client) in seen:
            continue
        seen.add(id(client))
        try:
            close = getattr(client, "aclose", None)
            pool = getattr(client, "connection_pool", None)
            result = close() if callable(close) else pool.disconnect() if pool is not None else None
            if inspect.isawaitable(result):
                await result
        except Exception as exc:  # a client that cannot close cleanly is dropped anyway
            logger.warning("rate limit store %s: closing a client failed: %s", name, _describe(exc))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "TimeoutError: no answer in time"
    return f"{type(exc).__name__}: {exc}"


def register_store_metrics(metrics: Metrics, store: RateLimitStore) -> None:
    """The store's health and failure figures as series, read at scrape time (nothing added per request)."""
    if not metrics.first_time(store):
        return
    p = metrics.prefix + "_" if metrics.prefix else ""
    label = (store.display() if store.remote else "memory://",)
    metrics.gauge(f"{p}ratelimit_store_up", "1 while the rate limit store answers, 0 while it is down.",
                  ["store"], read=lambda: {label: 1.0 if store.healthy else 0.0})
    metrics.counter(f"{p}ratelimit_store_outages_total", "Times the rate limit store went down.",
                    ["store"], read=lambda: {label: store.outages})
    metrics.counter(f"{p}ratelimit_store_failures_total", "Rate limit store calls that failed or timed out.",
                    ["store"], read=lambda: {label: store.failures})
    metrics.counter(f"{p}ratelimit_store_fallbacks_total",
                    "Decisions made without the store (by on_failure) while it was down.",
                    ["store"], read=lambda: {label: store.fallbacks})
    metrics.counter(f"{p}ratelimit_store_evictions_total",
                    "Counters dropped from this process's memory (the memory store's or the fallback's) to stay "
                    "within max_bytes.", ["store"], read=lambda: {label: store.evictions})

