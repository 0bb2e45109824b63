"""Terminate: answer matching requests with a chosen error instead of serving them.

Maintenance mode (503 with Retry-After), retired API versions (410), blocked clients or networks (403): put the
policy on the gateway, a group or a route, optionally narrowed to requests with some header, query parameter,
client network or inside a time window. The reply is a `RequestTerminated` error, so it goes through the error
renderer like every other gateway error and follows the `errors=` settings of the route.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from .._frozen import Frozen, Switch
from ..errors import ConfigurationError, RequestTerminated
from ..pipeline import Policy
from ._match import Clock, RequestMatch, Window

if TYPE_CHECKING:
    from starlette.responses import Response

    from ..exchange import Exchange
    from ..routing import Matcher

__all__ = ["Terminate"]


class Terminate(Frozen, Policy):
    """``Terminate(503, "Down for maintenance.", retry_after=600)``; ``Terminate(410, headers={"x-api-version": "1"})``.

    The reply: `status` (any 4xx/5xx), `detail` and `title` for its body, `retry_after` seconds, extra
    `reply_headers`, and the `reason` recorded in the access log and metrics (`exchange.reason`).
    Which requests (all of them when nothing is given; every condition given must hold): `methods`, `headers`
    and `query` (exact string, compiled regex, or True for "present", like route predicates), `clients`
    (addresses or networks; the client address honours the gateway's trusted proxies), `except_clients`
    (never terminated: your office, your monitoring), and `window` (two timezone-aware datetimes, or two
    times of day for a daily window; with 503 or 429 and no `retry_after`, Retry-After counts down to its end).
    `enabled` can be switched at run time (`enable()` / `disable()`), like a maintenance switch.
    """

    def __init__(
        self,
        status: int = 503,
        detail: str | None = None,
        *,
        title: str | None = None,
        retry_after: int | None = None,
        reason: str = "request_terminated",
        reply_headers: Mapping[str, str] | None = None,
        methods: Iterable[str] | None = None,
        headers: Mapping[str, Matcher] | None = None,
        query: Mapping[str, Matcher] | None = None,
        clients: Iterable[str] = (),
        except_clients: Iterable[str] = (),
        window: Window | None = None,
        enabled: bool = True,
        clock: Clock | None = None,
    ) -> None:
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigurationError(f"Terminate status {status!r} is not a 4xx or 5xx status.")
        if retry_after is not None and (isinstance(retry_after, bool) or retry_after < 0):
            raise ConfigurationError(f"Terminate retry_after={retry_after!r} is not a number of seconds.")
        if not reason or not reason.replace("_", "").isalnum():
            raise ConfigurationError(f"Terminate reason {reason!r} must be a word like 'maintenance'.")
        self.status = status
        self.detail = detail
        self.title = title
        self.retry_after = retry_after
        self.reason = reason
        self.reply_headers = {k.lower(): v for k, v in (reply_headers or {}).items()}
        self._switch = Switch(enabled)  # run-time state: `enable()` / `disable()` hold for every route using it
        self._match = RequestMatch(
            methods=methods, headers=headers, query=query, clients=clients, except_clients=except_clients,
            window=window, clock=clock,
        )

    def enable(self) -> None:
        self._switch.on = True

    def disable(self) -> None:
        self._switch.on = False

    @property
    def enabled(self) -> bool:
        return self._switch.on

    async def on_request(self, exchange: Exchange) -> Response | None:
        if not self._switch.on or not self._match.matches(exchange):
            return None
        headers = dict(self.reply_headers)
        retry_after = self.retry_after
        if retry_after is None and self.status in (429, 503):
            left = self._match.seconds_left()
            if left is not None:
                retry_after = max(1, math.ceil(left))
        if retry_after is not None:
            headers["retry-after"] = str(retry_after)
        raise RequestTerminated(self.detail, status=self.status, title=self.title, reason=self.reason,
                                headers=headers)

    def __repr__(self) -> str:
        parts = [str(self.status)]
        if self.reason != "request_terminated":
            parts.append(f"reason={self.reason!r}")
        condition = self._match.describe()
        if condition:
            parts.append(condition)
        if not self.enabled:
            parts.append("disabled")
        return f"Terminate({', '.join(parts)})"
