"""asgigate, plain proxy route behind a Redis rate limit (issue 6 target: >= 0.6x asgigate_plain).

``RATELIMIT_REDIS_URL`` names the Redis (the harness starts one on the load core); every worker shares its
counters. The limit never refuses during a run: what is measured is one store round trip per request and the
headers. A store failure answers 503 (counted as an error by wrk), never a silent in-memory fallback.
"""

from edge import Edge, redis_rate_limit

from asgigate import Proxy, RateLimit, Route


class RateLimitedRedis(Edge):
    def __init__(self) -> None:
        super().__init__(request_id=False, access_log=False)
        self.limit = redis_rate_limit()

    def policies(self) -> list[RateLimit]:
        return [self.limit]

    def routes(self) -> list[Route]:
        return [Route("/{path:path}", Proxy(self.backend))]


app = RateLimitedRedis()
