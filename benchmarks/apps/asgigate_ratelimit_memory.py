"""asgigate with a plain proxy route behind an in-memory rate limit (issue target: >= 0.9x asgigate_plain).

The limit is per client address and high enough never to refuse during a run: what is measured is the cost of
the decision and of the rate limit headers on every reply, not of 429 replies.
"""

import os

from asgigate import Gateway, Proxy, RateLimit, Route, Upstream, by_client_ip


class RateLimitedMemory(Gateway):
    def __init__(self) -> None:
        super().__init__(request_id=False, access_log=False)
        self.backend = Upstream(os.environ["UPSTREAM_URL"])  # e.g. "http://127.0.0.1:8081"

    def policies(self) -> list[RateLimit]:
        return [RateLimit("1000000000/hour", key=by_client_ip)]

    def routes(self) -> list[Route]:
        return [Route("/{path:path}", Proxy(self.backend))]


app = RateLimitedMemory()
