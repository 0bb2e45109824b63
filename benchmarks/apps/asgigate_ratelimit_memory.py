"""asgigate, plain proxy route behind an in-memory rate limit (issue 6 target: >= 0.9x asgigate_plain).

The limit is per client address and high enough never to refuse during a run: what is measured is the cost of
the decision and of the rate limit headers on every reply, not of 429 replies. `noheaders` is the same limit
with `headers=False`: the difference is what the five rate limit headers cost; `ietf` sends only the two
IETF draft headers (RateLimit-Policy and RateLimit).
"""

from edge import Edge, memory_rate_limit

from asgigate import Proxy, RateLimit, Route
from asgigate.policies.ratelimit.policy import HeaderSet


class RateLimitedMemory(Edge):
    def __init__(self, *, headers: HeaderSet = "all") -> None:
        super().__init__(request_id=False, access_log=False)
        self.limit = memory_rate_limit(headers=headers)

    def policies(self) -> list[RateLimit]:
        return [self.limit]

    def routes(self) -> list[Route]:
        return [Route("/{path:path}", Proxy(self.backend))]


app = RateLimitedMemory()
noheaders = RateLimitedMemory(headers=False)
ietf = RateLimitedMemory(headers="ietf")
