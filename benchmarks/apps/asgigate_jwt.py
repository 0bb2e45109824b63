"""asgigate, plain proxy route behind JWT bearer auth only (no request ids, no access log, no rate limit).

RS256 with a static key from the harness (see ``edge.py``); wrk repeats one token, so after the first request
this is the verified-token cache path plus reading the header, which is what a client reusing its token pays.
"""

from edge import Edge, bearer_auth

from asgigate import BearerAuth, Proxy, Route


class Jwt(Edge):
    def __init__(self) -> None:
        super().__init__(request_id=False, access_log=False)
        self.auth = bearer_auth()

    def policies(self) -> list[BearerAuth]:
        return [self.auth]

    def routes(self) -> list[Route]:
        return [Route("/{path:path}", Proxy(self.backend))]


app = Jwt()
