"""Which requests a policy acts on: methods, headers, query parameters, client networks, a time window."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, time, timedelta
from typing import TYPE_CHECKING

from ..errors import ConfigurationError
from ..routing import Matcher, _compile_matchers, _matches

if TYPE_CHECKING:
    from ..exchange import Exchange

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Window = tuple[datetime, datetime] | tuple[time, time]
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _networks(kind: str, items: Iterable[str]) -> tuple[Network, ...]:
    if isinstance(items, str):
        items = [items]
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError as exc:
        raise ConfigurationError(f"{kind}: {exc}") from None


class RequestMatch:
    """All the given conditions must hold; none given matches every request."""

    __slots__ = ("_clients", "_except", "_headers", "_query", "clock", "methods", "window")

    def __init__(
        self,
        *,
        methods: Iterable[str] | None = None,
        headers: Mapping[str, Matcher] | None = None,
        query: Mapping[str, Matcher] | None = None,
        clients: Iterable[str] = (),
        except_clients: Iterable[str] = (),
        window: Window | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.methods = frozenset(m.upper() for m in methods) if methods is not None else None
        self._headers = _compile_matchers("header", headers)
        self._query = _compile_matchers("query", query)
        self._clients = _networks("clients", clients)
        self._except = _networks("except_clients", except_clients)
        if window is not None:
            start, end = window
            if isinstance(start, datetime) and isinstance(end, datetime):
                if start.tzinfo is None or end.tzinfo is None:
                    raise ConfigurationError("window datetimes need a timezone (tzinfo), e.g. datetime.UTC.")
                if end <= start:
                    raise ConfigurationError(f"window ends ({end}) before it starts ({start}).")
            elif not (isinstance(start, time) and isinstance(end, time)) or isinstance(start, datetime):
                raise ConfigurationError("window is (start, end): two aware datetimes, or two times of day.")
        self.window = window
        self.clock = clock or _utc_now

    def matches(self, exchange: Exchange) -> bool:
        if self.methods is not None and exchange.method not in self.methods:
            return False
        for name, expected in self._headers:
            if not _matches(exchange.headers.get(name), expected):
                return False
        for name, expected in self._query:
            if not _matches(exchange.query_params.get(name), expected):
                return False
        if self._clients or self._except:
            ip = _address(exchange.client_ip)
            if self._clients and (ip is None or not any(ip in net for net in self._clients)):
                return False
            if self._except and ip is not None and any(ip in net for net in self._except):
                return False
        return self.window is None or self.seconds_left() is not None

    def seconds_left(self) -> float | None:
        """Seconds until the window closes if it is open now, else None (also None without a window)."""
        if self.window is None:
            return None
        now = self.clock()
        start, end = self.window
        if isinstance(start, datetime) and isinstance(end, datetime):
            return (end - now).total_seconds() if start <= now < end else None
        assert isinstance(start, time) and isinstance(end, time)
        local = now.astimezone(start.tzinfo or UTC)
        today = local.date()
        for day in (today - timedelta(days=1), today):  # a window across midnight opened yesterday
            opened = datetime.combine(day, start.replace(tzinfo=None), local.tzinfo)
            closed = datetime.combine(day, end.replace(tzinfo=None), local.tzinfo)
            if closed <= opened:
                closed += timedelta(days=1)
            if opened <= local < closed:
                return (closed - local).total_seconds()
        return None

    def describe(self) -> str:
        parts = []
        if self.methods is not None:
            parts.append("methods=" + ",".join(sorted(self.methods)))
        parts += [f"header {n}" for n, _ in self._headers] + [f"query {n}" for n, _ in self._query]
        if self._clients:
            parts.append("clients=" + ",".join(map(str, self._clients)))
        if self._except:
            parts.append("except_clients=" + ",".join(map(str, self._except)))
        if self.window is not None:
            parts.append(f"window={self.window[0].isoformat()}..{self.window[1].isoformat()}")
        return " ".join(parts)


def _address(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None
