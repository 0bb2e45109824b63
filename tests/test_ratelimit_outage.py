"""A Redis outage during a load run: killed (SIGKILL), then hung (SIGSTOP), with 20 clients hammering a gateway.

No request may wait longer than the store timeout (plus a margin), each `on_failure` setting must behave as
documented while Redis is away, every transition logs one line and calls the store's hook once, and once Redis
is back on the same port the limits are counted in Redis again.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass

import httpx
import pytest
from starlette.responses import PlainTextResponse

from asgigate import ConcurrencyLimit, Direct, Exchange, Gateway, JSONResponse, RateLimit, Route
from asgigate.policies.ratelimit import RateLimitStore, by_header

from redisserver import RedisServer
from servers import free_port, run_closing, serve_process, uvicorn_cmd, wait_until_async

TIMEOUT = 0.5  # the store timeout: generous, so that a loaded test machine does not time out a healthy Redis
MARGIN = 0.7  # scheduling noise of a loaded 2-core machine; a missing timeout would show the whole 3 s stop
PER_PHASE = 10  # the limit, per minute, of every phase's key (each phase sends several times more)
MODES = ("local", "open", "closed")


@dataclass
class Result:
    phase: str
    mode: str
    status: int
    seconds: float
    headers: httpx.Headers
    body: bytes


def make_app() -> Gateway:
    """The gateway under test (uvicorn --factory, its own process): one store and one limit per on_failure mode."""
    uri, run = os.environ["OUTAGE_REDIS"], os.environ["OUTAGE_RUN"]
    changes: list[tuple[str, bool]] = []
    stores = {mode: RateLimitStore(uri, timeout=TIMEOUT, connect_timeout=1.0, retry_interval=0.2,
                                   on_failure=mode,  # type: ignore[arg-type]
                                   on_change=lambda store, healthy: changes.append((store.on_failure, healthy)))
              for mode in MODES}
    # the client names the phase of the run in x-phase: each phase counts against its own counter
    limits = {mode: RateLimit(f"{PER_PHASE}/minute", key=by_header("x-phase"), store=stores[mode],
                              name=f"{run}-{mode}") for mode in MODES}

    async def stats(exchange: Exchange) -> JSONResponse:
        return JSONResponse({mode: {"healthy": store.healthy, "outages": store.outages, "failures": store.failures,
                                    "error": store.last_error,
                                    "changes": [healthy for name, healthy in changes if name == mode]}
                             for mode, store in stores.items()})

    class Edge(Gateway):
        def routes(self) -> list[Route]:
            return [Route("/stats", stats)] + [Route(f"/{mode}", Direct(text=mode), policies=[limits[mode]])
                                               for mode in MODES]

    return Edge(request_id=False, access_log=False)


def redis_count(redis: RedisServer, name: str, phase: str) -> int:
    """The fixed-window counter of one phase, read from Redis itself (limits prefixes its keys with LIMITS:)."""
    key = f"LIMITS:LIMITER/{name}/{phase}/{PER_PHASE}/1/minute"
    reply = redis.command(b"GET", key.encode())
    return 0 if reply.startswith(b"$-1") else int(reply.split(b"\r\n")[1])


def test_redis_killed_and_hung_under_load() -> None:
    port = free_port()
    run = f"outage{time.time_ns()}"
    with RedisServer() as redis:
        env = {"OUTAGE_REDIS": redis.uri, "OUTAGE_RUN": run}
        command = [*uvicorn_cmd("test_ratelimit_outage:make_app", port), "--factory"]
        with serve_process(command, port, env) as proc:
            url = f"http://127.0.0.1:{port}"
            results = asyncio.run(load_run(url, redis, run))
            stats = httpx.get(f"{url}/stats").json()
    assert proc.stdout is not None
    output = proc.stdout.read().decode()

    by_phase: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        by_phase.setdefault((result.phase, result.mode), []).append(result)

    # never a hang: a dead Redis answers at once, a hung one costs at most the store timeout
    slowest = max(results, key=lambda r: r.seconds)
    assert slowest.seconds < TIMEOUT + MARGIN, (slowest.phase, slowest.mode, slowest.seconds)
    for result in results:
        assert result.status in (200, 429, 503), (result.phase, result.mode, result.status, result.body)

    for phase in ("before", "killed", "recovered", "stopped"):
        local, opened, closed = (by_phase[(phase, mode)] for mode in MODES)
        assert min(len(local), len(opened), len(closed)) > PER_PHASE, (phase, len(local), len(opened), len(closed))
        if phase in ("before", "recovered"):  # counted in Redis: exactly the limit, whatever the mode
            for mode in MODES:
                statuses = [r.status for r in by_phase[(phase, mode)]]
                assert statuses.count(200) == PER_PHASE and set(statuses) == {200, 429}, (phase, mode)
            continue
        # Redis away, on_failure="local": counted in this process's memory, still exactly the limit
        assert [r.status for r in local].count(200) == PER_PHASE, phase
        assert {r.status for r in local} == {200, 429}, phase
        assert all("x-ratelimit-remaining" in r.headers for r in local)
        # on_failure="open": everything admitted, uncounted, without made-up limit headers
        assert {r.status for r in opened} == {200}, phase
        assert not any("x-ratelimit-remaining" in r.headers for r in opened)
        # on_failure="closed": a 503 with a stable code, through the error renderer
        assert {r.status for r in closed} == {503}, phase
        problem = httpx.Response(503, content=closed[0].body, headers=closed[0].headers).json()
        assert problem["code"] == "request_terminated"
        assert closed[0].headers["content-type"] == "application/problem+json"
        assert closed[0].headers["retry-after"] == "1"

    # one transition each way per outage, per store: in the hook, in the counters and in the log
    for mode in MODES:
        assert stats[mode]["changes"] == [False, True, False, True], (mode, stats)
        assert stats[mode]["outages"] == 2 and stats[mode]["healthy"] and stats[mode]["failures"] >= 1, stats
    lines = [line for line in output.splitlines() if line.startswith("rate limit store ")]
    assert sum("unavailable" in line for line in lines) == 2 * len(MODES), output
    assert sum("available again" in line for line in lines) == 2 * len(MODES), output
    assert any("TimeoutError" in line for line in lines), output  # the hung Redis was noticed by the timeout


async def load_run(url: str, redis: RedisServer, run: str) -> list[Result]:
    phase = "warmup"
    results: list[Result] = []
    pending: dict[str, int] = {}  # requests sent in each phase and not answered yet
    running = True

    async def client(n: int, http: httpx.AsyncClient) -> None:
        i = n
        while running:
            mode = MODES[i % len(MODES)]
            i += 1
            sent_in = phase
            pending[sent_in] = pending.get(sent_in, 0) + 1
            started = time.monotonic()
            response = await http.get(f"/{mode}", headers={"x-phase": sent_in})
            results.append(Result(sent_in, mode, response.status_code, time.monotonic() - started,
                                  response.headers, response.content))
            pending[sent_in] -= 1

    async def healthy_again() -> None:
        deadline = time.monotonic() + 10
        async with httpx.AsyncClient(base_url=url) as http:
            while not all(store["healthy"] for store in (await http.get("/stats")).json().values()):
                assert time.monotonic() < deadline, "the stores did not recover"
                await asyncio.sleep(0.02)

    # made (and connected) before the clock starts: creating a client blocks the event loop for a while
    https = [httpx.AsyncClient(base_url=url, timeout=10) for _ in range(20)]
    for n, http in enumerate(https):  # the first requests also make the stores connect and load their scripts
        assert (await http.get(f"/{MODES[n % len(MODES)]}", headers={"x-phase": "warmup"})).status_code == 200
    clients = [asyncio.create_task(client(n, http)) for n, http in enumerate(https)]
    async def run_phase(name: str, seconds: float) -> None:
        """Load for `seconds` under the name `name`, then a while more under another name (not asserted on):
        no request of the phase is still in flight when the next change happens, so its counts are clean."""
        nonlocal phase
        phase = name
        await asyncio.sleep(seconds)
        phase = f"after {name}"
        await asyncio.sleep(0.3)

    try:
        await run_phase("before", 0.8)

        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGKILL)  # the requests in flight now are caught by it: not asserted on
        await asyncio.to_thread(redis.proc.wait)
        await run_phase("killed", 0.8)

        phase = "restarting"
        await asyncio.to_thread(redis.start)  # the same port, empty
        await healthy_again()
        await run_phase("recovered", 0.8)
        await wait_until_async(lambda: not pending["recovered"])  # a busy machine may answer late
        recovered = [r for r in results if r.phase == "recovered"]
        for mode in MODES:  # every request of the phase was counted in Redis itself
            sent = sum(1 for r in recovered if r.mode == mode)
            assert await asyncio.to_thread(redis_count, redis, f"{run}-{mode}", "recovered") == sent, mode

        os.kill(redis.proc.pid, signal.SIGSTOP)  # a hung Redis: connections open, no answers
        await run_phase("stopped", 3.0)
        phase = "resuming"
        os.kill(redis.proc.pid, signal.SIGCONT)
        await healthy_again()
        await run_phase("again", 0.3)
    finally:
        if redis.proc is not None and redis.proc.poll() is None:
            os.kill(redis.proc.pid, signal.SIGCONT)
        running = False
        await asyncio.gather(*clients)
        for http in https:
            await http.aclose()
    return results


def test_redis_hung_from_the_start(caplog: pytest.LogCaptureFixture) -> None:
    """The first burst waits for one connection attempt (connect_timeout), not one attempt after another."""

    def broken_hook(store: RateLimitStore, healthy: bool) -> None:
        raise RuntimeError("metrics are down too")

    with RedisServer() as redis:
        store = RateLimitStore(redis.uri, timeout=0.5, connect_timeout=0.5, retry_interval=0.2, on_change=broken_hook)
        limit = RateLimit("3/minute", key=by_header("x-k"), store=store)

        class Edge(Gateway):
            def routes(self) -> list[Route]:
                return [Route("/x", Direct(text="x"), policies=[limit])]

        async def burst(client: httpx.AsyncClient) -> list[int]:
            responses = await asyncio.gather(*(client.get("/x", headers={"x-k": "a"}) for _ in range(10)))
            return [response.status_code for response in responses]

        async def run() -> None:
            transport = httpx.ASGITransport(app=Edge())
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                started = time.monotonic()
                statuses = await burst(client)
                assert time.monotonic() - started < 0.5 + MARGIN
                assert sorted(statuses) == [200] * 3 + [429] * 7  # counted in memory meanwhile
                assert not store.healthy and store.outages == 1
                os.kill(pid, signal.SIGCONT)
                deadline = time.monotonic() + 10
                while not store.healthy:  # the background probe finds it again
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
                response = await client.get("/x", headers={"x-k": "a"})
                assert response.headers["x-ratelimit-remaining"] == "2"  # counted in Redis, which saw nothing yet

        assert redis.proc is not None
        pid = redis.proc.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            run_closing(run(), store)
        finally:
            os.kill(pid, signal.SIGCONT)
    assert sum("on_change hook failed" in record.getMessage() for record in caplog.records) == 2


def test_shared_concurrency_limit_without_its_store() -> None:
    """ConcurrencyLimit follows on_failure too: slots in this process, no limit, or a 503."""
    dead = f"redis://127.0.0.1:{free_port()}"  # nothing listens there: connections are refused
    slots = {mode: ConcurrencyLimit(1, store=RateLimitStore(dead, on_failure=mode),  # type: ignore[arg-type]
                                    name=f"dead-{mode}") for mode in MODES}

    async def slow(exchange: Exchange) -> PlainTextResponse:
        await asyncio.sleep(0.2)
        return PlainTextResponse("done")

    class Edge(Gateway):
        def routes(self) -> list[Route]:
            return [Route(f"/{mode}", slow, policies=[slots[mode]]) for mode in MODES]

    async def run() -> dict[str, list[httpx.Response]]:
        transport = httpx.ASGITransport(app=Edge())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            found = {}
            for mode in MODES:
                found[mode] = list(await asyncio.gather(*(client.get(f"/{mode}") for _ in range(3))))
            return found

    found = run_closing(run(), *(slot.store for slot in slots.values()))
    assert sorted(r.status_code for r in found["local"]) == [200, 429, 429]  # one slot, in this process
    assert [r.status_code for r in found["open"]] == [200, 200, 200]
    assert [r.status_code for r in found["closed"]] == [503, 503, 503]
    assert found["closed"][0].json()["code"] == "request_terminated"
    assert all(not slot.store.healthy for slot in slots.values() if slot.store is not None)
