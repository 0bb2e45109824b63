"""Terminate: requests refused on purpose (maintenance, retired versions, blocked networks), through a real server."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from datetime import time as daytime
from typing import Any

import httpx
import orjson
import pytest

from asgigate import ConfigurationError, Direct, Gateway, Group, Reply, RequestTerminated, Route, Terminate
from asgigate.policies._match import RequestMatch
from asgigate.testing import BackgroundServer

from servers import wait_until

NOW = datetime.now(UTC)
MAINTENANCE = Terminate(503, "Down for maintenance.", reason="maintenance", except_clients=["198.51.100.0/24"],
                        enabled=False)


class Shop(Gateway):
    def __init__(self) -> None:
        # The test client is 127.0.0.1; X-Forwarded-For from it stands for other clients.
        super().__init__(trusted_proxies=["127.0.0.1/32"], errors=Reply(
            json={"error": "{code}", "message": "{message}", "retry_after": "{retry_after}"},
            html="<h1>{title}</h1><p>{message}</p>"))

    def policies(self) -> list[Terminate]:
        return [MAINTENANCE]

    def routes(self) -> list[Route | Group]:
        now = datetime.now(UTC)  # at build time, when the server starts
        return [
            Group("/v1", [Route("/orders", Direct(json=["v1"]))],
                  policies=[Terminate(410, "API v1 was retired; use /v2.", title="Gone", reason="retired_version")]),
            Route("/v2/orders", Direct(json=["v2"]),
                  policies=[Terminate(400, "Version 1 clients must upgrade.", headers={"x-client-version": "1"}),
                            Terminate(403, "Blocked.", clients=["203.0.113.0/24", "2001:db8::/32"]),
                            Terminate(403, "No debugging here.", query={"debug": True}),
                            Terminate(405, "Read only.", methods=["DELETE"], reply_headers={"allow": "GET"})]),
            Route("/window/open", Direct(text="x"),
                  policies=[Terminate(window=(now - timedelta(hours=1), now + timedelta(hours=1)))]),
            Route("/window/past", Direct(text="x"),
                  policies=[Terminate(window=(now - timedelta(hours=2), now - timedelta(hours=1)))]),
            Route("/window/explicit", Direct(text="x"),
                  policies=[Terminate(429, window=(now - timedelta(hours=1), now + timedelta(hours=1)),
                                      retry_after=5)]),
        ]


@pytest.fixture(scope="module")
def shop() -> Iterator[httpx.Client]:
    with BackgroundServer(Shop()) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def test_retired_version_is_410_in_the_gateways_format(shop: httpx.Client) -> None:
    response = shop.get("/v1/orders")
    assert response.status_code == 410
    assert response.json() == {"error": "request_terminated", "message": "API v1 was retired; use /v2.",
                               "retry_after": None}
    page = shop.get("/v1/orders", headers={"accept": "text/html"})
    assert page.text == "<h1>Gone</h1><p>API v1 was retired; use /v2.</p>"
    assert shop.get("/v2/orders").json() == ["v2"]


def test_matching_by_header_query_method_and_network(shop: httpx.Client) -> None:
    assert shop.get("/v2/orders", headers={"x-client-version": "1"}).status_code == 400
    assert shop.get("/v2/orders", headers={"x-client-version": "2"}).status_code == 200
    assert shop.get("/v2/orders", params={"debug": "1"}).status_code == 403
    deleted = shop.delete("/v2/orders")
    assert (deleted.status_code, deleted.headers["allow"]) == (405, "GET")
    for client in ("203.0.113.9", "2001:db8::1"):
        blocked = shop.get("/v2/orders", headers={"x-forwarded-for": client})
        assert (blocked.status_code, blocked.json()["message"]) == (403, "Blocked."), client
    assert shop.get("/v2/orders", headers={"x-forwarded-for": "192.0.2.1"}).status_code == 200


def test_time_windows_and_retry_after(shop: httpx.Client) -> None:
    response = shop.get("/window/open")
    assert response.status_code == 503
    seconds = int(response.headers["retry-after"])
    assert 3500 < seconds <= 3600  # counts down to the end of the window
    assert response.json()["retry_after"] == seconds
    assert shop.get("/window/past").status_code == 200
    explicit = shop.get("/window/explicit")
    assert (explicit.status_code, explicit.headers["retry-after"]) == (429, "5")


def test_maintenance_switch_at_run_time(shop: httpx.Client) -> None:
    assert shop.get("/v2/orders").status_code == 200
    MAINTENANCE.enable()
    try:
        down = shop.get("/v2/orders")
        assert (down.status_code, down.json()["message"]) == (503, "Down for maintenance.")
        assert shop.get("/nowhere").status_code == 404  # no route matched: no policy ran
        office = shop.get("/v2/orders", headers={"x-forwarded-for": "198.51.100.7"})
        assert office.status_code == 200  # except_clients still get through
    finally:
        MAINTENANCE.disable()
    assert shop.get("/v2/orders").status_code == 200


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(orjson.loads(record.getMessage()))


def test_reason_is_in_the_access_log(shop: httpx.Client) -> None:
    handler = Records()
    logger = logging.getLogger("asgigate.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        ids = [shop.get("/v1/orders").headers["x-request-id"],
               shop.get("/v2/orders", params={"debug": "1"}).headers["x-request-id"]]
        wait_until(lambda: set(ids) <= {line["request_id"] for line in handler.lines})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    lines = {line["request_id"]: line for line in handler.lines}
    assert [(lines[i]["status"], lines[i]["reason"]) for i in ids] == [(410, "retired_version"),
                                                                      (403, "request_terminated")]


def clock_at(hour: int, minute: int = 0, tz: timezone = UTC) -> Any:
    return lambda: datetime(2025, 3, 10, hour, minute, tzinfo=tz)


def test_daily_windows() -> None:
    nightly = (daytime(22, 0), daytime(2, 0))  # across midnight, UTC
    assert RequestMatch(window=nightly, clock=clock_at(23)).seconds_left() == 3 * 3600
    assert RequestMatch(window=nightly, clock=clock_at(1, 30)).seconds_left() == 30 * 60
    assert RequestMatch(window=nightly, clock=clock_at(12)).seconds_left() is None
    paris = timezone(timedelta(hours=1))
    lunch = (daytime(12, 0, tzinfo=paris), daytime(13, 0, tzinfo=paris))
    assert RequestMatch(window=lunch, clock=clock_at(11, 30)).seconds_left() == 30 * 60  # 12:30 in Paris
    assert RequestMatch(window=lunch, clock=clock_at(12, 30)).seconds_left() is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": 200}, "not a 4xx or 5xx status"),
        ({"status": True}, "not a 4xx or 5xx status"),
        ({"retry_after": -1}, "not a number of seconds"),
        ({"reason": "maintenance mode"}, "must be a word"),
        ({"clients": ["10.0.0.300/8"]}, "clients: "),
        ({"except_clients": "not-a-network"}, "except_clients: "),
        ({"window": (datetime(2025, 1, 2), datetime(2025, 1, 3))}, "need a timezone"),
        ({"window": (NOW, NOW - timedelta(hours=1))}, "ends .* before it starts"),
        ({"window": (NOW, daytime(3, 0))}, "two aware datetimes, or two times of day"),
        ({"headers": {"x": 1}}, "must be a str, a compiled regex or True"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Terminate(**kwargs)


def test_repr_shows_what_it_does() -> None:
    assert repr(Terminate(410, headers={"x-api-version": re.compile("1.*")})) == (
        "Terminate(410, header x-api-version)"
    )
    assert repr(MAINTENANCE) == "Terminate(503, reason='maintenance', except_clients=198.51.100.0/24, disabled)"


def test_the_error_itself() -> None:
    error = RequestTerminated("gone", status=410, reason="retired", headers={"x": "1"})
    assert (error.status_code, error.title, error.reason, error.code) == (410, "Gone", "retired", "request_terminated")
    assert RequestTerminated().status_code == 503
    with pytest.raises(ValueError, match="not a 4xx or 5xx"):
        RequestTerminated(status=302)
