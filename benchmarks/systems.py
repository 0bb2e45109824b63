"""The systems compared in one run, and how each one is started, checked and pinned."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from config import (
    APPS_DIR,
    BOTH_CPUS,
    DELAY_S,
    ECHO_MODULE,
    HOST,
    LARGE_BODY,
    LOAD_CPUS,
    NGINX_DIR,
    PYTHON,
    REPO_DIR,
    SMALL_BODY,
    SUT_CPUS,
    UPSTREAM_PORT,
    WORK_DIR,
)
from procs import Proc, free_port, http_request, port_free, wait_http


@dataclass(frozen=True)
class SystemSpec:
    key: str
    title: str
    kind: str  # "nginx-upstream" | "nginx-proxy" | "uvicorn" | "granian"
    port: int
    app: str = ""  # module:attribute under benchmarks/apps, for kinds "uvicorn" and "granian"
    workers: int = 1
    cpus: str = SUT_CPUS
    asgigate: bool = False  # skipped (with the reason) while asgigate does not import
    workloads: tuple[str, ...] = ()  # the workload keys this system runs; empty: all of them
    auth: bool = False  # a request without the benchmark's bearer token is refused (checked at start-up)
    redis: bool = False  # needs the redis-server the harness starts

    def runs(self, workload: str) -> bool:
        return not self.workloads or workload in self.workloads


DIRECT = SystemSpec(
    "nginx-direct",
    "nginx upstream, direct (on the load core)",
    "nginx-upstream",
    UPSTREAM_PORT,
    cpus=LOAD_CPUS,
)
NGINX_PROXY = SystemSpec("nginx-proxy", "nginx reverse proxy", "nginx-proxy", 8082)
HELLO = SystemSpec("hello", "bare ASGI hello world (ceiling)", "uvicorn", 8090, app="hello:app")
AIOHTTP_PROXY = SystemSpec(
    "aiohttp-proxy", "hand-written ASGI proxy, aiohttp", "uvicorn", 8091, app="aiohttp_proxy:app"
)
ASGIPROXY = SystemSpec("asgiproxy", "asgiproxy (PyPI)", "uvicorn", 8092, app="asgiproxy_app:app")
GATE_PLAIN = SystemSpec(
    "asgigate-plain", "asgigate, plain proxy route", "uvicorn", 8093, app="asgigate_plain:app", asgigate=True
)
GATE_FULL = SystemSpec(
    "asgigate-full",
    "asgigate, full edge stack: request ids, access log, JWT auth, memory rate limit",
    "uvicorn",
    8094,
    app="asgigate_full:app",
    asgigate=True,
    auth=True,
)
# One edge layer each over the plain proxy, to show what each costs. Small GET (and 1-conn latency) only.
EDGE_WORKLOADS = ("small", "latency")
GATE_LOG = SystemSpec(
    "asgigate-log",
    "asgigate, request ids + JSON access log",
    "uvicorn",
    8099,
    app="asgigate_log:app",
    asgigate=True,
    workloads=EDGE_WORKLOADS,
)
GATE_JWT = SystemSpec(
    "asgigate-jwt",
    "asgigate, JWT bearer auth (RS256, static key)",
    "uvicorn",
    8100,
    app="asgigate_jwt:app",
    asgigate=True,
    workloads=EDGE_WORKLOADS,
    auth=True,
)
GATE_RL_MEMORY = SystemSpec(
    "asgigate-rl-memory",
    "asgigate, rate limit per client ip, memory store",
    "uvicorn",
    8101,
    app="asgigate_ratelimit_memory:app",
    asgigate=True,
    workloads=EDGE_WORKLOADS,
)
GATE_RL_MEMORY_BARE = SystemSpec(
    "asgigate-rl-memory-noheaders",
    "asgigate, rate limit per client ip, memory store, headers=False",
    "uvicorn",
    8103,
    app="asgigate_ratelimit_memory:noheaders",
    asgigate=True,
    workloads=EDGE_WORKLOADS,
)
GATE_RL_MEMORY_IETF = SystemSpec(
    "asgigate-rl-memory-ietf",
    "asgigate, rate limit per client ip, memory store, headers='ietf'",
    "uvicorn",
    8104,
    app="asgigate_ratelimit_memory:ietf",
    asgigate=True,
    workloads=EDGE_WORKLOADS,
)
MINIMAL_RL = SystemSpec(
    "minimal-rl",
    "hand-written ASGI rate limit around asgigate-plain (a dict, the same five headers): the floor",
    "uvicorn",
    8106,
    app="minimal_ratelimit:app",
    asgigate=True,
    workloads=EDGE_WORKLOADS,
)
GATE_RL_REDIS = SystemSpec(
    "asgigate-rl-redis",
    "asgigate, rate limit per client ip, Redis store",
    "uvicorn",
    8102,
    app="asgigate_ratelimit_redis:app",
    asgigate=True,
    workloads=EDGE_WORKLOADS,
    redis=True,
)
# The Redis rate limit's fixed-window call through client libraries instead of asgigate's RedisWire (issue 16):
# the same script and store, another client (apps/redis_clients.py). Run when named: `run.py --redis-clients`.
REDIS_CLIENTS: list[SystemSpec] = [
    SystemSpec(
        f"asgigate-rl-redis-{name}",
        f"asgigate-rl-redis, the fixed window through {what}",
        "uvicorn",
        port,
        app=f"asgigate_ratelimit_redis:{name.replace('-', '_')}",
        asgigate=True,
        workloads=EDGE_WORKLOADS,
        redis=True,
    )
    for name, what, port in (
        ("redispy", "redis-py (redis.asyncio, hiredis, its connection pool)", 8113),
        ("redispy-pipeline", "redis-py, each event-loop iteration's calls in one pipeline", 8114),
        ("coredis", "coredis, the same script", 8115),
        ("limits-coredis", "limits' own fixed window on coredis (the store without RedisWire)", 8116),
    )
]
# The plain proxy and the memory rate limit under granian (Rust HTTP, one worker, one runtime thread): what
# they cost under another server, whose header handling is not Python.
GRANIAN_PLAIN = SystemSpec(
    "asgigate-plain-granian",
    "asgigate, plain proxy route, under granian",
    "granian",
    8107,
    app="asgigate_plain:app",
    asgigate=True,
    workloads=EDGE_WORKLOADS,
)
GRANIAN_RL_MEMORY = SystemSpec(
    "asgigate-rl-memory-granian",
    "asgigate, rate limit per client ip, memory store, under granian",
    "granian",
    8108,
    app="asgigate_ratelimit_memory:app",
    asgigate=True,
    workloads=EDGE_WORKLOADS,
)
EDGE_SYSTEMS: list[SystemSpec] = [
    GATE_LOG, GATE_JWT, GATE_RL_MEMORY, GATE_RL_MEMORY_IETF, GATE_RL_MEMORY_BARE, MINIMAL_RL, GATE_RL_REDIS,
    GATE_FULL,
]  # fmt: skip

SYSTEMS: list[SystemSpec] = [
    DIRECT, NGINX_PROXY, HELLO, AIOHTTP_PROXY, ASGIPROXY, GATE_PLAIN, GATE_LOG, GATE_JWT, GATE_RL_MEMORY,
    GATE_RL_MEMORY_IETF, GATE_RL_MEMORY_BARE, MINIMAL_RL, GATE_RL_REDIS, GATE_FULL, GRANIAN_PLAIN, GRANIAN_RL_MEMORY,
]  # fmt: skip

# Worker scaling: everything (these servers, wrk, the upstream) may run on both cores.
SCALING: list[SystemSpec] = [
    SystemSpec("hello-1w", "bare ASGI hello world, 1 worker", "uvicorn", 8095, app="hello:app", cpus=BOTH_CPUS),
    SystemSpec(
        "hello-2w",
        "bare ASGI hello world, 2 workers",
        "uvicorn",
        8096,
        app="hello:app",
        workers=2,
        cpus=BOTH_CPUS,
    ),
    SystemSpec(
        "asgigate-1w",
        "asgigate plain, 1 worker",
        "uvicorn",
        8097,
        app="asgigate_plain:app",
        cpus=BOTH_CPUS,
        asgigate=True,
    ),
    SystemSpec(
        "asgigate-2w",
        "asgigate plain, 2 workers",
        "uvicorn",
        8098,
        app="asgigate_plain:app",
        workers=2,
        cpus=BOTH_CPUS,
        asgigate=True,
    ),
]


def _render_nginx(spec: SystemSpec, upstream_port: int) -> Path:
    prefix = WORK_DIR / f"nginx-{spec.key}"
    www = prefix / "www"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    www.mkdir(parents=True, exist_ok=True)
    template = "upstream.conf" if spec.kind == "nginx-upstream" else "proxy.conf"
    values = {
        "echo_module": str(ECHO_MODULE),
        "user": "user root;" if os.geteuid() == 0 else "",
        "prefix": str(prefix),
        "www": str(www),
        "port": str(spec.port),
        "upstream_port": str(upstream_port),
    }
    text = (NGINX_DIR / template).read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if spec.kind == "nginx-upstream":
        (www / "1m").write_bytes(LARGE_BODY)
    conf = prefix / "nginx.conf"
    conf.write_text(text)
    return conf


def command(spec: SystemSpec, upstream_port: int) -> list[str]:
    if spec.kind.startswith("nginx"):
        conf = _render_nginx(spec, upstream_port)
        return ["nginx", "-p", str(conf.parent), "-c", str(conf), "-e", str(conf.parent / "error.log")]
    if spec.kind == "granian":
        return [
            PYTHON, "-m", "granian", "--interface", "asgi",
            "--working-dir", str(APPS_DIR),
            "--host", HOST, "--port", str(spec.port),
            "--loop", "uvloop", "--http", "1", "--no-ws",
            "--log-level", "warning",
            "--workers", str(spec.workers), "--runtime-threads", "1",
            spec.app,
        ]  # fmt: skip
    return [
        PYTHON, "-m", "uvicorn", spec.app,
        "--app-dir", str(APPS_DIR),
        "--host", HOST, "--port", str(spec.port),
        "--loop", "uvloop", "--http", "httptools",
        "--no-access-log", "--log-level", "warning",
        "--workers", str(spec.workers),
    ]  # fmt: skip


def environment(upstream_port: int = UPSTREAM_PORT, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    env["UPSTREAM_URL"] = f"http://{HOST}:{upstream_port}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_DIR), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    for noisy in ("PYTHONDEVMODE", "PYTHONASYNCIODEBUG", "PYTHONTRACEMALLOC"):
        env.pop(noisy, None)
    return env


def start(
    spec: SystemSpec, upstream_port: int, env: Mapping[str, str] | None = None, headers: Mapping[str, str] | None = None
) -> tuple[Proc, str | None]:
    """Start a system and wait for it; returns the process and an error message (None when it is up).

    `env` is added to every system's environment (the JWT key, the Redis URL); `headers` go with every check
    request (the bearer token)."""
    log = WORK_DIR / "logs" / f"{spec.key}.log"
    proc = Proc(spec.key, command(spec, upstream_port), spec.cpus, log, environment(upstream_port, env), cwd=REPO_DIR)
    error = wait_http(proc, HOST, spec.port, "/small")
    if error is None:
        error = check(spec, headers or {})
        last = proc.tail(1).strip()
        if error is not None and last:
            error += f"; last log line: {last}"
    return proc, error


def check(spec: SystemSpec, headers: Mapping[str, str]) -> str | None:
    """Every workload's path answers correctly through this system (else it is skipped, with the reason)."""
    try:
        if spec.auth:
            status, body, _ = http_request(HOST, spec.port, "/small")
            if status != 401:
                return f"/small without a bearer token answered {status} {body[:80]!r}, not 401"
        status, body, _ = http_request(HOST, spec.port, "/small", headers=headers)
        if status != 200 or body != SMALL_BODY:
            return f"/small answered {status} {body[:80]!r}"
        status, body, _ = http_request(HOST, spec.port, "/1m", headers=headers)
        if status != 200 or body != LARGE_BODY:
            return f"/1m answered {status} with {len(body)} bytes (wanted {len(LARGE_BODY)} known bytes)"
        status, body, _ = http_request(HOST, spec.port, "/upload", method="POST", body=LARGE_BODY, headers=headers)
        if status != 200:
            return f"POST /upload answered {status} {body[:80]!r}"
        status, body, took = http_request(HOST, spec.port, "/delay", headers=headers)
        if status != 200 or took < DELAY_S * 0.9:
            return f"/delay answered {status} in {took * 1000:.1f} ms"
    except OSError as exc:
        return f"request failed: {exc!r}"
    return None


def with_free_ports(specs: list[SystemSpec]) -> list[SystemSpec]:
    """The same systems, each on its preferred port if that is free, else on a free one the OS picks."""
    taken: set[int] = set()
    out = []
    for spec in specs:
        port = spec.port if spec.port not in taken and port_free(HOST, spec.port) else free_port(HOST)
        taken.add(port)
        out.append(replace(spec, port=port))
    return out
