"""A gateway module for tests that run it in its own server process (uvicorn, hypercorn, granian)."""

from __future__ import annotations

import os

from asgigate import Direct, Gateway, Proxy, Route, Upstream


class TestGateway(Gateway):
    def __init__(self) -> None:
        super().__init__(max_body_size=int(os.environ.get("MAX_BODY", "0")) or None)
        self.backend = Upstream(os.environ["UPSTREAM_URL"], timeout=float(os.environ.get("UPSTREAM_TIMEOUT", "10")))

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", Direct(json={"ok": True})),
            Route("/api/{path:path}", Proxy(self.backend, strip_prefix="/api")),
        ]


app = TestGateway()
