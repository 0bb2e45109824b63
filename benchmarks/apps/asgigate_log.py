"""asgigate with request ids and the JSON access log only: the edge stack before auth and rate limits.

Both are on by default. The access log goes to a buffered `AccessLog` on a real file (``/dev/null`` unless
``ACCESS_LOG_PATH`` is set), so the formatting and the writes are paid for (see ``edge.py``).
"""

from edge import Edge

from asgigate import Proxy, Route


class Logged(Edge):
    def routes(self) -> list[Route]:
        return [Route("/{path:path}", Proxy(self.backend))]


app = Logged()
