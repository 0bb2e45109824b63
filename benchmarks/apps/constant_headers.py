"""The five rate limit headers as constants around the plain asgigate proxy: no counting, no key, no formatting.

What appending the headers costs, before any rate limit has counted anything. Two ways:

- ``policy``: an asgigate policy whose request hook marks the exchange and whose response hook appends the
  five headers (the two hooks asgigate's `RateLimit` uses), the least any rate limit written as a policy costs;
- ``asgi``: a pure-ASGI send wrapper appending them (as ``minimal_ratelimit`` does), the least any ASGI
  middleware costs.

The headers are ``hello.RATELIMIT_HEADERS``, byte for byte those of ``asgigate_ratelimit_memory:app`` (checked
by tests/test_benchmark_apps.py).
"""

from __future__ import annotations

from asgigate_plain import app as plain
from edge import Edge
from hello import RATELIMIT_HEADERS, Message, Receive, Scope, Send

from asgigate import Exchange, Policy, Proxy, ResponseHead, Route


class ConstantHeaders(Policy):
    """A policy with both of `RateLimit`'s hooks and nothing in them but the constant headers."""

    async def on_request(self, exchange: Exchange) -> None:
        return None  # where RateLimit counts; a bound counts nothing

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        head.message["headers"] = [*head.message.get("headers", ()), *RATELIMIT_HEADERS]


class ConstantHeadersGateway(Edge):
    def __init__(self) -> None:
        super().__init__(request_id=False, access_log=False)

    def policies(self) -> list[Policy]:
        return [ConstantHeaders()]

    def routes(self) -> list[Route]:
        return [Route("/{path:path}", Proxy(self.backend))]


policy = ConstantHeadersGateway()


async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        await plain(scope, receive, send)
        return

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), *RATELIMIT_HEADERS]
        await send(message)

    await plain(scope, receive, send_with_headers)
