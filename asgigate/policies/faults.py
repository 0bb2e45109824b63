"""FaultInjection: abort or delay a share of requests on purpose, to see how clients cope.

Aborted requests get a `FaultInjected` error with the chosen status, rendered like every other gateway error
(reason `fault_injected` in the access log); delayed ones wait before the rest of the chain runs. The settings
can be changed while the gateway serves (`update()`, `enable()`, `disable()`), for example from an admin route
or a test. With `header_control`, a client can ask for a fault itself (`x-fault-abort: 503`,
`x-fault-delay: 250` in milliseconds): meant for test environments only.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import TYPE_CHECKING, Any

from .._frozen import Frozen
from ..errors import BadRequest, ConfigurationError, FaultInjected
from ..pipeline import Policy

if TYPE_CHECKING:
    from starlette.responses import Response

    from ..exchange import Exchange

__all__ = ["FaultInjection"]

MAX_DELAY = 300.0  # seconds; a header-controlled delay cannot hold a request longer than this
_NUMBER = re.compile(r"[0-9]{1,9}")


class FaultInjection(Frozen, Policy):
    """``FaultInjection(abort_percent=5, abort_status=503, delay_percent=20, delay=0.5)`` on a route or group.

    - `abort_percent` of the requests (0-100) get an error reply with `abort_status` (any 4xx/5xx);
    - `delay_percent` of the requests wait `delay` seconds first (a request may be delayed and then aborted);
    - `enabled` switches it all off or on; `seed` makes the random choices repeatable.
    """

    def __init__(
        self,
        *,
        abort_percent: float = 0.0,
        abort_status: int = 503,
        delay_percent: float = 0.0,
        delay: float = 0.0,
        enabled: bool = True,
        header_control: bool = False,
        seed: int | None = None,
    ) -> None:
        # What `update`, `enable` and `disable` change at run time: the one mutable part, shared by every route
        self._now = _Faults(enabled)
        self.header_control = header_control
        self._random = random.Random(seed)
        self.update(abort_percent=abort_percent, abort_status=abort_status, delay_percent=delay_percent, delay=delay)

    def update(self, **settings: Any) -> None:
        """Change settings at run time: ``fault.update(abort_percent=50)``. Checked like the constructor's."""
        values = {
            "abort_percent": self.abort_percent, "abort_status": self.abort_status,
            "delay_percent": self.delay_percent, "delay": self.delay, **settings,
        }
        unknown = set(values) - {"abort_percent", "abort_status", "delay_percent", "delay"}
        if unknown:
            raise ConfigurationError(f"FaultInjection has no setting {', '.join(sorted(unknown))}.")
        for name in ("abort_percent", "delay_percent"):
            value = values[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
                raise ConfigurationError(f"FaultInjection {name}={value!r} is not a percentage (0-100).")
        status = values["abort_status"]
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ConfigurationError(f"FaultInjection abort_status={status!r} is not a 4xx or 5xx status.")
        delay = values["delay"]
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not 0 <= delay <= MAX_DELAY:
            raise ConfigurationError(f"FaultInjection delay={delay!r} is not 0-{MAX_DELAY:g} seconds.")
        # Assigned together, after every check: a request never sees half an update.
        now = self._now
        now.abort_percent, now.abort_status = float(values["abort_percent"]), status
        now.delay_percent, now.delay = float(values["delay_percent"]), float(delay)

    def enable(self) -> None:
        self._now.enabled = True

    def disable(self) -> None:
        self._now.enabled = False

    @property
    def enabled(self) -> bool:
        return self._now.enabled

    @property
    def abort_percent(self) -> float:
        return self._now.abort_percent

    @property
    def abort_status(self) -> int:
        return self._now.abort_status

    @property
    def delay_percent(self) -> float:
        return self._now.delay_percent

    @property
    def delay(self) -> float:
        return self._now.delay

    async def on_request(self, exchange: Exchange) -> Response | None:
        now = self._now
        if not now.enabled:
            return None
        delay = now.delay if self._chosen(now.delay_percent) else 0.0
        abort = now.abort_status if self._chosen(now.abort_percent) else None
        if self.header_control:
            delay, abort = self._from_headers(exchange, delay, abort)
        if delay:
            await asyncio.sleep(delay)
        if abort is not None:
            raise FaultInjected(f"Fault injection aborted this request with {abort}.", status=abort)
        return None

    def _chosen(self, percent: float) -> bool:
        return percent >= 100 or (percent > 0 and self._random.random() * 100 < percent)

    @staticmethod
    def _from_headers(exchange: Exchange, delay: float, abort: int | None) -> tuple[float, int | None]:
        asked_abort = exchange.headers.get("x-fault-abort")
        asked_delay = exchange.headers.get("x-fault-delay")
        # ASCII digits, a few of them: str.isdigit() also takes "²", and int() refuses thousands of digits
        if asked_abort is not None:
            if not _NUMBER.fullmatch(asked_abort) or not 400 <= int(asked_abort) <= 599:
                raise BadRequest("x-fault-abort must be a 4xx or 5xx status.")
            abort = int(asked_abort)
        if asked_delay is not None:
            if not _NUMBER.fullmatch(asked_delay) or int(asked_delay) > MAX_DELAY * 1000:
                raise BadRequest(f"x-fault-delay must be 0-{int(MAX_DELAY * 1000)} milliseconds.")
            delay = int(asked_delay) / 1000
        return delay, abort

    def __repr__(self) -> str:
        parts = []
        if self.abort_percent:
            parts.append(f"abort {self.abort_percent:g}% with {self.abort_status}")
        if self.delay_percent:
            parts.append(f"delay {self.delay_percent:g}% by {self.delay:g}s")
        if self.header_control:
            parts.append("header_control")
        if not self.enabled:
            parts.append("disabled")
        return f"FaultInjection({', '.join(parts)})"


class _Faults:
    """The settings a FaultInjection changes at run time (`update`, `enable`, `disable`)."""

    __slots__ = ("abort_percent", "abort_status", "delay", "delay_percent", "enabled")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.abort_percent = 0.0
        self.abort_status = 503
        self.delay_percent = 0.0
        self.delay = 0.0
