"""asgigate, plain proxy route behind a Redis rate limit (issue 6 target: >= 0.6x asgigate_plain).

``RATELIMIT_REDIS_URL`` names the Redis (the harness starts one on the load core); every worker shares its
counters. The limit never refuses during a run: what is measured is one store round trip per request and the
headers. A store failure answers 503 (counted as an error by wrk), never a silent in-memory fallback.

`app` counts through asgigate's own client (`RedisWire`). The others make the same call through a client
library (see redis_clients.py): `redispy` (redis-py's asyncio client and its connection pool), `redispy_pipeline`
(redis-py, each event-loop iteration's calls in one pipeline), `coredis` (the same script through coredis), and
`limits_coredis`, the store without RedisWire: `limits`' own fixed window through coredis (INCRBY, and EXPIRE
when it opened the window), as any other option than a client's settings makes it.
"""

from edge import Edge, redis_rate_limit
from redis_clients import install

from asgigate import Proxy, RateLimit, Route


class RateLimitedRedis(Edge):
    def __init__(self, client: str = "wire") -> None:
        super().__init__(request_id=False, access_log=False)
        self.limit = redis_rate_limit(options={"implementation": "coredis"} if client == "limits-coredis" else None)
        if client not in ("wire", "limits-coredis"):
            install(self.limit.store, client)

    def policies(self) -> list[RateLimit]:
        return [self.limit]

    def routes(self) -> list[Route]:
        return [Route("/{path:path}", Proxy(self.backend))]


app = RateLimitedRedis()
redispy = RateLimitedRedis("redispy")
redispy_pipeline = RateLimitedRedis("redispy-pipeline")
coredis = RateLimitedRedis("coredis")
limits_coredis = RateLimitedRedis("limits-coredis")
