"""RateLimit: rate limits and quotas, on the `limits` library's async strategies and stores.

A request's decision is one atomic store operation per limit (an INCR, or a script for the moving and sliding
windows), so several gateway processes sharing one Redis never admit more than the limit. Limits are tried
shortest window first; the first one that refuses stops the request (later ones do not count it).
Rejections are `RateLimited` (429 ``rate_limited``) or, for a quota, `QuotaExceeded` (429 ``quota_exceeded``),
rendered by the gateway's error renderer; every reply carries the ``RateLimit-Policy`` / ``RateLimit`` headers
(IETF httpapi draft) and ``X-RateLimit-Limit/Remaining/Reset``, from the limit with the least left.
"""

from __future__ import annotations

import collections
import functools
import hashlib
import math
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal, NamedTuple, TypeAlias

from ..._frozen import Frozen
from ...errors import ConfigurationError, Forbidden, GatewayError, QuotaExceeded, RateLimited, RequestTerminated
from ...pipeline import Policy
from ._redis_wire import RedisWire
from .keys import Key, KeyLike, as_key, by_client_ip
from .limits import STRATEGIES, Limit, LimitsLike, Plan, Strategy, as_limits, limiter, window_text
from .store import RateLimitStore, register_store_metrics

if TYPE_CHECKING:
    from limits.aio.storage import Storage
    from starlette.responses import Response

    from ...exchange import Exchange
    from ...metrics import Metrics
    from ...pipeline import ResponseHead
    from ._memory import MemoryCounters

__all__ = ["HeaderSet", "LimitUsage", "MissingKey", "RateLimit"]

MissingKey: TypeAlias = Literal["shared", "allow"] | type[GatewayError]
_HEADER_NAMES = frozenset({b"ratelimit", b"ratelimit-policy", b"x-ratelimit-limit", b"x-ratelimit-remaining",
                           b"x-ratelimit-reset"})
# exchange.state[HEADERS_KEY]: the rate limit headers this request earned, from the limit with the least left of
# every RateLimit that counted it: (limit, remaining, reset, policy header pair, header set). `add_headers` sends them.
HEADERS_KEY = "ratelimit.headers"
_names: collections.Counter[str] = collections.Counter()
_default_store: list[RateLimitStore] = []  # one memory store for every RateLimit without its own, made on first use


# Key values longer than this are counted by their digest: what a client sends (a header, a token's subject) then
# costs the same few bytes in every counter key, in memory and in Redis, however long it is.
MAX_KEY_VALUE = 64


def _digest(value: str) -> str:
    return "#" + hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def _memory_store() -> RateLimitStore:
    if not _default_store:
        _default_store.append(RateLimitStore())
    return _default_store[0]


class LimitUsage(NamedTuple):
    """What is left of one limit for one key: `remaining` requests until `reset` (a Unix time)."""

    limit: Limit
    remaining: int
    reset: float


class _Outcome(NamedTuple):
    limit: Limit
    allowed: bool
    remaining: int
    reset: float


def _policy_header(limits: Sequence[Limit]) -> bytes:
    return ", ".join(f'"{limit.name}";q={limit.amount};w={limit.window}' for limit in limits).encode()


HeaderSet: TypeAlias = Literal["all", "ietf", "x-ratelimit"] | bool


def _header_pairs(
    limit: Limit, remaining: int, reset_at: float, policy_pair: tuple[bytes, bytes], which: str = "all",
    _time: Callable[[], float] = time.time, _ceil: Callable[[float], int] = math.ceil,
) -> list[tuple[bytes, bytes]]:
    reset = _ceil(reset_at - _time())
    reset_bytes = b"%d" % reset if reset > 0 else b"0"
    left = b"%d" % remaining
    if which == "all":
        return [
            policy_pair,
            (b"ratelimit", limit._name_field + left + b";t=" + reset_bytes),
            limit._limit_pair,
            (b"x-ratelimit-remaining", left),
            (b"x-ratelimit-reset", reset_bytes),
        ]
    if which == "ietf":
        return [policy_pair, (b"ratelimit", limit._name_field + left + b";t=" + reset_bytes)]
    return [limit._limit_pair, (b"x-ratelimit-remaining", left), (b"x-ratelimit-reset", reset_bytes)]


async def _hit(
    storage: Storage, limit: Limit, ids: str, cost: int, fast: MemoryCounters | None, resets: dict[str, float],
    wire: RedisWire | None = None, clock: Callable[[], float] = time.time,
) -> _Outcome:
    if limit.calendar:
        return await _hit_calendar(storage, limit, ids, cost, fast, wire, clock)
    if limit.strategy == "fixed-window":
        key = limit._key_head + ids + limit._key_tail  # what limits' RateLimitItem.key_for() makes
        now = clock()
        if fast is not None:
            count, reset = fast.hit(key, limit.window, cost, now)
        elif wire is not None:  # a standalone Redis: one pipelined round trip gives the count and the window's end
            count, left_ms = await wire.incr_window(key, limit.window, cost)
            reset = now + (left_ms / 1000.0 if left_ms > 0 else limit.window)
        else:
            count = await storage.incr(key, limit.window, amount=cost)  # INCR answers "how many" too
            if count == cost:  # this request opened the window
                reset = resets[key] = now + limit.window
            else:
                reset = resets.get(key, 0.0)
                if reset <= now:  # a window another process opened: ask once when it ends
                    reset = await storage.get_expiry(key)
                    if len(resets) > 10_000:
                        resets.clear()
                    resets[key] = reset
        return _Outcome(limit, count <= limit.amount, max(0, limit.amount - count), reset)
    strategy = limiter(limit.strategy, storage)
    item = limit._item
    allowed = await strategy.hit(item, ids, cost=cost)
    stats = await strategy.get_window_stats(item, ids)
    return _Outcome(limit, allowed, stats.remaining, stats.reset_time)


async def _hit_calendar(
    storage: Storage, limit: Limit, ids: str, cost: int, fast: MemoryCounters | None, wire: RedisWire | None,
    clock: Callable[[], float] = time.time,
) -> _Outcome:
    """A fixed window of the UTC calendar: the period's start is in the key, so every key turns over together."""
    now = clock()
    key, end = limit._calendar_key(ids, now)
    if fast is not None:
        count, _ = fast.hit(key, end - now, cost, now)
    elif wire is not None:  # the stores keep the counter in whole seconds: to the period's end, at least one
        count, _ = await wire.incr_window(key, max(1, math.ceil(end - now)), cost)
    else:
        count = await storage.incr(key, max(1, math.ceil(end - now)), amount=cost)
    return _Outcome(limit, count <= limit.amount, max(0, limit.amount - count), end)


async def _hit_all(
    storage: Storage, limits: Sequence[Limit], ids: str, cost: int, fast: MemoryCounters | None,
    resets: dict[str, float], wire: RedisWire | None, stop_on_refusal: bool, clock: Callable[[], float] = time.time,
) -> list[_Outcome]:
    """One request's hits on its limits, shortest window first, until one refuses (unless refusals only count)."""
    found = []
    for limit in limits:
        outcome = await _hit(storage, limit, ids, cost, fast, resets, wire, clock)
        found.append(outcome)
        if not outcome.allowed and stop_on_refusal and not limit.dry_run:
            break
    return found


class _Decisions:
    """How many requests a RateLimit admitted and refused (its `counts`)."""

    __slots__ = ("admitted", "dry_run_rejected", "rejected")

    def __init__(self) -> None:
        self.admitted = self.rejected = self.dry_run_rejected = 0


class RateLimit(Frozen, Policy):
    """``RateLimit("10/second; 1000/day", key=by_subject)``: count requests per key, refuse past the limits.

    `limits`: a `limits` string (several separated by ``;``), a `Limit`, or a list; all must pass. Or `plans`
    (name → `Plan`) with `plan`, a function of the exchange naming the consumer's plan (None → `default_plan`).
    `key`: `by_client_ip` (default), `by_header(...)`, `by_subject`, `by_route`, any function of the exchange, or
    a tuple of them. `missing_key`: requests whose key is None share one counter (``"shared"``), pass uncounted
    (``"allow"``), or are refused with the given error class (``Unauthorized``).
    `per_route`: separate counters per route (default: one counter per key wherever the policy is placed).
    `name`: the counters' namespace; policies with the same name and store share counters. `store`: a
    `RateLimitStore` or a URI (default: memory). `dry_run`: count and report, never refuse. `headers`: which
    rate limit headers to send: ``"all"`` (default), ``"ietf"`` (RateLimit-Policy and RateLimit only),
    ``"x-ratelimit"`` (X-RateLimit-* only) or False. `cost`: how much one request counts.
    """

    def __init__(
        self,
        limits: LimitsLike | None = None,
        *,
        key: KeyLike = by_client_ip,
        strategy: Strategy = "fixed-window",
        plans: Mapping[str, Plan] | None = None,
        plan: Callable[[Exchange], str | None] | None = None,
        default_plan: str | None = None,
        missing_key: MissingKey = "shared",
        per_route: bool = False,
        name: str | None = None,
        store: RateLimitStore | str | None = None,
        dry_run: bool = False,
        headers: HeaderSet = "all",
        cost: int = 1,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ConfigurationError(f"rate limit strategy {strategy!r}: use one of {', '.join(STRATEGIES)}.")
        if (limits is None) == (plans is None):
            raise ConfigurationError("RateLimit needs either limits or plans (with plan=), not both.")
        self._plans: dict[str | None, tuple[Limit, ...]] = {}
        if plans is not None:
            if plan is None or not callable(plan):
                raise ConfigurationError("RateLimit(plans=...) needs plan=, a function of the exchange naming a plan.")
            for plan_name, value in plans.items():
                if not isinstance(value, Plan):
                    raise ConfigurationError(f"plan {plan_name!r} is {value!r}, not a Plan.")
                self._plans[plan_name] = value.limits
            if default_plan is not None and default_plan not in plans:
                raise ConfigurationError(f"default_plan {default_plan!r} is not one of {sorted(plans)}.")
        else:
            assert limits is not None
            self._plans[None] = as_limits(limits, strategy)
        if not (missing_key in ("shared", "allow")
                or (isinstance(missing_key, type) and issubclass(missing_key, GatewayError))):
            raise ConfigurationError(f"missing_key={missing_key!r}: use 'shared', 'allow' or an error class.")
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ConfigurationError(f"RateLimit cost={cost!r} must be a positive integer.")
        self.limits = self._plans.get(None, ())
        self.plans = MappingProxyType(dict(plans or {}))
        self.plan = plan
        self.default_plan = default_plan
        self.key: Key = as_key(key)
        self.missing_key = missing_key
        self.per_route = per_route
        self.store = store if isinstance(store, RateLimitStore) else (
            RateLimitStore(store) if store is not None else _memory_store())
        self.dry_run = dry_run
        if headers not in (True, False, "all", "ietf", "x-ratelimit"):
            raise ConfigurationError(f"RateLimit headers={headers!r}: use 'all', 'ietf', 'x-ratelimit' or False.")
        self.headers = headers is not False
        self._header_set: str = headers if isinstance(headers, str) else "all"
        self.cost = cost
        if name is None:
            base = f"{self.key.name}:{','.join(f'{lim.amount}/{lim.window}' for lim in self.limits) or 'plans'}"
            _names[base] += 1
            name = f"{base}#{_names[base]}"  # the same code makes the same names in every process
        self.name = name
        self._policy_pairs = {plan_name: (b"ratelimit-policy", _policy_header(lims))
                              for plan_name, lims in self._plans.items()}
        self._decisions = _Decisions()  # run-time counts, the policy's one mutable part besides its counters
        self._fixed_only = {plan_name: all(limit.strategy == "fixed-window" and not limit.calendar for limit in lims)
                            for plan_name, lims in self._plans.items()}  # memory: counted without an await
        self._key_function = self.key.function
        self._simple_ids = f"{self.name}/" if not per_route and plan is None else ""  # ids = this + key value
        self._resets: dict[str, float] = {}  # window ends of remote fixed windows, so INCR is the only call
        self._fallback_resets: dict[str, float] = {}  # the same, for the fallback while the store is down
        counters = self.store.counters
        self._clock = self.store.clock  # the time windows and headers are reckoned by (a test's, or time.time)
        self._one: tuple[Limit, str, str, MemoryCounters, Callable[[], float]] | None = None
        if counters is not None and self._simple_ids and len(self.limits) == 1 and self._fixed_only[None]:
            limit = self.limits[0]
            self._one = (limit, limit._key_head + self._simple_ids, limit._key_tail, counters, self._clock)

    # --- the request ----------------------------------------------------------------------------------------

    def _limits_for(self, exchange: Exchange) -> tuple[str | None, tuple[Limit, ...]]:
        if self.plan is None:
            return None, self.limits
        chosen = self.plan(exchange) or self.default_plan
        limits = self._plans.get(chosen)
        if limits is None:
            raise Forbidden("No usage plan covers this request.", internal=f"plan {chosen!r} is not declared")
        return chosen, limits

    def _ids(self, value: str, route: str | None, plan: str | None) -> str:
        """The counters' identifiers, joined: policy name [/ route] [/ plan] / key value."""
        parts = [self.name]
        if self.per_route and route is not None:
            parts.append(route)
        if plan is not None:
            parts.append(plan)
        parts.append(value)
        return "/".join(parts)

    async def charge(self, exchange: Exchange, cost: int) -> None:
        """Count one hit of `cost` for this request (a GraphQL query's computed cost, say); raises past the limit."""
        if isinstance(cost, bool) or not isinstance(cost, int) or cost < 1:
            raise ValueError(f"RateLimit.charge cost={cost!r} must be a positive integer.")
        await self.on_request(exchange, cost)

    async def on_request(self, exchange: Exchange, cost: int | None = None) -> Response | None:
        value = self._key_function(exchange)
        if value is not None and len(value) > MAX_KEY_VALUE:
            value = _digest(value)
        one = self._one
        if one is not None and value is not None and cost is None:
            # The common case (memory store, one fixed-window limit, no plans, no per-route counters): one counter
            # update and no await, every request of the route passes through it.
            limit, head, tail, counters, clock = one
            count, reset = counters.hit(head + value + tail, limit.window, self.cost, clock())
            left = limit.amount - count
            if left >= 0:
                self._decisions.admitted += 1
                if self.headers:
                    state = exchange.state
                    seen = state.get(HEADERS_KEY)
                    if seen is None or left < seen[1]:
                        state[HEADERS_KEY] = (limit, left, reset, self._policy_pairs[None], self._header_set)
                return None
            self._conclude(exchange, [_Outcome(limit, False, 0, reset)], None)  # a refusal, unless a dry run
            return None
        return await self._decide(exchange, value, cost)

    async def _decide(self, exchange: Exchange, value: str | None, cost: int | None) -> Response | None:
        if value is None:
            if self.missing_key == "allow":
                return None
            if self.missing_key != "shared":
                raise self.missing_key(f"This request carries no {self.key.name.removeprefix('by_')} to count it by.")
            value = "-"
        if self.plan is None:
            plan_name, limits = None, self.limits
        else:
            plan_name, limits = self._limits_for(exchange)
        if self._simple_ids:
            ids = self._simple_ids + value
        else:
            route = exchange.route
            ids = self._ids(value, route.name if route is not None else None, plan_name)
        if cost is None:
            cost = self.cost
        stop_on_refusal = not self.dry_run
        store = self.store
        fast = store.counters
        if fast is not None and self._fixed_only[plan_name]:  # memory, fixed windows: no await at all
            now = self._clock()
            outcomes = []
            for limit in limits:
                count, reset = fast.hit(limit._key_head + ids + limit._key_tail, limit.window, cost, now)
                outcomes.append(_Outcome(limit, count <= limit.amount, max(0, limit.amount - count), reset))
                if count > limit.amount and stop_on_refusal and not limit.dry_run:
                    break
        else:
            found, _ = await store.call(functools.partial(
                _hit_all, limits=limits, ids=ids, cost=cost, fast=fast, resets=self._resets, wire=store.wire,
                stop_on_refusal=stop_on_refusal, clock=self._clock))
            if found is None:  # the store is unavailable
                if store.on_failure == "open":
                    return None
                if store.on_failure == "closed":
                    raise RequestTerminated("Rate limiting is unavailable; try again shortly.", status=503,
                                            reason="ratelimit_store_unavailable", headers={"retry-after": "1"})
                found = await _hit_all(store.fallback(), limits, ids, cost, fast, self._fallback_resets, None,
                                       stop_on_refusal, self._clock)
            outcomes = found
        self._conclude(exchange, outcomes, plan_name)
        return None

    def _conclude(self, exchange: Exchange, outcomes: list[_Outcome], plan_name: str | None) -> None:
        """Count the outcomes of one request's limits: raise for a refusal, else note the tightest limit's headers."""
        refused = None
        tightest = outcomes[0]
        for outcome in outcomes:
            if not outcome.allowed and refused is None:
                refused = outcome
            if outcome.remaining < tightest.remaining:
                tightest = outcome
        if refused is None:
            self._decisions.admitted += 1
        elif refused.limit.dry_run or self.dry_run:
            self._decisions.dry_run_rejected += 1
            exchange.state["ratelimit.dry_run_rejected"] = refused.limit.name
        else:
            self._decisions.rejected += 1
            retry_after = max(1, math.ceil(refused.reset - self._clock()))
            headers = None
            if self.headers:
                pairs = _header_pairs(refused.limit, refused.remaining, refused.reset, self._policy_pairs[plan_name],
                                      self._header_set, self._clock)
                headers = {k.decode(): v.decode() for k, v in pairs}
            detail = (f"The quota of {refused.limit.amount} requests per {window_text(refused.limit.window)} "
                      "is used up." if refused.limit.quota else "Too many requests; slow down.")
            raise (QuotaExceeded if refused.limit.quota else RateLimited)(
                detail, retry_after=retry_after, headers=headers)
        if self.headers:
            state = exchange.state
            seen = state.get(HEADERS_KEY)
            if seen is None or tightest.remaining < seen[1]:
                state[HEADERS_KEY] = (tightest.limit, tightest.remaining, tightest.reset,
                                      self._policy_pairs[plan_name], self._header_set)

    @property
    def counts(self) -> collections.Counter[str]:
        """Decisions so far: ``admitted``, ``rejected`` and ``dry_run_rejected`` (a refusal a dry run let pass)."""
        decisions = self._decisions
        return collections.Counter({"admitted": decisions.admitted, "rejected": decisions.rejected,
                                    "dry_run_rejected": decisions.dry_run_rejected})

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        # the outermost RateLimit on the chain adds the headers (see add_headers)
        seen = exchange.state.pop(HEADERS_KEY, None)
        if seen is None:
            return
        limit, left, reset_at, policy_pair, which = seen
        pairs = _header_pairs(limit, left, reset_at, policy_pair, which, self._clock)
        message = head.message
        raw = message.get("headers")
        if not isinstance(raw, list):
            raw = message["headers"] = list(raw or [])
        if exchange.error is None:
            for name, _ in raw:
                if name in _HEADER_NAMES:
                    break
            else:
                raw += pairs  # the common case: nothing to keep, append to the raw headers
                return
        # an error reply carries the refusing limit's headers; an upstream may send its own: both are kept
        response_headers = head.headers
        for name, value in pairs:
            if name.decode() not in response_headers:
                response_headers[name.decode()] = value.decode()

    async def add_headers(self, exchange: Exchange, head: ResponseHead) -> None:
        """Add the rate limit headers this request earned to a response head, once per request.

        They are those of the limit with the least left, of every RateLimit that counted the request: the first
        call adds them (the outermost RateLimit's response hook, or a target that sends a reply of its own, as
        GraphQL does after charging a query's cost with `charge`), later calls find nothing left to add."""
        await self.on_response(exchange, head)

    def register_metrics(self, metrics: Metrics) -> None:
        p = metrics.prefix + "_" if metrics.prefix else ""
        metrics.counter(
            f"{p}ratelimit_decisions_total",
            "Rate limit decisions by policy name and outcome (admitted, rejected, dry_run_rejected).",
            ["policy", "outcome"], read=lambda: {(self.name, outcome): n for outcome, n in self.counts.items()},
        )
        register_store_metrics(metrics, self.store)

    async def aclose(self) -> None:
        """At gateway shutdown: the store's connections and probe; a memory store keeps its counters."""
        await self.store.aclose()

    # --- inspect and reset, for admin endpoints and tests ---------------------------------------------------

    def _admin(self, value: str, route: str | None, plan: str | None) -> tuple[str, tuple[Limit, ...]]:
        if len(value) > MAX_KEY_VALUE:
            value = _digest(value)
        if self.plan is None:
            return self._ids(value, route, None), self.limits
        plan = plan or self.default_plan
        if plan not in self._plans:
            raise ValueError(f"unknown plan {plan!r}")
        return self._ids(value, route, plan), self._plans[plan]

    async def usage(self, value: str, *, route: str | None = None, plan: str | None = None) -> list[LimitUsage]:
        """What is left of each limit for one key value (``await limit.usage("203.0.113.7")``)."""
        ids, limits = self._admin(value, route, plan)

        async def read(storage: Storage) -> list[LimitUsage]:
            found = []
            for limit in limits:
                if limit.calendar:
                    key, end = limit._calendar_key(ids, self._clock())
                    found.append(LimitUsage(limit, max(0, limit.amount - await storage.get(key)), end))
                    continue
                stats = await limiter(limit.strategy, storage).get_window_stats(limit._item, ids)
                found.append(LimitUsage(limit, stats.remaining, stats.reset_time))
            return found

        result, _ = await self.store.call(read)
        return result if result is not None else await read(self.store.fallback())

    async def reset(self, value: str, *, route: str | None = None, plan: str | None = None) -> None:
        """Forget the counters of one key value, as if it had made no request."""
        ids, limits = self._admin(value, route, plan)

        async def clear(storage: Storage) -> None:
            for limit in limits:
                if limit.calendar:
                    await storage.clear(limit._calendar_key(ids, self._clock())[0])
                else:
                    await limiter(limit.strategy, storage).clear(limit._item, ids)

        await self.store.call(clear)
        await clear(self.store.fallback())

    def __repr__(self) -> str:
        if self.plan is not None:
            parts = [f"plans={dict(self.plans)!r}"]
        else:
            parts = ["; ".join(f"{lim.amount}/{window_text(lim.window)}" for lim in self.limits)]
            parts[0] = repr(parts[0]) if all(lim.strategy == "fixed-window" and not lim.quota and not lim.dry_run
                                             and not lim.calendar for lim in self.limits) else repr(list(self.limits))
        parts.append(f"key={self.key!r}")
        if self.per_route:
            parts.append("per_route=True")
        if self.store.remote:
            parts.append(f"store={self.store!r}")
        if self.dry_run:
            parts.append("dry_run=True")
        if not self.headers or self._header_set != "all":
            parts.append(f"headers={self._header_set if self.headers else False!r}")
        if self.missing_key != "shared":
            parts.append(f"missing_key={getattr(self.missing_key, '__name__', self.missing_key)!r}")
        return f"RateLimit({', '.join(parts)})"
