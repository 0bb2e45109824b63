"""FaultInjection: aborts and delays on purpose, switchable at run time, through a real server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from asgigate import ConfigurationError, Direct, FaultInjected, FaultInjection, Gateway, Group, Route
from asgigate.testing import BackgroundServer

ALWAYS = FaultInjection(abort_percent=100, abort_status=503)
SOMETIMES = FaultInjection(abort_percent=30, abort_status=500, seed=7)
SLOW = FaultInjection(delay_percent=100, delay=0.3)
OFF = FaultInjection(abort_percent=100, enabled=False)
ON_DEMAND = FaultInjection(header_control=True)


class Flaky(Gateway):
    def routes(self) -> list[Route | Group]:
        return [
            Route("/always", Direct(text="ok"), policies=[ALWAYS]),
            Route("/sometimes", Direct(text="ok"), policies=[SOMETIMES]),
            Route("/slow", Direct(text="ok"), policies=[SLOW]),
            Route("/off", Direct(text="ok"), policies=[OFF]),
            Route("/on-demand", Direct(text="ok"), policies=[ON_DEMAND]),
        ]


@pytest.fixture(scope="module")
def flaky() -> Iterator[httpx.Client]:
    with BackgroundServer(Flaky()) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def test_abort_goes_through_the_error_renderer(flaky: httpx.Client) -> None:
    response = flaky.get("/always")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "fault_injected"
    assert response.json()["request_id"] == response.headers["x-request-id"]


def test_abort_percentage(flaky: httpx.Client) -> None:
    statuses = [flaky.get("/sometimes").status_code for _ in range(200)]
    aborted = statuses.count(500)
    assert set(statuses) == {200, 500}
    assert 35 <= aborted <= 85, aborted  # 30% of 200, with room for chance


def test_delay(flaky: httpx.Client) -> None:
    started = time.monotonic()
    assert flaky.get("/slow").text == "ok"
    assert time.monotonic() - started >= 0.3


def test_switch_at_run_time(flaky: httpx.Client) -> None:
    assert flaky.get("/off").status_code == 200
    OFF.enable()
    try:
        assert flaky.get("/off").status_code == 503
        OFF.update(abort_status=429)
        assert flaky.get("/off").status_code == 429
        OFF.update(abort_percent=0)
        assert flaky.get("/off").status_code == 200
    finally:
        OFF.update(abort_percent=100, abort_status=503)
        OFF.disable()
    assert flaky.get("/off").status_code == 200


def test_header_control(flaky: httpx.Client) -> None:
    assert flaky.get("/on-demand").status_code == 200
    assert flaky.get("/on-demand", headers={"x-fault-abort": "504"}).status_code == 504
    started = time.monotonic()
    assert flaky.get("/on-demand", headers={"x-fault-delay": "200"}).status_code == 200
    assert time.monotonic() - started >= 0.2
    bad = flaky.get("/on-demand", headers={"x-fault-abort": "200"})
    assert (bad.status_code, bad.json()["detail"]) == (400, "x-fault-abort must be a 4xx or 5xx status.")
    assert flaky.get("/on-demand", headers={"x-fault-delay": "soon"}).status_code == 400
    assert flaky.get("/always", headers={"x-fault-abort": "504"}).status_code == 503  # not without header_control


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-fault-abort", b"\xb2"),  # "²" in latin-1: a digit to str.isdigit, not to int()
        ("x-fault-abort", b"9" * 5000),  # past Python's limit for converting integers
        ("x-fault-delay", b"\xb2"),
        ("x-fault-delay", b"9" * 5000),
        ("x-fault-delay", b"-1"),
    ],
)
def test_header_control_refuses_odd_values_with_a_400(flaky: httpx.Client, name: str, value: bytes) -> None:
    assert flaky.get("/on-demand", headers=[(name.encode(), value)]).status_code == 400


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"abort_percent": 101}, "not a percentage"),
        ({"delay_percent": -1}, "not a percentage"),
        ({"abort_status": 302}, "not a 4xx or 5xx status"),
        ({"delay": 1000}, "is not 0-300 seconds"),
    ],
)
def test_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        FaultInjection(**kwargs)
    with pytest.raises(ConfigurationError, match=message):
        FaultInjection().update(**kwargs)
    with pytest.raises(ConfigurationError, match="has no setting speed"):
        FaultInjection().update(speed=3)


def test_a_failed_update_changes_nothing() -> None:
    fault = FaultInjection(abort_percent=10)
    with pytest.raises(ConfigurationError):
        fault.update(abort_percent=50, abort_status=200)
    assert (fault.abort_percent, fault.abort_status) == (10, 503)


def test_repr() -> None:
    assert repr(FaultInjection(abort_percent=5, delay_percent=20, delay=0.5)) == (
        "FaultInjection(abort 5% with 503, delay 20% by 0.5s)"
    )
    assert repr(OFF) == "FaultInjection(abort 100% with 503, disabled)"
    assert FaultInjected(status=418).title == "I'm a Teapot"
