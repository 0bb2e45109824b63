"""asgigate with the full edge stack that exists today.

Today: request ids and the JSON access log (both on by default). The access log goes to the Python logger
"asgigate.access"; it is sent to a real file handler (``/dev/null`` unless ``ACCESS_LOG_PATH`` is set) so
the formatting and the write are paid for. Later: JWT auth and rate limits get added here.
"""

import logging
import os

from asgigate import Gateway, Proxy, Route, Upstream

_access = logging.getLogger("asgigate.access")
_access.addHandler(logging.FileHandler(os.environ.get("ACCESS_LOG_PATH", os.devnull)))
_access.setLevel(logging.INFO)
_access.propagate = False


class Full(Gateway):
    def __init__(self) -> None:
        super().__init__()
        self.backend = Upstream(os.environ["UPSTREAM_URL"])

    def routes(self) -> list[Route]:
        return [Route("/{path:path}", Proxy(self.backend))]


app = Full()
