"""Instructions per request of each system, counted by callgrind: the same comparisons as run.py, without noise.

Usage: ``bash benchmarks/run.sh --instructions [--systems a,b] [--granian] [--redis-clients]
[--requests 3000,9000] [--connections 50]``. ``--redis-clients`` counts the Redis rate limit through each client
(RedisWire, redis-py, coredis; a redis-server is started on the load core, not counted) instead of the default
systems: see "Redis clients" in benchmarks/README.md.

This machine's requests/s move by +-15 % from one 6-second run to the next, also in the CPU time a request
takes, so ratios a few percent apart cannot be told apart by timing alone. Callgrind counts the user-space
instructions the server process executes, the same in every run give or take the event loop's batching. Each
system is started twice under ``valgrind --tool=callgrind`` (uvicorn + uvloop + httptools, one worker, ASLR
off, ``PYTHONHASHSEED=0``), sent N1 and then N2 small GETs over the same number of keep-alive connections (50
by default, as wrk does in run.py), and stopped; the difference divided by N2 - N1 is what one request costs,
start-up and shutdown excluded. ``--granian`` adds the same comparisons under granian (one worker, one runtime
thread, as ``systems.command`` starts it): granian serves from a worker process with Rust threads, so every
process is counted (``--trace-children=yes``, all threads summed) and the count is their sum.

The kernel's work (socket calls) is not counted: it is about a third of the plain proxy's CPU time here, under
uvicorn and granian alike (``stime`` against ``utime`` under wrk). The estimated ratios take it as unchanged by
a rate limit; measured, it stayed the same or grew by up to 10 us a request, so the estimates are if anything
generous to the rate limit. A ratio of raw instructions overstates the gap in requests/s, the estimate may
understate it; neither is a measurement of requests/s.

Besides each system against the plain proxy, it prints what the five rate limit headers cost uvicorn alone:
``hello-rlheaders`` (the hello world sending those headers byte for byte) minus ``hello``, next to what the
memory rate limit costs with and without them; and the floor: ``minimal-rl``, the least a Python rate limit
sending those headers can do (a dict behind a pure-ASGI middleware, see benchmarks/apps/minimal_ratelimit.py).
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import envinfo
from config import HOST, LOAD_CPUS, RESULTS_DIR, SMALL_BODY, WORK_DIR
from procs import Proc, set_affinity, start_redis, wait_http
from systems import (
    DIRECT,
    GATE_PLAIN,
    GATE_RL_REDIS,
    REDIS_CLIENTS,
    SYSTEMS,
    SystemSpec,
    command,
    environment,
    start,
    with_free_ports,
)

HELLO_RL_HEADERS = SystemSpec(
    "hello-rlheaders",
    "bare ASGI hello world sending the five rate limit headers of asgigate-rl-memory",
    "uvicorn",
    8105,
    app="hello:ratelimit_headers",
)
CONSTANT_POLICY = SystemSpec(
    "constant-headers-policy",
    "asgigate-plain with a policy appending the five headers as constants (no counting): the least a policy costs",
    "uvicorn",
    8109,
    app="constant_headers:policy",
    asgigate=True,
)
CONSTANT_ASGI = SystemSpec(
    "constant-headers-asgi",
    "asgigate-plain in an ASGI send wrapper appending the five headers as constants: the least any middleware costs",
    "uvicorn",
    8110,
    app="constant_headers:asgi",
    asgigate=True,
)
CONSTANT_POLICY_GRANIAN = SystemSpec(
    "constant-headers-policy-granian",
    "constant-headers-policy under granian",
    "granian",
    8111,
    app="constant_headers:policy",
    asgigate=True,
)
MINIMAL_RL_GRANIAN = SystemSpec(
    "minimal-rl-granian", "minimal-rl under granian", "granian", 8112, app="minimal_ratelimit:app", asgigate=True
)
COUNT_ONLY = (HELLO_RL_HEADERS, CONSTANT_POLICY, CONSTANT_ASGI, CONSTANT_POLICY_GRANIAN, MINIMAL_RL_GRANIAN)
# (the systems above are this script's only; run.py does not time them)
GRANIAN_SYSTEMS = (
    "asgigate-plain-granian", "constant-headers-policy-granian", "minimal-rl-granian", "asgigate-rl-memory-granian",
)  # fmt: skip
DEFAULT_SYSTEMS = (
    "hello", "hello-rlheaders", "asgigate-plain", "constant-headers-policy", "constant-headers-asgi", "minimal-rl",
    "asgigate-rl-memory", "asgigate-rl-memory-ietf", "asgigate-rl-memory-noheaders",
)  # fmt: skip
TARGET = 0.9  # issue 6: the memory rate limit's requests/s against the plain proxy's
KERNEL_SHARE = 1 / 3  # of the plain proxy's CPU time, spent in the kernel and not counted (see the docstring)
PLAIN = "asgigate-plain"
GRANIAN_PLAIN = "asgigate-plain-granian"
COUNTABLE = ("uvicorn", "granian")  # servers this script counts (nginx runs in C and is not what is compared)
REQUEST = b"GET /small HTTP/1.1\r\nHost: bench\r\nUser-Agent: wrk\r\n\r\n"
_TOTALS = re.compile(rb"^(?:summary|totals): (\d+)", re.MULTILINE)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--instructions", action="store_true", help=argparse.SUPPRESS)  # how run.py sends us here
    p.add_argument("--systems", default=",".join(DEFAULT_SYSTEMS), help="comma-separated system keys")
    p.add_argument("--granian", action="store_true", help="also count " + ", ".join(GRANIAN_SYSTEMS))
    p.add_argument("--redis-clients", action="store_true",
                   help="count the Redis rate limit through each client instead (RedisWire, redis-py, coredis)")
    p.add_argument("--requests", default="3000,9000", help="N1,N2: requests of the short and the long run")
    p.add_argument("--connections", type=int, default=50, help="keep-alive connections sending them")
    p.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where to write the markdown")
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def drive(port: int, requests: int, connections: int, timeout: float = 600.0) -> None:
    """Send `requests` small GETs over `connections` keep-alive connections, each waiting for its answer."""
    sel = selectors.DefaultSelector()
    pending: dict[socket.socket, bytes] = {}
    sent = done = 0
    for _ in range(min(connections, requests)):
        sock = socket.create_connection((HOST, port), timeout=30)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, sock)
        pending[sock] = b""
        sock.sendall(REQUEST)
        sent += 1
    deadline = time.monotonic() + timeout
    try:
        while done < requests:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {done} of {requests} answers after {timeout:.0f} s")
            for key, _ in sel.select(timeout=5):
                sock = key.data  # registered with itself as the data
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError(f"the server closed a connection after {done} answers")
                buffer = pending[sock] + data
                answers = buffer.count(SMALL_BODY)
                if answers:
                    if buffer.count(b"HTTP/1.1 200 ") != answers:
                        raise RuntimeError(f"an answer other than 200: {buffer[:200]!r}")
                    done += answers
                    buffer = buffer[buffer.rindex(SMALL_BODY) + len(SMALL_BODY) :]
                    for _ in range(answers):
                        if sent < requests:
                            sock.sendall(REQUEST)
                            sent += 1
                pending[sock] = buffer
    finally:
        for sock in pending:
            sock.close()
        sel.close()


def instructions(out: Path) -> int:
    match = _TOTALS.search(out.read_bytes())
    if match is None:
        raise RuntimeError(f"no totals in {out}")
    return int(match.group(1))


@dataclass
class Counted:
    spec: SystemSpec
    per_request: float | None = None
    error: str = ""


def count(
    spec: SystemSpec, upstream_port: int, requests: tuple[int, int], connections: int,
    extra_env: dict[str, str] | None = None,
) -> Counted:
    totals = []
    # granian serves from a worker process it starts (Rust threads and Python in it): every process is counted,
    # each into its own file, and the per-request cost is their sum
    children = spec.kind == "granian"
    for n in requests:
        folder = WORK_DIR / "callgrind"
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob(f"{spec.key}.{n}.*out"):
            old.unlink()
        out = folder / (f"{spec.key}.{n}.%p.out" if children else f"{spec.key}.{n}.out")
        cmd = ["setarch", "-R", "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
               *(["--trace-children=yes"] if children else []), *command(spec, upstream_port)]  # fmt: skip
        env = environment(upstream_port, {**(extra_env or {}), "PYTHONHASHSEED": "0"})
        proc = Proc(spec.key, cmd, spec.cpus, WORK_DIR / "logs" / f"callgrind-{spec.key}.log", env)
        try:
            error = wait_http(proc, HOST, spec.port, "/small", timeout=180.0)
            if error is not None:
                return Counted(spec, error=error)
            drive(spec.port, n, connections)
        except (OSError, RuntimeError) as exc:
            return Counted(spec, error=f"{exc}; last log line: {proc.tail(1).strip()}")
        finally:
            proc.stop(timeout=180.0)  # SIGTERM: the server shuts down, then valgrind writes the counts
        try:
            files = sorted(folder.glob(f"{spec.key}.{n}.*out"))
            if not files:
                raise RuntimeError(f"callgrind wrote no counts for {spec.key}")
            totals.append(sum(instructions(path) for path in files))
        except (OSError, RuntimeError) as exc:  # valgrind died, or was killed before writing its counts
            return Counted(spec, error=f"{exc}; last log line: {proc.tail(1).strip()}")
    return Counted(spec, (totals[1] - totals[0]) / (requests[1] - requests[0]))


def render(
    counted: list[Counted],
    requests: tuple[int, int],
    connections: int,
    started: datetime,
    machine: Mapping[str, str],
    versions: Mapping[str, str],
) -> str:
    """The markdown report; `machine` and `versions` (envinfo's) are data, so formatting needs none of the tools."""
    by_key = {c.spec.key: c.per_request for c in counted if c.per_request is not None}
    plain = by_key.get(PLAIN)
    lines = [
        f"# asgigate instructions per request, {started:%Y-%m-%d %H:%M}",
        "",
        "Callgrind, user space of the server process (uvicorn + uvloop + httptools, one worker; for the granian "
        "systems, all of granian's processes and threads); small GETs over "
        f"{connections} keep-alive connections; (instructions after {requests[1]:,} requests - after "
        f"{requests[0]:,}) / {requests[1] - requests[0]:,}. The kernel's share (about a third of the plain proxy's "
        f"CPU time) is not counted. See the docstring of benchmarks/instructions.py.",
        "",
        f"Machine: {', '.join(f'{k} {v}' for k, v in machine.items())}",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in versions.items())}",
        "",
        "| system | what | instructions / request | plain proxy on the same server / system |",
        "|---|---|---|---|",
    ]
    for c in counted:
        if c.per_request is None:
            lines.append(f"| {c.spec.key} | {c.spec.title} | failed: {c.error} | — |")
            continue
        base = by_key.get(GRANIAN_PLAIN) if c.spec.kind == "granian" else plain  # granian against granian
        ratio = f"{base / c.per_request:.3f}" if base else "—"
        lines.append(f"| {c.spec.key} | {c.spec.title} | {c.per_request:,.0f} | {ratio} |")
    hello, hello_rl = by_key.get("hello"), by_key.get(HELLO_RL_HEADERS.key)
    limited, bare = by_key.get("asgigate-rl-memory"), by_key.get("asgigate-rl-memory-noheaders")
    if plain and hello and hello_rl:
        headers = hello_rl - hello
        line = (
            f"The five rate limit headers cost uvicorn itself {headers:,.0f} instructions per request "
            f"({HELLO_RL_HEADERS.key} - hello): {headers / plain:.1%} of the plain proxy's {plain:,.0f}"
        )
        if limited and bare:
            line += (
                f", against {(limited - plain) / plain:.1%} for the whole memory rate limit with them "
                f"(asgigate-rl-memory - {PLAIN}) and {(bare - plain) / plain:.1%} for its decision alone "
                f"(asgigate-rl-memory-noheaders - {PLAIN})"
            )
        lines += ["", line + "."]
    floor = by_key.get("minimal-rl")
    if plain and floor and limited:
        lines += ["", (
            f"The floor, a hand-written ASGI rate limit sending the same five headers (minimal-rl), costs "
            f"{floor - plain:,.0f} instructions per request over the plain proxy; asgigate's memory rate limit "
            f"costs {limited - plain:,.0f}, {limited - floor:+,.0f} against the floor."
        )]
    lines += bounds(by_key)
    lines += redis_clients(by_key)
    return "\n".join(lines) + "\n"


def kernel_work(plain: float) -> float:
    """The kernel's work for a request, in user-space instructions: KERNEL_SHARE of the plain proxy's CPU time."""
    return plain * KERNEL_SHARE / (1 - KERNEL_SHARE)


def estimated_ratio(plain: float, system: float) -> float:
    """The requests/s ratio instructions predict if the kernel's work is the same for both systems:
    (plain user + kernel) / (system user + kernel)."""
    kernel = kernel_work(plain)
    return (plain + kernel) / (system + kernel)


def bounds(by_key: dict[str, float]) -> list[str]:
    """How far below the target the headers alone put any rate limit: a table, with the budget the target leaves."""
    plain = by_key.get(PLAIN)
    if not plain:
        return []
    total = plain + kernel_work(plain)
    budget = total / TARGET - total
    granian = GRANIAN_PLAIN
    rows = [  # what, the system, what it is compared with, the plain proxy of its server
        ("the five headers, to uvicorn alone", "hello-rlheaders", "hello", PLAIN),
        ("the five headers as constants, by a policy's two hooks", CONSTANT_POLICY.key, PLAIN, PLAIN),
        ("the five headers as constants, by an ASGI send wrapper", CONSTANT_ASGI.key, PLAIN, PLAIN),
        ("the floor: a hand-written rate limit", "minimal-rl", PLAIN, PLAIN),
        ("asgigate's memory rate limit", "asgigate-rl-memory", PLAIN, PLAIN),
        ("granian: the five headers as constants, by a policy", CONSTANT_POLICY_GRANIAN.key, granian, granian),
        ("granian: the floor", MINIMAL_RL_GRANIAN.key, granian, granian),
        ("granian: asgigate's memory rate limit", "asgigate-rl-memory-granian", granian, granian),
    ]
    lines = [
        "",
        f"Against the target ({TARGET}x the plain proxy's requests/s): if the kernel's work, about "
        f"{KERNEL_SHARE:.0%} of the plain proxy's CPU time, is the same with a rate limit, the target allows a rate "
        f"limit {budget:,.0f} instructions per request in all under uvicorn. What each step costs, and the ratio "
        "that cost alone would give against the plain proxy on the same server:",
        "",
        "| what | instructions / request over its base | estimated requests/s ratio |",
        "|---|---|---|",
    ]
    shown = False
    for what, key, base, server_plain in rows:
        if key in by_key and base in by_key and server_plain in by_key:
            extra = by_key[key] - by_key[base]
            ratio = estimated_ratio(by_key[server_plain], by_key[server_plain] + extra)
            lines.append(f"| {what} ({key} - {base}) | {extra:,.0f} | {ratio:.3f} |")
            shown = True
    return lines if shown else []


REDIS_CLIENT_GOAL = 0.85  # issue 16: a client library replaces RedisWire if it keeps this share of its requests/s


def redis_clients(by_key: dict[str, float]) -> list[str]:
    """The Redis rate limit through each client against RedisWire: instructions, and the requests/s ratio they give."""
    plain, wire = by_key.get(PLAIN), by_key.get(GATE_RL_REDIS.key)
    if not plain or not wire or not any(spec.key in by_key for spec in REDIS_CLIENTS):
        return []
    kernel = kernel_work(plain)
    lines = [
        "",
        "The Redis rate limit's fixed window through each client, against asgigate's RedisWire "
        f"({GATE_RL_REDIS.key}, {wire - plain:+,.0f} instructions per request over the plain proxy). The estimated "
        "ratio is (RedisWire + kernel) / (client + kernel), with the kernel's work taken as the plain proxy's "
        f"({kernel:,.0f} instructions' worth) for both: a client that sends each call in a write of its own makes "
        "more system calls than RedisWire, which sends a loop iteration's calls in one, so the estimate is if "
        "anything generous to it.",
        "",
        "| client | instructions / request | over RedisWire | estimated requests/s vs RedisWire |",
        "|---|---|---|---|",
        f"| RedisWire ({GATE_RL_REDIS.key}) | {wire:,.0f} | — | 1.000 |",
    ]
    for spec in REDIS_CLIENTS:
        if spec.key in by_key:
            own = by_key[spec.key]
            ratio = (wire + kernel) / (own + kernel)
            mark = f"{ratio:.3f} ({'reaches' if ratio >= REDIS_CLIENT_GOAL else 'below'} {REDIS_CLIENT_GOAL})"
            lines.append(f"| {spec.title.split(' through ', 1)[-1]} ({spec.key}) | {own:,.0f} | {own - wire:+,.0f} "
                         f"| {mark} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = [tool for tool in ("valgrind", "setarch", "nginx", "taskset") if shutil.which(tool) is None]
    if missing:
        log(f"not found: {', '.join(missing)} (bash benchmarks/run.sh --instructions installs them)")
        return 2
    n1, n2 = (int(n) for n in args.requests.split(","))
    if not 0 < n1 < n2:
        log("--requests N1,N2 needs 0 < N1 < N2")
        return 2
    known = {spec.key: spec for spec in [*SYSTEMS, *COUNT_ONLY, *REDIS_CLIENTS]}
    keys = [key.strip() for key in args.systems.split(",") if key.strip()]
    if args.redis_clients:
        keys = [GATE_PLAIN.key, GATE_RL_REDIS.key, *(spec.key for spec in REDIS_CLIENTS)]
    if args.granian:
        keys += [key for key in GRANIAN_SYSTEMS if key not in keys]
    unknown = [key for key in keys if key not in known or known[key].kind not in COUNTABLE or known[key].auth]
    if unknown:
        usable = sorted(k for k, s in known.items() if s.kind in COUNTABLE and not s.auth)
        log(f"not a system this script can count: {', '.join(unknown)}; use some of {', '.join(usable)}")
        return 2
    started = datetime.now()
    set_affinity([os.getpid()], LOAD_CPUS)  # the requests are sent from the load core, as wrk's are
    direct, *specs = with_free_ports([DIRECT, *(known[key] for key in keys)])
    upstream, error = start(direct, direct.port)
    counted: list[Counted] = []
    redis: Proc | None = None
    extra_env: dict[str, str] = {}
    try:
        if error is not None:
            log(f"the nginx upstream did not start: {error}")
            return 1
        if any(spec.redis for spec in specs):  # on the load core, like the upstream; not counted
            redis, found = start_redis(HOST, LOAD_CPUS, WORK_DIR / "logs" / "redis.log", WORK_DIR)
            if redis is None:
                log(f"cannot count the Redis systems: {found}")
                return 1
            # a store call under callgrind takes far longer than the timed runs' 0.5 s allow
            extra_env.update(RATELIMIT_REDIS_URL=found, RATELIMIT_REDIS_TIMEOUT="60")
        for spec in specs:
            log(f"counting {spec.key} ({n1:,} then {n2:,} requests under callgrind)")
            counted.append(count(spec, direct.port, (n1, n2), args.connections, extra_env))
            result = counted[-1]
            log(f"  {result.per_request:,.0f} instructions / request" if result.per_request else f"  {result.error}")
    finally:
        upstream.stop()
        if redis is not None:
            redis.stop()
    text = render(counted, (n1, n2), args.connections, started, envinfo.machine(), envinfo.versions())
    print(text)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    path = args.results_dir / f"{started:%Y-%m-%d_%H%M}_instructions.md"
    path.write_text(text)
    log(f"written to {path}")
    return 0 if all(c.per_request is not None for c in counted) else 1


if __name__ == "__main__":
    sys.exit(main())
