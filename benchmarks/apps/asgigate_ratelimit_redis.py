"""asgigate with a plain proxy route behind a Redis rate limit (issue target: >= 0.6x asgigate_plain).

``RATELIMIT_REDIS_URL`` names the Redis (default ``redis://127.0.0.1:6379``); every worker shares its counters.
The limit never refuses during a run: what is measured is one store round trip per limit and the headers.
"""

import os

from asgigate import Gateway, Proxy, RateLimit, RateLimitStore, Route, Upstream, by_client_ip


class RateLimitedRedis(Gateway):
    def __init__(self) -> None:
        super().__init__(request_id=False, access_log=False)
        self.backend = Upstream(os.environ["UPSTREAM_URL"])  # e.g. "http://127.0.0.1:8081"
        self.store = RateLimitStore(os.environ.get("RATELIMIT_REDIS_URL", "redis://127.0.0.1:6379"), timeout=0.5)

    def policies(self) -> list[RateLimit]:
        return [RateLimit("1000000000/hour", key=by_client_ip, store=self.store, name="bench")]

    def routes(self) -> list[Route]:
        return [Route("/{path:path}", Proxy(self.backend))]


app = RateLimitedRedis()
