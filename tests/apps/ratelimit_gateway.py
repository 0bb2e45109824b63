"""A gateway rate limiting by a header in memory, for tests that run it in its own server process (its memory is
measured from outside). `RATELIMIT_MAX_BYTES` sets the memory store's budget."""

from __future__ import annotations

import os

from asgigate import Direct, Gateway, Metrics, RateLimit, Route
from asgigate.policies.ratelimit import Limit, RateLimitStore, by_header

store = RateLimitStore(max_bytes=int(os.environ.get("RATELIMIT_MAX_BYTES", 64 * 1024 * 1024)))


class RateLimitedGateway(Gateway):
    def routes(self) -> list[Route]:
        assert self.metrics is not None
        return [
            Route("/fixed", Direct(text="ok"),
                  policies=[RateLimit("1000/day", key=by_header("x-tenant"), store=store)]),
            Route("/moving", Direct(text="ok"),
                  policies=[RateLimit(Limit("1000/day", strategy="moving-window"), key=by_header("x-tenant"),
                                      store=store)]),
            Route("/metrics", self.metrics.endpoint()),
        ]


app = RateLimitedGateway(access_log=False, request_id=False, metrics=Metrics())
