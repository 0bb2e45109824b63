"""The least a Python rate limit can do, around the plain asgigate proxy: a floor for asgigate's RateLimit.

A hand-written pure-ASGI middleware with nothing optional: one fixed window per client address in a dict, no
store, no key functions, no plans, no dry run, no check for an upstream's own rate limit headers. Each reply
carries the same five headers as ``asgigate_ratelimit_memory:app``, computed per request (remaining count and
seconds to the window's end). What it costs over ``asgigate_plain:app`` is about the least any Python rate
limit sending those headers costs under this server. The same logic as an asgigate policy (hooks instead of a
send wrapper) cost about the same, counted in-process: 17,500 instructions against 17,100. A real rate limit
does more than this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from asgigate_plain import app as plain

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REFUSED = b'{"type":"about:blank","title":"Too Many Requests","status":429}'


class MinimalRateLimit:
    def __init__(self, app: ASGIApp, amount: int = 1_000_000_000, window: int = 3600) -> None:
        # by default the same limit as the asgigate apps (benchmarks/apps/edge.py), named as asgigate names it
        self.app, self.amount, self.window = app, amount, float(window)
        self.name = b'"%d-per-%s"' % (amount, b"hour" if window == 3600 else b"%d-seconds" % window)
        self.policy = (b"ratelimit-policy", self.name + b";q=%d;w=%d" % (amount, window))
        self.limit = (b"x-ratelimit-limit", b"%d" % amount)
        self.windows: dict[str, list[float]] = {}  # client address -> [count, window end]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        now = time.time()
        client = scope["client"][0]
        window = self.windows.get(client)
        if window is None or window[1] <= now:
            window = self.windows[client] = [0, now + self.window]
        window[0] += 1
        left = self.amount - window[0]
        reset = b"%d" % math.ceil(window[1] - now)
        remaining = b"%d" % max(left, 0)
        headers = [self.policy, (b"ratelimit", self.name + b";r=" + remaining + b";t=" + reset), self.limit,
                   (b"x-ratelimit-remaining", remaining), (b"x-ratelimit-reset", reset)]
        if left < 0:
            headers += [(b"retry-after", reset), (b"content-type", b"application/problem+json"),
                        (b"content-length", b"%d" % len(REFUSED))]
            await send({"type": "http.response.start", "status": 429, "headers": headers})
            await send({"type": "http.response.body", "body": REFUSED})
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *headers]
            await send(message)

        await self.app(scope, receive, send_with_headers)


app = MinimalRateLimit(plain)
