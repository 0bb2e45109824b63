"""ConcurrencyLimit: at most N requests in flight per key, counted in this process."""

from __future__ import annotations

import collections

from ..errors import ConfigurationError, RateLimited
from ..exchange import Exchange
from ..policy import ASGIApp, Policy, Receive, Scope, Send
from ._ratelimit_keys import Key, KeyLike, as_key

__all__ = ["ConcurrencyLimit"]


class ConcurrencyLimit(Policy):
    """``ConcurrencyLimit(20)``: at most 20 requests of the routes it is on are served at once (429 beyond).

    `key` splits the allowance (``key=by_subject``: 20 per user); `per_route` gives every route its own.
    A slot is held until the response is complete, and released however the request ends: a finished
    response, an upstream failure or a client that went away. Counters are per process (a worker's
    capacity is what this protects); requests without a key value share one slot pool.
    """

    def __init__(self, limit: int, *, key: KeyLike | None = None, per_route: bool = False,
                 retry_after: int = 1) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"ConcurrencyLimit({limit!r}) needs a positive number of requests.")
        self.limit = limit
        self.key: Key | None = as_key(key) if key is not None else None
        self.per_route = per_route
        self.retry_after = retry_after
        self._in_flight: collections.Counter[tuple[str | None, ...]] = collections.Counter()

    def in_flight(self, value: str | None = None, *, route: str | None = None) -> int:
        """How many requests hold a slot now (for one key value / route when the policy splits by them)."""
        return self._in_flight[(route if self.per_route else None, value if self.key else None)]

    def wrap(self, app: ASGIApp) -> ASGIApp:
        in_flight = self._in_flight
        limit = self.limit

        async def concurrency_limited(scope: Scope, receive: Receive, send: Send) -> None:
            exchange = Exchange.of(scope)  # type: ignore[arg-type]
            route = exchange.route.name if self.per_route and exchange.route is not None else None
            slot = (route, (self.key(exchange) or "-") if self.key is not None else None)
            if in_flight[slot] >= limit:
                error = RateLimited("Too many requests in progress; try again shortly.", retry_after=self.retry_after)
                error.reason = "concurrency_limited"
                raise error
            in_flight[slot] += 1
            try:
                await app(scope, receive, send)
            finally:  # runs on success, on errors and when the client's disconnect cancels the request
                in_flight[slot] -= 1
                if not in_flight[slot]:
                    del in_flight[slot]

        return concurrency_limited

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ConcurrencyLimit) and (self.limit, self.key, self.per_route, self.retry_after) == (
            other.limit, other.key, other.per_route, other.retry_after)

    def __hash__(self) -> int:
        return hash((self.limit, self.key, self.per_route))

    def __repr__(self) -> str:
        parts = [str(self.limit)]
        if self.key is not None:
            parts.append(f"key={self.key!r}")
        if self.per_route:
            parts.append("per_route=True")
        return f"ConcurrencyLimit({', '.join(parts)})"
