"""asgigate with a plain proxy route: no request ids, no access log."""

import os

from asgigate import Gateway, Proxy, Route, Upstream


class Plain(Gateway):
    def __init__(self) -> None:
        super().__init__(request_id=False, access_log=False)
        self.backend = Upstream(os.environ["UPSTREAM_URL"])  # e.g. "http://127.0.0.1:8081"

    def routes(self) -> list[Route]:
        return [Route("/{path:path}", Proxy(self.backend))]


app = Plain()
