"""RateLimit and ConcurrencyLimit with the in-memory store, through a real server (and the hooks for keys)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from starlette.responses import Response

from asgigate import (
    ConcurrencyLimit,
    ConfigurationError,
    Direct,
    Exchange,
    Gateway,
    Group,
    Policy,
    Proxy,
    RateLimit,
    Reply,
    Route,
    Unauthorized,
    Upstream,
)
from asgigate.policies.ratelimit import (
    Key,
    Limit,
    Plan,
    RateLimitStore,
    by_client_ip,
    by_client_network,
    by_header,
    by_route,
    by_subject,
)
from asgigate.testing import BackgroundServer

from servers import ManualClock, wait_until, wait_until_async


class Consumer(Policy):
    """Stands in for authentication: x-user names the subject, x-plan the plan."""

    async def on_request(self, exchange: Exchange) -> Response | None:
        user = exchange.headers.get("x-user")
        exchange.identity = {"sub": user, "plan": exchange.headers.get("x-plan")} if user else None
        return None


def plan_of(exchange: Exchange) -> str | None:
    return exchange.identity["plan"] if exchange.identity else None


PER_CLIENT = RateLimit("3/minute", key=by_client_ip)
SHARED = RateLimit("4/minute", key=by_route)
SEPARATE = RateLimit("2/minute", key=by_route, per_route=True)
CLOCK = ManualClock()  # TWO's windows: the test moves it past a second instead of sleeping
TWO = RateLimit([Limit("2/second", strategy="moving-window", name="burst"), Limit("4/hour", name="hourly")],
                key=by_header("x-api-key"), missing_key=Unauthorized, store=RateLimitStore(clock=CLOCK))
DRY = RateLimit("1/minute", key=by_header("x-api-key"), dry_run=True)
PLANS = RateLimit(plans={"free": Plan(rate="5/second", quota="2/day"), "pro": Plan(rate="5/second", quota="4/day")},
                  plan=plan_of, default_plan="free", key=by_subject, missing_key="allow")
SLIDING = RateLimit("3/minute", strategy="sliding-window", key=by_header("x-api-key"))
CONCURRENT = ConcurrencyLimit(2)


class Shop(Gateway):
    def __init__(self, upstream_url: str) -> None:
        super().__init__(trusted_proxies=["127.0.0.1/32"],
                         errors=Reply(json={"error": "{code}", "retry_after": "{retry_after}"}))
        self.backend = Upstream(upstream_url)

    def policies(self) -> list[Policy]:
        return [Consumer()]

    def routes(self) -> list[Route | Group]:
        return [
            Route("/client", Direct(json={"ok": True}), policies=[PER_CLIENT]),
            Group("/shared", [Route("/a", Direct(text="a")), Route("/b", Direct(text="b"))], policies=[SHARED]),
            Group("/separate", [Route("/a", Direct(text="a")), Route("/b", Direct(text="b"))], policies=[SEPARATE]),
            Route("/two", Direct(text="two"), policies=[TWO]),
            Route("/dry", Direct(text="dry"), policies=[DRY]),
            Route("/plans", Direct(text="plan"), policies=[PLANS]),
            Route("/sliding", Direct(text="s"), policies=[SLIDING]),
            Route("/slow", Proxy(self.backend), policies=[CONCURRENT]),
            Route("/upstream/{rest:path}", Proxy(self.backend, strip_prefix="/upstream"), policies=[CONCURRENT]),
        ]


@pytest.fixture(scope="module")
def shop(upstream: BackgroundServer) -> Iterator[httpx.Client]:
    with BackgroundServer(Shop(upstream.url)) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def statuses(client: httpx.Client, path: str, n: int, **kw: Any) -> list[int]:
    return [client.get(path, **kw).status_code for _ in range(n)]


def test_per_client_address_honours_trusted_proxies(shop: httpx.Client) -> None:
    first = {"x-forwarded-for": "203.0.113.1"}
    assert statuses(shop, "/client", 4, headers=first) == [200, 200, 200, 429]
    # another client (as told by the trusted proxy) has its own counter
    assert shop.get("/client", headers={"x-forwarded-for": "203.0.113.2"}).status_code == 200
    # IPv6 clients are counted per /64
    assert statuses(shop, "/client", 3, headers={"x-forwarded-for": "2001:db8:1:2::1"}) == [200] * 3
    assert shop.get("/client", headers={"x-forwarded-for": "2001:db8:1:2::ffff"}).status_code == 429
    assert shop.get("/client", headers={"x-forwarded-for": "2001:db8:1:3::1"}).status_code == 200


def test_headers_on_success_and_refusal(shop: httpx.Client) -> None:
    client = {"x-forwarded-for": "198.51.100.9"}
    response = shop.get("/client", headers=client)
    assert response.headers["ratelimit-policy"] == '"3-per-minute";q=3;w=60'
    assert response.headers["ratelimit"] == '"3-per-minute";r=2;t=60'
    assert response.headers["x-ratelimit-limit"] == "3"
    assert response.headers["x-ratelimit-remaining"] == "2"
    assert 59 <= int(response.headers["x-ratelimit-reset"]) <= 60
    assert "retry-after" not in response.headers
    shop.get("/client", headers=client)
    shop.get("/client", headers=client)
    refused = shop.get("/client", headers=client)
    assert refused.status_code == 429
    # the error renderer shaped the body; the protocol headers are kept
    assert refused.json()["error"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert str(refused.json()["retry_after"]) == refused.headers["retry-after"]
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert refused.headers["ratelimit"].startswith('"3-per-minute";r=0;')


def test_header_sets_and_header_safe_names() -> None:
    ietf = RateLimit("5/minute", name="ietf-only", headers="ietf")
    legacy = RateLimit("5/minute", name="x-only", headers="x-ratelimit")
    silent = RateLimit("1/minute", name="silent", headers=False)

    class Headed(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/ietf", Direct(text="i"), policies=[ietf]),
                    Route("/x", Direct(text="x"), policies=[legacy]),
                    Route("/silent", Direct(text="s"), policies=[silent])]

    names = {"ratelimit", "ratelimit-policy", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}
    with BackgroundServer(Headed()) as server, httpx.Client(base_url=server.url) as client:
        reply = client.get("/ietf")
        assert names & set(reply.headers) == {"ratelimit", "ratelimit-policy"}
        assert reply.headers["ratelimit"] == '"5-per-minute";r=4;t=60'
        reply = client.get("/x")
        assert names & set(reply.headers) == {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"}
        assert reply.headers["x-ratelimit-remaining"] == "4"
        assert names & set(client.get("/silent").headers) == set()
        refused = client.get("/silent")
        assert refused.status_code == 429 and "retry-after" in refused.headers
        assert names & set(refused.headers) == set()
    assert repr(ietf).endswith("headers='ietf')") and repr(silent).endswith("headers=False)")
    with pytest.raises(ConfigurationError, match="headers="):
        RateLimit("1/second", headers="draft-7")  # type: ignore[arg-type]
    for bad in ('say "hi"', "back\\slash", "caf\u00e9", ""):
        with pytest.raises(ConfigurationError, match="printable ASCII"):
            Limit("1/second", name=bad)


def test_shared_and_separate_counters(shop: httpx.Client) -> None:
    # one policy on a group, key by_route without per_route: each route has its own counter anyway
    # (the key is the route); per_route=True on a key shared by both routes is what separates them:
    assert statuses(shop, "/separate/a", 3) == [200, 200, 429]
    assert statuses(shop, "/separate/b", 3) == [200, 200, 429]
    assert statuses(shop, "/shared/a", 4) == [200] * 4
    assert shop.get("/shared/a").status_code == 429
    assert shop.get("/shared/b").status_code == 200


def test_several_limits_tightest_decides_headers(shop: httpx.Client) -> None:
    key = {"x-api-key": "k-two"}
    first = shop.get("/two", headers=key)
    assert first.headers["ratelimit-policy"] == '"burst";q=2;w=1, "hourly";q=4;w=3600'
    assert first.headers["ratelimit"].startswith('"burst";r=1;')
    second = shop.get("/two", headers=key)
    assert second.headers["ratelimit"].startswith('"burst";r=0;')
    assert shop.get("/two", headers=key).status_code == 429  # the burst limit refuses
    CLOCK.advance(1.05)
    third = shop.get("/two", headers=key)
    assert third.status_code == 200
    assert third.headers["ratelimit"].startswith('"burst";r=1;')  # 1 left of the burst, 1 of the hour
    fourth = shop.get("/two", headers=key)
    assert fourth.status_code == 200
    assert fourth.headers["ratelimit"].startswith('"burst";r=0;') or fourth.headers["ratelimit"].startswith(
        '"hourly";r=0;')
    CLOCK.advance(1.05)
    refused = shop.get("/two", headers=key)
    assert refused.status_code == 429
    assert refused.headers["ratelimit"].startswith('"hourly";r=0;')
    assert int(refused.headers["retry-after"]) > 3000


def test_missing_key_setting(shop: httpx.Client) -> None:
    response = shop.get("/two")
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert statuses(shop, "/plans", 5) == [200] * 5  # missing_key="allow": anonymous requests are not counted


def test_dry_run_counts_and_reports_without_refusing(shop: httpx.Client) -> None:
    key = {"x-api-key": "k-dry"}
    assert statuses(shop, "/dry", 3, headers=key) == [200] * 3
    assert shop.get("/dry", headers=key).headers["x-ratelimit-remaining"] == "0"
    assert DRY.counts["dry_run_rejected"] >= 3


def test_plans_and_quotas(shop: httpx.Client) -> None:
    free = {"x-user": "ada"}
    assert statuses(shop, "/plans", 2, headers=free) == [200, 200]
    refused = shop.get("/plans", headers=free)
    assert refused.status_code == 429
    assert refused.json()["error"] == "quota_exceeded"
    assert refused.headers["ratelimit"].startswith('"2-per-day";r=0;')
    pro = {"x-user": "grace", "x-plan": "pro"}
    assert statuses(shop, "/plans", 5, headers=pro) == [200] * 4 + [429]
    assert shop.get("/plans", headers={"x-user": "linus", "x-plan": "gold"}).status_code == 403  # no such plan


def test_sliding_window_never_exceeds(shop: httpx.Client) -> None:
    assert statuses(shop, "/sliding", 4, headers={"x-api-key": "s"}) == [200, 200, 200, 429]


def test_concurrency_limit_releases_on_every_ending(shop: httpx.Client, upstream: BackgroundServer) -> None:
    async def run() -> list[int]:
        async with httpx.AsyncClient(base_url=str(shop.base_url), timeout=10) as client:
            slow = [asyncio.create_task(client.get("/slow", params={"delay": "1.5"})) for _ in range(2)]
            # both slow ones are in (the count lives in the server's thread: nothing to await but polling)
            await wait_until_async(lambda: CONCURRENT.in_flight() >= 2)
            extra = await client.get("/slow", params={"delay": "0"})
            done = await asyncio.gather(*slow)
            return [extra.status_code] + [r.status_code for r in done]

    extra, *served = asyncio.run(run())
    assert extra == 429
    assert served == [200, 200]
    wait_until(lambda: not CONCURRENT.in_flight(), within=5)  # a slot is freed just after the reply's last byte
    assert CONCURRENT.in_flight() == 0
    # an upstream failure and a client that goes away release their slots too
    assert shop.get("/upstream/status/500").status_code == 500
    with pytest.raises(httpx.ReadTimeout):
        shop.get("/slow", params={"delay": "2"}, timeout=0.2)
    wait_until(lambda: not CONCURRENT.in_flight(), within=5)
    assert CONCURRENT.in_flight() == 0
    assert statuses(shop, "/slow", 2, params={"delay": "0"}) == [200, 200]


def test_reset_and_usage_from_code(shop: httpx.Client) -> None:
    limit = RateLimit("2/minute", key=by_header("x-k"))

    class Admin(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/x", Direct(text="x"), policies=[limit])]

    async def run() -> None:
        transport = httpx.ASGITransport(app=Admin())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert [(await client.get("/x", headers={"x-k": "a"})).status_code for _ in range(3)] == [200, 200, 429]
            (usage,) = await limit.usage("a")
            assert usage.remaining == 0 and usage.limit == Limit("2/minute")
            assert usage.reset > time.time()
            await limit.reset("a")
            assert (await limit.usage("a"))[0].remaining == 2
            assert (await client.get("/x", headers={"x-k": "a"})).status_code == 200

    asyncio.run(run())


# --- keys and configuration, through the hooks ----------------------------------------------------------------


def fake(**attrs: Any) -> Exchange:
    return SimpleNamespace(**attrs)  # type: ignore[return-value]


def test_keys() -> None:
    assert by_client_ip(fake(client_ip="203.0.113.9")) == "203.0.113.9"
    assert by_client_ip(fake(client_ip="2001:db8:a:b:1:2:3:4")) == "2001:db8:a:b::/64"
    assert by_client_ip(fake(client_ip="::ffff:192.0.2.1")) == "192.0.2.1"
    assert by_client_ip(fake(client_ip=None)) is None
    wide = by_client_network(ipv4_prefix=24, ipv6_prefix=48)
    assert wide(fake(client_ip="203.0.113.9")) == "203.0.113.0/24"
    assert wide(fake(client_ip="2001:db8:a:b::1")) == "2001:db8:a::/48"
    assert by_subject(fake(identity="alice")) == "alice"
    assert by_subject(fake(identity={"sub": "bob"})) == "bob"
    assert by_subject(fake(identity=SimpleNamespace(subject="carol"))) == "carol"
    assert by_subject(fake(identity=SimpleNamespace(client_id="app-1"))) == "app-1"
    assert by_subject(fake(identity=None)) is None
    assert by_route(fake(route=SimpleNamespace(name="orders"))) == "orders"
    assert repr(by_header("X-Api-Key")) == "by_header('x-api-key')"
    assert by_header("x-a") == by_header("X-A")
    custom = Key(lambda exchange: "t1", "tenant")
    assert repr(RateLimit("1/second", key=custom)).startswith("RateLimit('1/second', key=tenant")
    combined = RateLimit("1/second", key=(by_subject, by_route))
    assert combined.key(fake(identity="u", route=SimpleNamespace(name="r"))) == "u|r"
    assert combined.key(fake(identity=None, route=SimpleNamespace(name="r"))) is None


def test_configuration_is_checked_and_comparable() -> None:
    for bad in ("ten per second", "10/fortnight", ""):
        with pytest.raises(ConfigurationError, match="invalid rate limit"):
            RateLimit(bad)
    with pytest.raises(ConfigurationError, match="strategy"):
        RateLimit("1/second", strategy="token-bucket")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="either limits or plans"):
        RateLimit()
    with pytest.raises(ConfigurationError, match="default_plan"):
        RateLimit(plans={"a": Plan("1/second")}, plan=plan_of, default_plan="b")
    with pytest.raises(ConfigurationError, match="unknown scheme"):
        RateLimitStore("postgres://db")
    with pytest.raises(ConfigurationError, match="on_failure"):
        RateLimitStore("redis://r", on_failure="maybe")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="retry_interval"):
        RateLimitStore("redis://r", retry_interval=0)
    with pytest.raises(ConfigurationError, match="on_change"):
        RateLimitStore("redis://r", on_change="metrics")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="missing_key"):
        RateLimit("1/second", missing_key="reject")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="positive"):
        ConcurrencyLimit(0)
    with pytest.raises(ConfigurationError, match="lease"):
        ConcurrencyLimit(1, store="redis://r", lease=0)
    assert ConcurrencyLimit(1, store="memory://").store is None  # in memory: the slots of this process
    assert Limit("10/second") == Limit("10 per second")
    assert Limit("10/second") != Limit("10/second", strategy="moving-window")
    assert repr(Limit("5/day", quota=True)) == "Limit('5/day', quota=True)"
    with pytest.raises(AttributeError):
        Limit("1/second").strategy = "moving-window"  # type: ignore[misc]
    assert Plan("1/second", quota="9/day") == Plan("1 per second", quota="9 per day")
    assert repr(Plan("1/second", quota="9/day")) == "Plan(rate='1/second', quota='9/day')"
    store = RateLimitStore("redis://:secret@10.0.0.5:6379/0", timeout=0.1)
    assert store == RateLimitStore("redis://:secret@10.0.0.5:6379/0", timeout=0.1)
    assert "secret" not in repr(store)
    with pytest.raises(AttributeError):
        store.timeout = 5.0
    assert repr(store) == "RateLimitStore('redis://10.0.0.5:6379', timeout=0.1, on_failure='local', retry_interval=1.0)"
    assert repr(ConcurrencyLimit(5, key=by_subject)) == "ConcurrencyLimit(5, key=by_subject)"
    assert repr(RateLimit("10/second; 1000/day", per_route=True)) == (
        "RateLimit('10/second; 1000/day', key=by_client_ip, per_route=True)")


def test_charge_counts_a_computed_cost() -> None:
    budget = RateLimit("10/minute", name="charged", headers=True)

    async def expensive(exchange: Exchange) -> Response:
        await budget.charge(exchange, int(exchange.query_params.get("cost", "1")))
        return Response("done")

    class Charged(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/work", expensive)]

    with BackgroundServer(Charged()) as server, httpx.Client(base_url=server.url) as client:
        assert client.get("/work?cost=4").status_code == 200
        assert client.get("/work?cost=4").status_code == 200
        refused = client.get("/work?cost=4")  # 12 > 10
        assert refused.status_code == 429
        assert refused.json()["code"] == "rate_limited"
    assert budget.counts["admitted"] == 2 and budget.counts["rejected"] == 1
    with pytest.raises(ValueError, match="positive integer"):
        asyncio.run(budget.charge(SimpleNamespace(), 0))  # type: ignore[arg-type]
