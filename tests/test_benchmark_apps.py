"""Every asgigate system of the benchmark suite builds: a broken benchmark app is found here, not mid-run."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from asgigate.testing import BackgroundServer

from redisserver import RedisServer
from servers import PYTHON, ROOT


def _load_hello() -> Any:
    spec = importlib.util.spec_from_file_location("bench_hello", ROOT / "benchmarks" / "apps" / "hello.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


hello_app = _load_hello()  # the upstream of the header test: the benchmark's own hello world

APPS = sorted(p.stem for p in (ROOT / "benchmarks" / "apps").glob("asgigate_*.py"))

BUILD = """
import importlib, sys
sys.path.insert(0, {apps!r})
module = importlib.import_module({name!r})
module.app.build()
print(module.app.describe())
"""


def test_the_suite_has_apps() -> None:
    assert {"asgigate_plain", "asgigate_full"} <= set(APPS)


@pytest.mark.parametrize("name", APPS)
def test_benchmark_app_builds(name: str) -> None:
    result = subprocess.run(
        [PYTHON, "-c", BUILD.format(apps=str(ROOT / "benchmarks" / "apps"), name=name)],
        env={
            "UPSTREAM_URL": "http://127.0.0.1:9",
            "RATELIMIT_REDIS_URL": "redis://127.0.0.1:9",
            "PATH": "/usr/bin:/bin",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "Proxy(" in result.stdout


def _run_against_hello(script: str, env: dict[str, str] | None = None) -> Any:
    """Run a script (the benchmark apps on its path) with the hello world as UPSTREAM_URL; its JSON output."""
    with BackgroundServer(hello_app) as upstream:
        result = subprocess.run(
            [PYTHON, "-c", script.format(apps=str(ROOT / "benchmarks" / "apps"))],
            env={"UPSTREAM_URL": upstream.url, "PATH": "/usr/bin:/bin", **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


SAME_HEADERS = """
import asyncio, json, sys
import httpx
sys.path.insert(0, {apps!r})
import asgigate_ratelimit_memory, constant_headers, hello, minimal_ratelimit

async def get(app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        response = await client.get("/small")
    assert response.status_code == 200, response.text
    return [[name.decode(), value.decode()] for name, value in response.headers.raw]

async def main():
    print(json.dumps([await get(asgigate_ratelimit_memory.app), await get(hello.ratelimit_headers),
                      await get(minimal_ratelimit.app), await get(constant_headers.policy),
                      await get(constant_headers.asgi)]))

asyncio.run(main())
"""


def test_hello_ratelimit_headers_are_the_memory_limits_headers() -> None:
    """`hello:ratelimit_headers` stands for what the five headers cost uvicorn: the same names, the same bytes.

    `minimal_ratelimit:app`, the floor a hand-written rate limit sets, sends them too, and so do the two
    `constant_headers` bounds (a policy and an ASGI wrapper appending them as constants), both after the reply's
    own headers, through to the upstream.
    """
    gateway, hello, minimal, policy, asgi = _run_against_hello(SAME_HEADERS)
    names = ["ratelimit-policy", "ratelimit", "x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"]

    def limit_headers(headers: list[list[str]]) -> list[list[str]]:
        # digits as digits: the reset counts down, but its length (what uvicorn's checks cost) does not change
        return [[name, re.sub(r"\d", "0", value)] for name, value in headers if "ratelimit" in name]

    assert [name for name, _ in limit_headers(gateway)] == names
    assert limit_headers(hello) == limit_headers(gateway)
    assert limit_headers(minimal) == limit_headers(gateway)
    assert ["x-ratelimit-remaining", "999999999"] in minimal
    assert ["x-ratelimit-remaining", "999999999"] in gateway  # the first request of a 1000000000/hour limit
    for constant in (policy, asgi):
        assert limit_headers(constant) == limit_headers(gateway)
        assert [name for name, _ in constant][-5:] == names  # appended after the upstream's headers
        assert ["content-type", "application/json"] in constant  # the hello world's reply, proxied


REFUSES = """
import asyncio, json, sys
import httpx
sys.path.insert(0, {apps!r})
from asgigate_plain import app as plain
from minimal_ratelimit import MinimalRateLimit

async def main():
    app = MinimalRateLimit(plain, amount=2, window=60)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        replies = [await client.get("/small") for _ in range(3)]
    print(json.dumps([[r.status_code, dict(r.headers), r.text] for r in replies]))

asyncio.run(main())
"""


def test_the_minimal_rate_limit_counts_and_refuses() -> None:
    """The floor is a working rate limit, not just five headers: the third request of 2/minute gets a 429."""
    (s1, h1, body1), (s2, h2, _), (s3, h3, body3) = _run_against_hello(REFUSES)
    assert (s1, s2, s3) == (200, 200, 429)
    assert '"ok":true' in body1  # proxied to the upstream
    assert (h1["x-ratelimit-remaining"], h2["x-ratelimit-remaining"], h3["x-ratelimit-remaining"]) == ("1", "0", "0")
    assert h1["ratelimit-policy"] == '"2-per-60-seconds";q=2;w=60'
    assert 0 < int(h3["retry-after"]) <= 60
    assert json.loads(body3)["status"] == 429


REDIS_CLIENTS = """
import asyncio, json, sys
import httpx
sys.path.insert(0, {apps!r})
import asgigate_ratelimit_redis
from asgigate.policies.ratelimit._redis_wire import RedisWire

NAMES = ["app", "redispy", "redispy_pipeline", "coredis", "limits_coredis"]

async def main():
    found = {{}}
    for name in NAMES:
        gateway = getattr(asgigate_ratelimit_redis, name)
        store = gateway.limit.store
        transport = httpx.ASGITransport(app=gateway, client=(name, 1234))  # a counter of its own per system
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            replies = await asyncio.gather(*[client.get("/small") for _ in range(20)])
        wire = RedisWire(store.uri)
        keys = await wire.command(b"KEYS", b"LIMITS:*/" + name.encode() + b"/*")
        found[name] = {{
            "client": type(store.wire).__name__,
            "statuses": sorted({{r.status_code for r in replies}}),
            "remaining": sorted(int(r.headers["x-ratelimit-remaining"]) for r in replies),
            "counter": [int(await wire.command(b"GET", key)) for key in keys],
            "ttl": [await wire.command(b"TTL", key) for key in keys],
            "failures": store.failures,
        }}
        wire.close()
        await store.aclose()
    print(json.dumps(found))

asyncio.run(main())
"""


def test_the_redis_client_systems_count_through_their_client(redis: RedisServer) -> None:
    """`asgigate-rl-redis` and its client variants make the same count, each through the client it names.

    RedisWire, redis-py, redis-py with pipelines and coredis run the same script, so 20 concurrent requests leave
    one counter at 20 that expires with the hour window; `limits_coredis` is the store without RedisWire.
    """
    found = _run_against_hello(REDIS_CLIENTS, {"RATELIMIT_REDIS_URL": redis.uri})
    clients = {name: entry.pop("client") for name, entry in found.items()}
    assert clients == {"app": "RedisWire", "redispy": "RedisPyWindow", "redispy_pipeline": "RedisPyPipelineWindow",
                       "coredis": "CoredisWindow", "limits_coredis": "NoneType"}
    for name, entry in found.items():
        assert entry["statuses"] == [200], name
        assert entry["remaining"] == list(range(1_000_000_000 - 20, 1_000_000_000)), name
        assert entry["counter"] == [20], name
        assert 3590 <= entry["ttl"][0] <= 3600, name
        assert entry["failures"] == 0, name


def test_the_benchmark_redis_clients_load_a_flushed_script_again(redis: RedisServer) -> None:
    """A restarted Redis has lost the script: the benchmark's clients load it again, as RedisWire does."""
    path = ROOT / "benchmarks" / "apps" / "redis_clients.py"
    spec = importlib.util.spec_from_file_location("bench_redis_clients", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    async def main() -> None:
        for client in module.CLIENTS.values():
            window = client(redis.uri, key_prefix="FLUSHED")
            first = await asyncio.gather(*[window.incr_window(client.__name__, 30) for _ in range(5)])
            redis.command(b"SCRIPT", b"FLUSH")
            if client.__name__ == "CoredisWindow":
                # coredis drops its connection when several calls meet the missing script at once (coredis' own
                # behaviour, not the benchmark's): one at a time it loads the script again
                again = [await window.incr_window(client.__name__, 30, 2) for _ in range(5)]
            else:
                again = await asyncio.gather(*[window.incr_window(client.__name__, 30, 2) for _ in range(5)])
            assert sorted(count for count, _ in first + again) == [1, 2, 3, 4, 5, 7, 9, 11, 13, 15], client
            assert all(25_000 < ttl <= 30_000 for _, ttl in first + again), client
            window.close()
            await asyncio.sleep(0)

    asyncio.run(main())


def _instructions_module() -> Any:
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import instructions
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return instructions


def test_the_instruction_counts_estimate_ratios_with_the_kernels_share_unchanged() -> None:
    """A third of the plain proxy's CPU time in the kernel: its user instructions are two thirds of the total."""
    instructions = _instructions_module()
    assert instructions.estimated_ratio(200_000, 200_000) == 1.0
    assert instructions.estimated_ratio(200_000, 300_000) == pytest.approx(300_000 / 400_000)  # kernel 100,000
    # the budget the bounds table prints is the extra cost that gives exactly the target
    lines = instructions.bounds({"asgigate-plain": 200_000.0, "constant-headers-policy": 230_000.0})
    budget = int(re.search(r"limit ([\d,]+) instructions per request in all", "\n".join(lines))[1].replace(",", ""))
    assert instructions.estimated_ratio(200_000, 200_000 + budget) == pytest.approx(instructions.TARGET, abs=1e-5)
    assert "| 30,000 | 0.909 |" in lines[-1]  # 300,000 / 330,000
    assert instructions.bounds({"asgigate-plain": 200_000.0}) == []  # nothing measured against it: no table


def test_the_instruction_report_sets_granian_systems_against_granians_plain_proxy() -> None:
    from datetime import datetime

    instructions = _instructions_module()
    specs = {spec.key: spec for spec in [*instructions.SYSTEMS, *instructions.COUNT_ONLY]}
    counts = {"asgigate-plain": 250_000.0, "asgigate-plain-granian": 200_000.0, "minimal-rl-granian": 250_000.0}
    counted = [instructions.Counted(specs[key], n) for key, n in counts.items()]
    # the machine and the versions are data: formatting the report needs neither nginx nor wrk nor valgrind
    text = instructions.render(counted, (3000, 9000), 50, datetime.now(), {"nproc": "2"},
                               {"nginx": "1.22.1", "wrk": "4.1.0"})
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[-1].strip(" |")
            for line in text.splitlines() if line.startswith("| ") and " | " in line}
    assert rows["asgigate-plain"] == rows["asgigate-plain-granian"] == "1.000"
    assert rows["minimal-rl-granian"] == "0.800"  # 200,000 / 250,000, not 250,000 / 250,000
    assert "\nMachine: nproc 2\n" in text
    assert "\nVersions: nginx 1.22.1, wrk 4.1.0\n" in text


def test_the_instruction_report_sets_each_redis_client_against_redis_wire() -> None:
    """The estimate uses the plain proxy's kernel share for both: (wire + kernel) / (client + kernel)."""
    instructions = _instructions_module()
    counts = {"asgigate-plain": 200_000.0, "asgigate-rl-redis": 220_000.0, "asgigate-rl-redis-redispy": 300_000.0,
              "asgigate-rl-redis-redispy-pipeline": 230_000.0}
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in instructions.redis_clients(counts)
            if line.startswith("| ") and "(asgigate-rl-redis" in line}
    kernel = 100_000  # a third of the plain proxy's CPU time
    assert rows["redis-py (redis.asyncio, hiredis, its connection pool) (asgigate-rl-redis-redispy)"] == [
        "300,000", "+80,000", f"{(220_000 + kernel) / (300_000 + kernel):.3f} (below 0.85) |"]
    assert rows["redis-py, each event-loop iteration's calls in one pipeline (asgigate-rl-redis-redispy-pipeline)"][
        2] == f"{(220_000 + kernel) / (230_000 + kernel):.3f} (reaches 0.85) |"
    assert instructions.redis_clients({"asgigate-plain": 1.0, "asgigate-rl-redis": 2.0}) == []  # no client counted


def test_the_timed_report_sets_each_redis_client_against_redis_wire_round_by_round() -> None:
    import sys
    from datetime import datetime

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import report
        import systems
        from config import Settings
        from workloads import Measurement, combine
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rps = {"asgigate-plain": [4000, 5000, 4500], "asgigate-rl-redis": [3000, 4000, 2000],
           "asgigate-rl-redis-redispy": [1500, 1000, 1800]}
    specs = [s for s in [*systems.SYSTEMS, *systems.REDIS_CLIENTS] if s.key in rps]
    res = report.RunResults(Settings.make(quick=True), datetime.now(), {}, {}, specs)
    res.raw = {(key, "small"): [Measurement(n * 5, 5.0, 1, 1, 1, 1, 0) for n in runs] for key, runs in rps.items()}
    res.combined = {key: combine(runs) for key, runs in res.raw.items()}
    table = report.redis_clients_table(report.Figures(res))
    row = next(line for line in table.splitlines() if line.startswith("| asgigate-rl-redis-redispy "))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    # medians 1,500 / 3,000; round by round 0.50, 0.25, 0.90
    assert cells[1:5] == ["1,500", "1,000-1,800", "0.50x", "0.50x (0.25-0.90)"]
    assert "redis-py / RedisWire: 0.50x in median requests/s, which falls short of the 85%" in table
    res.systems = specs[:2]
    assert report.redis_clients_table(report.Figures(res)) == ""  # no client measured: no section


SERVE = """
import sys, urllib.request
from pathlib import Path
sys.path.insert(0, {bench!r})
from procs import Proc, wait_http
from systems import SYSTEMS, command, environment, with_free_ports

(spec,) = with_free_ports([s for s in SYSTEMS if s.key == {key!r}])
env = environment(int({upstream_port!r}))
proc = Proc(spec.key, command(spec, int({upstream_port!r})), {cpus!r}, Path({log!r}), env)
try:
    error = wait_http(proc, "127.0.0.1", spec.port, "/small", timeout=60.0)
    assert error is None, error
    with urllib.request.urlopen(f"http://127.0.0.1:{{spec.port}}/small", timeout=10) as reply:
        print(reply.status, dict(reply.headers).get("x-ratelimit-remaining"), reply.read().decode())
finally:
    proc.stop()
"""


@pytest.mark.parametrize("key", ["asgigate-plain-granian", "asgigate-rl-memory-granian"])
def test_the_granian_systems_serve_through_the_benchmarks_own_command(key: str, tmp_path: Path) -> None:
    """The harness starts granian as `benchmarks/systems.command` says, and the app answers through it."""
    cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    with BackgroundServer(hello_app) as upstream:
        script = SERVE.format(bench=str(ROOT / "benchmarks"), key=key, upstream_port=upstream.url.rsplit(":", 1)[1],
                              cpus=cpus, log=str(tmp_path / "server.log"))
        result = subprocess.run([PYTHON, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr + (tmp_path / "server.log").read_text(errors="replace")
    status, remaining, body = result.stdout.strip().split(" ", 2)
    assert status == "200"
    assert '"ok":true' in body  # proxied to the upstream
    if "rl-memory" in key:  # the start-up check's requests were counted too
        assert 999_999_990 <= int(remaining) < 1_000_000_000
    else:
        assert remaining == "None"
