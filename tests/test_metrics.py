"""Metrics: what a scrape shows after real traffic through a real server, parsed by prometheus_client's parser."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from asgigate import (
    ConcurrencyLimit,
    ConfigurationError,
    Direct,
    Gateway,
    Metrics,
    Policy,
    Proxy,
    RateLimit,
    Route,
    Terminate,
    Upstream,
)
from asgigate.exchange import Exchange
from asgigate.policies.ratelimit import RateLimitStore
from asgigate.testing import BackgroundServer

from redisserver import RedisServer
from servers import PYTHON, free_port, serve_process


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels: str) -> float:
    found = [s.value for s in samples(text) if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    return sum(found)


class Counted(Policy):
    """A user policy adding its own series to the gateway's registry."""

    def __init__(self, metrics: Metrics) -> None:
        self.hits = metrics.counter("shop_cart_requests_total", "Cart requests by tier.", ["tier"])

    async def on_request(self, exchange: Exchange) -> None:
        self.hits.inc(exchange.headers.get("x-tier", "free"))


class MeteredGateway(Gateway):
    def __init__(self, upstream_url: str, dead_url: str) -> None:
        super().__init__(metrics=Metrics())
        self.backend = Upstream(upstream_url, name="backend")
        self.dead = Upstream(dead_url, name="dead", timeout=2.0)

    def routes(self) -> list[Route]:
        assert self.metrics is not None
        return [
            Route("/metrics", self.metrics.endpoint(), name="metrics"),
            Route("/up/{rest:path}", Proxy(self.backend, strip_prefix="/up"), name="up"),
            Route("/dead", Proxy(self.dead), name="dead"),
            Route("/cart", Direct(json={"items": []}), policies=[Counted(self.metrics)], name="cart"),
            Route("/old", Direct(text="x"), policies=[Terminate(status=410, reason="retired_version")], name="old"),
        ]


@pytest.fixture(scope="module")
def gateway(upstream: BackgroundServer) -> Iterator[tuple[MeteredGateway, httpx.Client]]:
    gw = MeteredGateway(upstream.url, f"http://127.0.0.1:{free_port()}")
    with BackgroundServer(gw) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield gw, client


@pytest.fixture(scope="module")
def upstream() -> Iterator[BackgroundServer]:
    from apps.upstream import app

    with BackgroundServer(app) as server:
        yield server


def test_requests_are_counted_by_route_method_status_and_reason(gateway: tuple[MeteredGateway, httpx.Client]) -> None:
    _, client = gateway
    before = client.get("/metrics").text
    for _ in range(3):
        assert client.get("/up/status/201").status_code == 201
    assert client.post("/up/echo", content=b"x").status_code == 200
    assert client.get("/nowhere").status_code == 404
    assert client.get("/old").status_code == 410
    assert client.get("/dead").status_code == 502
    text = client.get("/metrics").text

    def delta(**labels: str) -> float:
        return value(text, "asgigate_requests_total", **labels) - value(before, "asgigate_requests_total", **labels)

    assert delta(route="up", method="GET", status="201", reason="") == 3
    assert delta(route="up", method="POST", status="200", reason="") == 1
    assert delta(route="", method="GET", status="404", reason="no_route") == 1
    assert delta(route="old", status="410", reason="retired_version") == 1
    assert delta(route="dead", status="502", reason="upstream_connect_failed") == 1
    # the previous scrape is counted once it has finished
    assert delta(route="metrics", method="GET", status="200") >= 1


def test_histograms_are_cumulative_and_agree_with_the_counters(gateway: tuple[MeteredGateway, httpx.Client]) -> None:
    _, client = gateway
    for _ in range(4):
        assert client.get("/up/slow?delay=0.06").status_code == 200
    text = client.get("/metrics").text
    buckets = sorted(
        ((float(s.labels["le"]), s.value) for s in samples(text)
         if s.name == "asgigate_request_duration_seconds_bucket" and s.labels["route"] == "up"),
    )
    counts = [count for _, count in buckets]
    assert counts == sorted(counts), "buckets must be cumulative"
    total = value(text, "asgigate_request_duration_seconds_count", route="up")
    assert buckets[-1] == (float("inf"), total)
    assert total == value(text, "asgigate_requests_total", route="up")
    # the four slow requests took at least 60 ms each: none of them is in a bucket under 50 ms
    under_50ms = max(count for bound, count in buckets if bound <= 0.05)
    assert total - under_50ms >= 4
    assert value(text, "asgigate_request_duration_seconds_sum", route="up") >= 0.24
    assert value(text, "asgigate_upstream_response_seconds_count", upstream="backend") == total
    assert value(text, "asgigate_response_bytes_total", route="up") > 0


def test_in_flight_gauge_sees_a_slow_request(gateway: tuple[MeteredGateway, httpx.Client]) -> None:
    _, client = gateway
    done = threading.Event()

    def slow() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=10) as other:
            other.get("/up/slow?delay=1.5")
        done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    try:
        seen = 0.0
        deadline = time.monotonic() + 10  # the other thread's request may take a while to get in on a busy machine
        while not done.is_set() and time.monotonic() < deadline:
            seen = value(client.get("/metrics").text, "asgigate_requests_in_flight")
            if seen >= 2:  # the slow request and this scrape
                break
            time.sleep(0.02)
        assert seen == 2
    finally:
        thread.join()
    assert done.is_set()
    assert value(client.get("/metrics").text, "asgigate_requests_in_flight") == 1


def test_user_series_and_bounded_methods(gateway: tuple[MeteredGateway, httpx.Client]) -> None:
    _, client = gateway
    client.get("/cart", headers={"x-tier": "gold"})
    client.get("/cart")
    client.get("/cart")
    assert client.request("PROPFIND", "/cart").status_code == 200  # any method: the route has no method list
    text = client.get("/metrics").text
    assert value(text, "shop_cart_requests_total", tier="gold") == 1
    assert value(text, "shop_cart_requests_total", tier="free") == 3
    assert value(text, "asgigate_requests_total", route="cart", method="OTHER") == 1
    assert "PROPFIND" not in text  # a client cannot invent label values


def test_the_endpoint_is_prometheus_text_and_read_only(gateway: tuple[MeteredGateway, httpx.Client]) -> None:
    _, client = gateway
    response = client.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response.headers["cache-control"] == "no-store"
    types = {family.name: family.type for family in text_string_to_metric_families(response.text)}
    assert types["asgigate_requests"] == "counter"
    assert types["asgigate_request_duration_seconds"] == "histogram"
    assert types["asgigate_requests_in_flight"] == "gauge"
    head = client.head("/metrics")
    assert head.status_code == 200 and head.content == b""
    post = client.post("/metrics")
    assert post.status_code == 405
    assert post.headers["allow"] == "GET, HEAD"
    assert post.headers["content-type"] == "application/problem+json"


def test_registry_rejects_bad_declarations() -> None:
    metrics = Metrics()
    with pytest.raises(ConfigurationError, match="valid metric name"):
        metrics.counter("bad-name", "x")
    with pytest.raises(ConfigurationError, match="valid metric name"):
        metrics.counter("ok_name", "x", ["bad label"])
    first = metrics.counter("jobs_total", "x", ["kind"])
    assert metrics.counter("jobs_total", "x", ["kind"]) is first
    with pytest.raises(ConfigurationError, match="already registered"):
        metrics.gauge("jobs_total", "x", ["kind"])
    with pytest.raises(ConfigurationError, match="buckets"):
        metrics.histogram("latency_seconds", "x", buckets=[0.1, 0.1])


def test_label_values_are_escaped() -> None:
    metrics = Metrics(prefix="t")
    metrics.counter("odd_total", "x", ["v"]).inc('a "quoted"\\ \nline')
    (sample,) = [s for s in samples(metrics.render().decode()) if s.name == "odd_total"]
    assert sample.labels["v"] == 'a "quoted"\\ \nline'


WORKER = """
import os, sys
from asgigate import Direct, Gateway, Metrics, Route

class Worker(Gateway):
    def __init__(self):
        super().__init__(metrics=Metrics(shared_dir=os.environ["METRICS_DIR"], share_interval=0))

    def routes(self):
        return [Route("/metrics", self.metrics.endpoint()), Route("/hello", Direct(text=os.environ["NAME"]))]

app = Worker()
"""


def test_workers_sharing_a_directory_scrape_as_one(tmp_path: Path) -> None:
    (tmp_path / "worker_app.py").write_text(WORKER)
    shared = tmp_path / "metrics"
    ports = [free_port(), free_port()]

    def serve(port: int, name: str) -> AbstractContextManager[object]:
        return serve_process(
            [PYTHON, "-m", "uvicorn", "worker_app:app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", "--app-dir", str(tmp_path)],
            port, env={"METRICS_DIR": str(shared), "NAME": name},
        )

    with serve(ports[0], "a"), serve(ports[1], "b"):
        for _ in range(3):
            assert httpx.get(f"http://127.0.0.1:{ports[0]}/hello").text == "a"
        for _ in range(5):
            assert httpx.get(f"http://127.0.0.1:{ports[1]}/hello").text == "b"
        for port in ports:  # either worker answers for both
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            assert value(text, "asgigate_requests_total", route="/hello", status="200") == 8
        assert len(list(shared.glob("*.json"))) == 2


class Cache(Policy):
    """Keeps its own figures; the metrics read them at scrape time (nothing added per request)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        self.registrations = 0

    async def on_request(self, exchange: Exchange) -> None:
        self.hits += 1

    def register_metrics(self, metrics: Metrics) -> None:
        self.registrations += 1
        metrics.counter("cache_hits_total", "Cache hits by cache.", ["cache"], read=lambda: {(self.name,): self.hits})


def test_components_register_series_read_at_scrape_time() -> None:
    users, orders = Cache("users"), Cache("orders")

    class Cached(Gateway):
        def __init__(self) -> None:
            super().__init__(metrics=Metrics())

        def policies(self) -> list[Policy]:
            return [users]

        def routes(self) -> list[Route]:
            assert self.metrics is not None
            return [
                Route("/metrics", self.metrics.endpoint()),
                Route("/a", Direct(text="a"), policies=[orders]),
                Route("/b", Direct(text="b"), policies=[orders]),
            ]

    with BackgroundServer(Cached()) as server, httpx.Client(base_url=server.url) as client:
        client.get("/a")
        client.get("/b")
        client.get("/b")
        text = client.get("/metrics").text
    assert users.registrations == orders.registrations == 1  # once per policy, however many routes it is on
    assert value(text, "cache_hits_total", cache="orders") == 3
    assert value(text, "cache_hits_total", cache="users") == 4  # /a, /b, /b and the scrape itself


def test_rate_limit_decisions_and_store_health_are_series() -> None:
    with RedisServer() as redis:
        store = RateLimitStore(redis.uri, timeout=1.0, retry_interval=0.2, on_failure="local")  # a busy Redis is up
        strict = RateLimit("2/minute", name="strict")
        watched = RateLimit("100/minute", name="watched", dry_run=True)
        shared = RateLimit("3/minute", name="shared", store=store)

        class Limited(Gateway):
            def __init__(self) -> None:
                super().__init__(metrics=Metrics())

            def routes(self) -> list[Route]:
                assert self.metrics is not None
                return [
                    Route("/metrics", self.metrics.endpoint()),
                    Route("/strict", Direct(text="s"), policies=[strict, watched]),
                    Route("/shared", Direct(text="r"), policies=[shared, ConcurrencyLimit(5, name="slots")]),
                    Route("/shared2", Direct(text="r"), policies=[RateLimit("9/minute", name="again", store=store)]),
                ]

        with BackgroundServer(Limited()) as server, httpx.Client(base_url=server.url) as client:
            assert [client.get("/strict").status_code for _ in range(3)] == [200, 200, 429]
            assert [client.get("/shared").status_code for _ in range(4)] == [200, 200, 200, 429]
            text = client.get("/metrics").text
            assert value(text, "asgigate_ratelimit_decisions_total", policy="strict", outcome="admitted") == 2
            assert value(text, "asgigate_ratelimit_decisions_total", policy="strict", outcome="rejected") == 1
            assert value(text, "asgigate_ratelimit_decisions_total", policy="watched", outcome="admitted") == 2
            assert value(text, "asgigate_ratelimit_decisions_total", policy="shared", outcome="rejected") == 1
            assert value(text, "asgigate_requests_total", route="/strict", status="429", reason="rate_limited") == 1
            assert value(text, "asgigate_concurrency_in_flight", policy="slots") == 0
            store_label = f"redis://127.0.0.1:{redis.port}"
            assert value(text, "asgigate_ratelimit_store_up", store=store_label) == 1  # one store, registered once
            assert value(text, "asgigate_ratelimit_store_outages_total", store=store_label) == 0

            redis.stop()
            client.get("/shared2")  # fails over to local counting, marks the store down
            client.get("/shared2")
            text = client.get("/metrics").text
            assert value(text, "asgigate_ratelimit_store_up", store=store_label) == 0
            assert value(text, "asgigate_ratelimit_store_outages_total", store=store_label) == 1
            assert value(text, "asgigate_ratelimit_store_fallbacks_total", store=store_label) >= 2

            redis.start()
            deadline = time.monotonic() + 5
            while value(client.get("/metrics").text, "asgigate_ratelimit_store_up", store=store_label) == 0:
                assert time.monotonic() < deadline, "the store did not come back"
                time.sleep(0.1)
