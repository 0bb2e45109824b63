"""asgigate with the full edge stack that exists today.

Request ids and the JSON access log (as ``asgigate_log``), JWT bearer auth (RS256, a static key from the
harness, see ``edge.py``), an in-memory rate limit per client address that never refuses during a run, and
Prometheus metrics (every request counted and timed; ``GET /metrics`` serves them).
"""

from typing import Any

from edge import Edge, bearer_auth, memory_rate_limit

from asgigate import Metrics, Proxy, Route


class Full(Edge):
    def __init__(self) -> None:
        super().__init__(metrics=Metrics())
        self.auth = bearer_auth()
        self.limit = memory_rate_limit()

    def policies(self) -> list[Any]:
        return [self.auth, self.limit]

    def routes(self) -> list[Route]:
        assert self.metrics is not None
        return [Route("/metrics", self.metrics.endpoint()), Route("/{path:path}", Proxy(self.backend))]


app = Full()
