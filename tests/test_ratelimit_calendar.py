"""Calendar windows: quotas that turn over on the UTC calendar (midnight, the 1st), in memory, Redis and Memcached."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from asgigate import ConfigurationError, Direct, Gateway, RateLimit, Route
from asgigate.policies.ratelimit import Limit, Plan, RateLimitStore, by_header
from asgigate.policies.ratelimit.limits import calendar_period
from asgigate.testing import BackgroundServer

from redisserver import RedisServer
from servers import ManualClock, run_closing
from storeservers import MemcachedServer


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("now", "rate", "start", "end"),
    [
        ("2026-11-22T12:34:56.5", "1/second", "2026-11-22T12:34:56", "2026-11-22T12:34:57"),
        ("2026-11-22T12:34:56", "1/15 minutes", "2026-11-22T12:30:00", "2026-11-22T12:45:00"),
        ("2026-11-22T12:34:56", "1/hour", "2026-11-22T12:00:00", "2026-11-22T13:00:00"),
        ("2026-11-22T12:34:56", "1/day", "2026-11-22T00:00:00", "2026-11-23T00:00:00"),
        ("2026-11-22T00:00:00", "1/day", "2026-11-22T00:00:00", "2026-11-23T00:00:00"),  # midnight opens the day
        ("2026-12-31T23:59:59", "1/month", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("2028-02-29T10:00:00", "1/month", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),  # leap February
        ("2026-11-22T12:34:56", "1/3 months", "2026-10-01T00:00:00", "2027-01-01T00:00:00"),  # quarters
        ("2027-01-01T00:00:00", "1/3 months", "2027-01-01T00:00:00", "2027-04-01T00:00:00"),
        ("2026-11-22T12:34:56", "1/year", "2026-01-01T00:00:00", "2027-01-01T00:00:00"),
    ],
)
def test_calendar_periods(now: str, rate: str, start: str, end: str) -> None:
    limit = Limit(rate, calendar=True)
    item = limit._item
    assert calendar_period(utc(now), item.GRANULARITY.name, item.multiples) == (utc(start), utc(end))
    key, window_end = limit._calendar_key("k", utc(now))
    assert window_end == utc(end)
    assert key.endswith(f"/{int(utc(start))}")  # the counter of each period is its own key


def test_calendar_needs_fixed_windows_and_plan_quotas() -> None:
    with pytest.raises(ConfigurationError, match="fixed windows"):
        Limit("10/day", strategy="moving-window", calendar=True)
    with pytest.raises(ConfigurationError, match="fixed windows"):
        Plan(quota="10/day", strategy="sliding-window", calendar=True)
    with pytest.raises(ConfigurationError, match="no quota"):
        Plan(rate="10/second", calendar=True)
    plan = Plan(rate="10/second", quota=["100/day", "1000/month"], calendar=True)
    assert [(limit.name, limit.quota, limit.calendar) for limit in plan.limits] == [
        ("10-per-second", False, False), ("100-per-day", True, True), ("1000-per-month", True, True)]
    assert Limit("5/day", calendar=True) != Limit("5/day")
    assert repr(Limit("5/day", quota=True, calendar=True)) == "Limit('5/day', quota=True, calendar=True)"


def test_calendar_window_turns_over_on_the_clock_not_at_the_first_request() -> None:
    """Two requests at .6 s of a second: the calendar window is new at the next whole second, the other is not."""
    clock = ManualClock(start=math.floor(time.time()) + 0.6)
    store = RateLimitStore(clock=clock)
    calendar = RateLimit(Limit("2/second", calendar=True), key=by_header("x-k"), store=store, name="cal")
    rolling = RateLimit(Limit("2/second"), key=by_header("x-k"), store=store, name="roll")

    class Api(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/calendar", Direct(text="c"), policies=[calendar]),
                    Route("/rolling", Direct(text="r"), policies=[rolling])]

    with BackgroundServer(Api(request_id=False, access_log=False)) as server, \
            httpx.Client(base_url=server.url) as client:
        key = {"x-k": "k"}
        first = [client.get(path, headers=key).status_code for path in ("/calendar", "/rolling") for _ in (1, 2)]
        refused = [client.get(path, headers=key) for path in ("/calendar", "/rolling")]
        clock.advance(0.5)  # .1 s of the next second, while the rolling window (until .6 s) still runs
        after = [client.get(path, headers=key).status_code for path in ("/calendar", "/rolling")]
    assert first == [200, 200, 200, 200]
    assert [r.status_code for r in refused] == [429, 429]
    assert refused[0].headers["retry-after"] == "1"
    assert after == [200, 429]


async def used_up_then_reset(limit: RateLimit, end: float) -> None:
    """Key "a" has used up its one calendar limit, which ends at `end`; a reset gives it all back."""
    (usage,) = await limit.usage("a")
    assert (usage.remaining, usage.reset) == (0, end)
    await limit.reset("a")
    (usage,) = await limit.usage("a")
    assert usage.remaining == usage.limit.amount


def test_daily_quota_in_memory_reports_midnight() -> None:
    clock = ManualClock(start=time.time() // 86400 * 86400 + 43200)  # noon UTC: the day does not turn over
    limit = RateLimit(Plan(quota="3/day", calendar=True).limits, key=by_header("x-k"), name="day",
                      store=RateLimitStore(clock=clock))

    class Api(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/x", Direct(text="x"), policies=[limit])]

    with BackgroundServer(Api(request_id=False, access_log=False)) as server, \
            httpx.Client(base_url=server.url) as client:
        codes = [client.get("/x", headers={"x-k": "a"}).status_code for _ in range(3)]
        before = clock()
        refused = client.get("/x", headers={"x-k": "a"})
        other = client.get("/x", headers={"x-k": "b"})
    midnight = calendar_period(before, "day", 1)[1]
    assert codes == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "quota_exceeded"
    to_midnight = midnight - before
    assert math.ceil(to_midnight) - 1 <= int(refused.headers["retry-after"]) <= math.ceil(to_midnight)
    assert refused.headers["ratelimit-policy"] == '"3-per-day";q=3;w=86400'
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert other.status_code == 200 and other.headers["x-ratelimit-remaining"] == "2"

    asyncio.run(used_up_then_reset(limit, midnight))


@pytest.fixture(scope="module")
def memcached() -> Iterator[MemcachedServer]:
    with MemcachedServer() as server:
        yield server


def shared_store_round(uri: str) -> tuple[list[int], list[Any], float, RateLimit]:
    """Two gateways count one key in one store until the month's quota refuses it.

    A remote store's windows run on its server's clock (no clock to inject): a round that a new month starts in
    the middle of is run again, on new counters."""
    for _ in range(2):
        start = time.time()
        found = _shared_store_round(uri)
        if calendar_period(start, "month", 1) == calendar_period(time.time(), "month", 1):
            break
    return found


def _shared_store_round(uri: str) -> tuple[list[int], list[Any], float, RateLimit]:
    name = f"q{time.time_ns()}"
    limits = [RateLimit(Limit("3/month", quota=True, calendar=True), key=by_header("x-k"), store=RateLimitStore(uri),
                        name=name) for _ in range(2)]  # two gateways with their own clients, one store

    def api(limit: RateLimit) -> Gateway:
        class Api(Gateway):
            def routes(self) -> list[Route]:
                return [Route("/x", Direct(text="x"), policies=[limit])]

        return Api(request_id=False, access_log=False)

    with BackgroundServer(api(limits[0])) as one, BackgroundServer(api(limits[1])) as two:
        codes = [httpx.get(f"{server.url}/x", headers={"x-k": "a"}).status_code for server in (one, two, one, two)]
        now = time.time()
        refused = httpx.get(f"{two.url}/x", headers={"x-k": "a"})
    return codes, [refused.status_code, refused.json()["code"], refused.headers["x-ratelimit-reset"]], now, limits[0]


def check_month(codes: list[int], refused: list[Any], now: float) -> float:
    end = calendar_period(now, "month", 1)[1]
    assert codes == [200, 200, 200, 429]
    assert refused[:2] == [429, "quota_exceeded"]
    assert abs(int(refused[2]) - (end - now)) <= 2  # seconds to the 1st of next month, UTC
    return end


def test_monthly_quota_in_redis_is_one_key_per_month(redis: RedisServer) -> None:
    codes, refused, now, limit = shared_store_round(redis.uri)
    end = check_month(codes, refused, now)
    start = calendar_period(now, "month", 1)[0]

    async def inspect() -> None:
        wire = limit.store.wire
        assert wire is not None
        keys = [key.decode() for key in await wire.command(b"KEYS", f"*{limit.name}*".encode())]
        assert len(keys) == 1 and keys[0].endswith(f"/a/3/1/month/{int(start)}"), keys
        assert int(await wire.command(b"GET", keys[0].encode())) == 5  # refusals count too, as INCR does
        ttl = int(await wire.command(b"TTL", keys[0].encode()))
        assert end - now - 5 <= ttl <= end - now + 2  # the counter goes when the month does
        await used_up_then_reset(limit, end)
        assert await wire.command(b"EXISTS", keys[0].encode()) == 0

    run_closing(inspect(), limit.store)


def test_monthly_quota_in_memcached(memcached: MemcachedServer) -> None:
    codes, refused, now, limit = shared_store_round(memcached.uri)
    run_closing(used_up_then_reset(limit, check_month(codes, refused, now)), limit.store)
