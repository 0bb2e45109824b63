"""Limits and plans: what a RateLimit counts against, parsed and checked when it is declared."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ...errors import ConfigurationError
from .store import require_limits

if TYPE_CHECKING:
    from limits import RateLimitItem
    from limits.aio.storage import Storage
    from limits.aio.strategies import RateLimiter

__all__ = ["Limit", "LimitsLike", "Plan", "Strategy"]

Strategy = Literal["fixed-window", "moving-window", "sliding-window"]
STRATEGIES = ("fixed-window", "moving-window", "sliding-window")


_CLOCK_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


def calendar_period(now: float, unit: str, multiples: int) -> tuple[float, float]:
    """The UTC calendar period holding `now`: (start, end) as Unix times.

    Seconds, minutes, hours and days are whole units of the clock (a day starts at midnight UTC; ``2 days``
    are counted from 1970-01-01); months start on the 1st (``3 months`` are quarters from January), years on
    January 1st.
    """
    size = _CLOCK_UNITS.get(unit)
    if size is not None:
        size *= multiples
        start = now // size * size
        return start, start + size
    at = datetime.fromtimestamp(now, UTC)
    months = 12 * multiples if unit == "year" else multiples
    index = (at.year * 12 + at.month - 1) // months * months  # months since year 0 at the period's start

    def month_start(i: int) -> float:
        return datetime(i // 12, i % 12 + 1, 1, tzinfo=UTC).timestamp()

    return month_start(index), month_start(index + months)


class Limit:
    """One limit: ``Limit("100/minute", strategy="moving-window")``; ``Limit("10000/month", quota=True)``.

    `rate` is a `limits` string with one rate (``"10/second"``, ``"1000 per day"``, ``"5/15 minutes"``).
    A `quota` limit refuses with `QuotaExceeded` instead of `RateLimited`. A `dry_run` limit counts and reports
    in the headers but never refuses. `name` is the limit's name in the ``RateLimit*`` headers.

    By default a fixed window starts at a key's first request and lasts the rate's period (a month is 30 days,
    as in `limits`). With ``calendar=True`` the windows follow the UTC calendar instead, the same for every
    key: a day from midnight, a month from the 1st, an hour from the full hour (see `calendar_period`).
    """

    __slots__ = ("_item", "_key_head", "_key_tail", "_limit_pair", "_name_field", "_period", "amount", "calendar",
                 "dry_run", "name", "quota", "rate", "strategy", "window")
    rate: str
    strategy: Strategy
    quota: bool
    dry_run: bool
    calendar: bool
    name: str
    _item: RateLimitItem
    _key_head: str
    _key_tail: str
    _name_field: bytes  # the RateLimit header up to the remaining count: b'"name";r='
    _limit_pair: tuple[bytes, bytes]  # the X-RateLimit-Limit header
    _period: list[Any]  # calendar windows: [start, end, key tail] of the latest period seen
    amount: int
    window: int

    def __init__(
        self,
        rate: str,
        *,
        strategy: Strategy = "fixed-window",
        quota: bool = False,
        dry_run: bool = False,
        calendar: bool = False,
        name: str | None = None,
    ) -> None:
        items = _parse(rate)
        if len(items) != 1:
            raise ConfigurationError(f"Limit({rate!r}) holds {len(items)} rates; give RateLimit a list instead.")
        if strategy not in STRATEGIES:
            raise ConfigurationError(f"rate limit strategy {strategy!r}: use one of {', '.join(STRATEGIES)}.")
        if calendar and strategy != "fixed-window":
            raise ConfigurationError(f"Limit({rate!r}, calendar=True) counts in fixed windows; it cannot be "
                                     f"strategy={strategy!r}.")
        if name is not None and not (name and all(" " <= c <= "~" and c not in '"\\' for c in name)):
            raise ConfigurationError(f"Limit name {name!r} must be printable ASCII without quotes or backslashes "
                                     "(it is sent as a quoted string in the RateLimit headers).")
        item = items[0]
        object.__setattr__(self, "_item", item)
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "strategy", strategy)
        object.__setattr__(self, "quota", quota)
        object.__setattr__(self, "dry_run", dry_run)
        object.__setattr__(self, "calendar", bool(calendar))
        object.__setattr__(self, "_period", [0.0, 0.0, ""])
        per = item.GRANULARITY.name if item.multiples == 1 else f"{item.multiples}{item.GRANULARITY.name}s"
        object.__setattr__(self, "name", name or f"{item.amount}-per-{per}")
        object.__setattr__(self, "amount", int(item.amount))
        object.__setattr__(self, "window", int(item.get_expiry()))  # seconds
        # the counter keys limits' RateLimitItem.key_for() makes, in two halves around the identifiers
        object.__setattr__(self, "_key_head", f"{item.namespace}/")
        object.__setattr__(self, "_key_tail", f"/{item.amount}/{item.multiples}/{item.GRANULARITY.name}")
        object.__setattr__(self, "_name_field", b'"' + self.name.encode("latin-1", "replace") + b'";r=')
        object.__setattr__(self, "_limit_pair", (b"x-ratelimit-limit", b"%d" % self.amount))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Limit is immutable; create a new one")

    def _calendar_key(self, ids: str, now: float) -> tuple[str, float]:
        """A calendar limit's counter key for `ids` at `now` (the period's start in it) and the period's end."""
        period = self._period
        if not period[0] <= now < period[1]:
            item = self._item
            start, end = calendar_period(now, item.GRANULARITY.name, item.multiples)
            period[:] = [start, end, f"{self._key_tail}/{int(start)}"]
        return self._key_head + ids + period[2], period[1]

    def _fields(self) -> tuple[Any, ...]:
        return (self.amount, self.window, self.strategy, self.quota, self.dry_run, self.calendar, self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Limit) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        extra = "" if self.strategy == "fixed-window" else f", strategy={self.strategy!r}"
        extra += ", quota=True" if self.quota else ""
        extra += ", dry_run=True" if self.dry_run else ""
        extra += ", calendar=True" if self.calendar else ""
        return f"Limit({self.rate!r}{extra})"


LimitsLike: TypeAlias = str | Limit | Sequence[str | Limit]


def limiter(strategy: str, storage: Storage) -> RateLimiter:
    from limits.aio import strategies

    if strategy == "moving-window":
        return strategies.MovingWindowRateLimiter(storage)
    if strategy == "sliding-window":
        return strategies.SlidingWindowCounterRateLimiter(storage)
    return strategies.FixedWindowRateLimiter(storage)


def _parse(rate: str) -> list[RateLimitItem]:
    require_limits()
    from limits import parse_many

    try:
        return list(parse_many(rate))
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"invalid rate limit {rate!r}: {exc}; write it like '10/second' or '1000/day'."
        ) from None


def as_limits(
    value: LimitsLike, strategy: Strategy, quota: bool = False, calendar: bool = False
) -> tuple[Limit, ...]:
    items: Iterable[str | Limit] = [value] if isinstance(value, (str, Limit)) else value
    limits: list[Limit] = []
    for item in items:
        if isinstance(item, Limit):
            limits.append(item)
        elif isinstance(item, str):
            for one in _parse(item):
                per = one.GRANULARITY.name if one.multiples == 1 else f"{one.multiples} {one.GRANULARITY.name}s"
                text = f"{one.amount}/{per}"
                limits.append(Limit(text, strategy=strategy, quota=quota, calendar=calendar))
        else:
            raise ConfigurationError(f"{item!r} is neither a rate limit string nor a Limit.")
    if not limits:
        raise ConfigurationError("a rate limit needs at least one limit, like '10/second'.")
    names = [limit.name for limit in limits]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"two limits with the same name in {names}; give them distinct name=.")
    return tuple(sorted(limits, key=lambda limit: limit.window))  # shortest window first


class Plan:
    """A consumer tier: ``Plan(rate="10/second", quota="10000/month")``; both optional, each one or more limits.

    Plans are given to `RateLimit(plans={...}, plan=...)`. Quota limits refuse with `QuotaExceeded`. With
    ``calendar=True`` the quotas given as strings count in UTC calendar periods (a month from the 1st), like
    usage plans that bill by the month; by default each key's window starts at its first request.
    """

    __slots__ = ("limits", "quota", "rate")
    rate: LimitsLike | None
    quota: LimitsLike | None
    limits: tuple[Limit, ...]

    def __init__(
        self, rate: LimitsLike | None = None, *, quota: LimitsLike | None = None,
        strategy: Strategy = "fixed-window", calendar: bool = False,
    ) -> None:
        if calendar and strategy != "fixed-window":
            raise ConfigurationError(f"Plan(calendar=True) counts quotas in fixed windows; it cannot be "
                                     f"strategy={strategy!r}.")
        if calendar and quota is None:
            raise ConfigurationError("Plan(calendar=True) applies to quotas; this plan has no quota.")
        limits: tuple[Limit, ...] = ()
        if rate is not None:
            limits += as_limits(rate, strategy)
        if quota is not None:
            limits += as_limits(quota, strategy, quota=True, calendar=calendar)
        if not limits:
            raise ConfigurationError("a Plan needs a rate, a quota or both.")
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "quota", quota)
        object.__setattr__(self, "limits", as_limits(list(limits), strategy))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Plan is immutable; create a new one")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Plan) and self.limits == other.limits

    def __hash__(self) -> int:
        return hash(self.limits)

    def __repr__(self) -> str:
        parts = [f"rate={self.rate!r}"] if self.rate is not None else []
        if self.quota is not None:
            parts.append(f"quota={self.quota!r}")
        return f"Plan({', '.join(parts)})"


def window_text(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} seconds"
