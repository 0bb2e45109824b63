"""Turns one run's measurements into markdown: absolute figures, ratios, and the targets with PASS/FAIL."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from config import BOTH_CPUS, LOAD_CPUS, SUT_CPUS, Settings
from systems import (
    AIOHTTP_PROXY,
    ASGIPROXY,
    DIRECT,
    EDGE_SYSTEMS,
    GATE_FULL,
    GATE_JWT,
    GATE_PLAIN,
    GATE_RL_MEMORY,
    GATE_RL_REDIS,
    GRANIAN_PLAIN,
    GRANIAN_RL_MEMORY,
    HELLO,
    NGINX_PROXY,
    REDIS_CLIENTS,
    SystemSpec,
)
from workloads import LARGE, LATENCY, SLOW, SMALL, UPLOAD, WORKLOADS, Measurement

NA = "—"


@dataclass
class RunResults:
    settings: Settings
    started: datetime
    machine: dict[str, str]
    versions: dict[str, str]
    systems: list[SystemSpec]
    skipped: dict[str, str] = field(default_factory=dict)  # system key -> why it was not measured
    raw: dict[tuple[str, str], list[Measurement]] = field(default_factory=dict)  # (system, workload) -> runs
    idle_rss_mib: dict[str, float] = field(default_factory=dict)
    scaling: dict[str, Measurement] = field(default_factory=dict)
    scaling_raw: dict[str, list[Measurement]] = field(default_factory=dict)
    scaling_skipped: dict[str, str] = field(default_factory=dict)
    import_times: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    finished: datetime | None = None
    combined: dict[tuple[str, str], Measurement] = field(default_factory=dict)
    background_cpu: dict[str, float] = field(default_factory=dict)  # % of all CPUs busy with nothing of ours
    retried: int = 0  # runs measured again because other processes were busy
    jwt_verify: dict[str, float] | None = None  # BearerAuth.verify in-process: uncached_us, cached_us

    def get(self, system: str, workload: str) -> Measurement | None:
        return self.combined.get((system, workload))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def _num(value: float | None, fmt: str = ",.0f") -> str:
    if value is None or math.isnan(value):
        return NA
    return format(value, fmt)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _x(value: float | None) -> str:
    return NA if value is None else f"{value:.2f}x"


class Figures:
    """Named accessors over one run's combined measurements (None when not measured)."""

    def __init__(self, res: RunResults) -> None:
        self.res = res

    def m(self, system: SystemSpec, workload: str) -> Measurement | None:
        return self.res.get(system.key, workload)

    def rps(self, system: SystemSpec, workload: str = SMALL.key) -> float | None:
        m = self.m(system, workload)
        return m.rps if m else None

    def mib_s(self, system: SystemSpec, workload: str) -> float | None:
        m = self.m(system, workload)
        return m.mib_s if m else None

    def p(self, system: SystemSpec, workload: str, which: str) -> float | None:
        m = self.m(system, workload)
        return getattr(m, which) if m else None

    def added(self, system: SystemSpec, which: str) -> float | None:
        own, base = self.p(system, LATENCY.key, which), self.p(DIRECT, LATENCY.key, which)
        return None if own is None or base is None else own - base

    def slow_overhead_ms(self, system: SystemSpec) -> float | None:
        own, base = self.p(system, SLOW.key, "p99_us"), self.p(DIRECT, SLOW.key, "p99_us")
        return None if own is None or base is None else (own - base) / 1000

    def scaling_ratio(self, one: str, two: str) -> float | None:
        a, b = self.res.scaling.get(one), self.res.scaling.get(two)
        return _ratio(b.rps if b else None, a.rps if a else None)


def _errors(m: Measurement | None) -> str:
    """Error count, with the kinds when there are any: "12 (timeout)"."""
    if m is None:
        return NA
    if not m.errors:
        return "0"
    return f"{m.errors} ({', '.join(sorted(m.error_detail))})"


def _ms(us: float | None) -> str:
    return _num(None if us is None else us / 1000, ".2f")


def throughput_table(f: Figures) -> str:
    rows = []
    for s in f.res.systems:
        small, large, up = f.m(s, SMALL.key), f.m(s, LARGE.key), f.m(s, UPLOAD.key)
        rows.append([
            s.key,
            _num(small.rps if small else None), _ms(small.p50_us if small else None),
            _ms(small.p99_us if small else None), _errors(small),
            _num(large.mib_s if large else None, ",.1f"), _num(large.peak_rss_mib if large else None, ".1f"),
            _num(up.mib_s if up else None, ",.1f"), _num(up.peak_rss_mib if up else None, ".1f"),
            _errors(large) + " / " + _errors(up),
            _num(f.res.idle_rss_mib.get(s.key), ".1f"),
        ])  # fmt: skip
    header = ["system", "small req/s", "p50 ms", "p99 ms", "errors", "GET MiB/s", "GET peak RSS MiB",
              "POST MiB/s", "POST peak RSS MiB", "GET / POST errors", "idle RSS MiB"]  # fmt: skip
    return _table(header, rows)


def latency_table(f: Figures) -> str:
    rows = []
    for s in f.res.systems:
        slow, one = f.m(s, SLOW.key), f.m(s, LATENCY.key)
        vs_nginx = f.p(NGINX_PROXY, LATENCY.key, "p50_us")
        rows.append([
            s.key,
            _num(slow.rps if slow else None), _ms(slow.p50_us if slow else None),
            _ms(slow.p99_us if slow else None), _num(f.slow_overhead_ms(s), "+.2f"),
            _errors(slow), _num(slow.peak_rss_mib if slow else None, ".1f"),
            _num(one.p50_us if one else None), _num(one.p99_us if one else None),
            _num(f.added(s, "p50_us"), "+,.0f"), _num(f.added(s, "p99_us"), "+,.0f"),
            _num(one.p50_us - vs_nginx if one and vs_nginx is not None else None, "+,.0f"),
        ])  # fmt: skip
    header = ["system", "slow req/s", "slow p50 ms", "slow p99 ms", "p99 over direct ms", "slow errors",
              "slow peak RSS MiB", "1-conn p50 µs", "1-conn p99 µs", "added p50 µs", "added p99 µs",
              "p50 vs nginx-proxy µs"]  # fmt: skip
    return _table(header, rows)


def ratio_table(f: Figures) -> str:
    rows = []
    for s in f.res.systems:
        if s.key == DIRECT.key:
            continue
        rows.append([
            s.key,
            _x(_ratio(f.rps(s), f.rps(HELLO))),
            _x(_ratio(f.rps(s), f.rps(NGINX_PROXY))),
            _x(_ratio(f.mib_s(s, LARGE.key), f.mib_s(NGINX_PROXY, LARGE.key))),
            _x(_ratio(f.mib_s(s, UPLOAD.key), f.mib_s(NGINX_PROXY, UPLOAD.key))),
            _x(_ratio(f.rps(s), f.rps(ASGIPROXY))),
            _x(_ratio(f.mib_s(s, LARGE.key), f.mib_s(ASGIPROXY, LARGE.key))),
            _x(_ratio(f.mib_s(s, UPLOAD.key), f.mib_s(ASGIPROXY, UPLOAD.key))),
            _x(_ratio(f.rps(s, SLOW.key), f.rps(ASGIPROXY, SLOW.key))),
        ])  # fmt: skip
    header = [
        "system",
        "small vs hello",
        "small vs nginx-proxy",
        "GET MiB/s vs nginx-proxy",
        "POST MiB/s vs nginx-proxy",
        "small vs asgiproxy",
        "GET vs asgiproxy",
        "POST vs asgiproxy",
        "slow req/s vs asgiproxy",
    ]
    table = _table(header, rows)
    full_vs_plain = [
        ["small req/s", _x(_ratio(f.rps(GATE_FULL), f.rps(GATE_PLAIN)))],
        ["1 MiB GET MiB/s", _x(_ratio(f.mib_s(GATE_FULL, LARGE.key), f.mib_s(GATE_PLAIN, LARGE.key)))],
        ["1 MiB POST MiB/s", _x(_ratio(f.mib_s(GATE_FULL, UPLOAD.key), f.mib_s(GATE_PLAIN, UPLOAD.key)))],
        ["slow req/s", _x(_ratio(f.rps(GATE_FULL, SLOW.key), f.rps(GATE_PLAIN, SLOW.key)))],
        [
            "1-conn p50 latency",
            _x(_ratio(f.p(GATE_FULL, LATENCY.key, "p50_us"), f.p(GATE_PLAIN, LATENCY.key, "p50_us"))),
        ],
    ]
    return (
        table + "\n\nasgigate full edge stack vs plain proxy:\n\n" + _table(["figure", "full / plain"], full_vs_plain)
    )


Check = Callable[[Figures, SystemSpec], tuple[str, bool | None]]


def _t_small(f: Figures, s: SystemSpec) -> tuple[str, bool | None]:
    r = _ratio(f.rps(s), f.rps(HELLO))
    return _x(r), None if r is None else r >= 0.40


def _t_full(f: Figures, s: SystemSpec) -> tuple[str, bool | None]:
    if s.key != GATE_PLAIN.key:
        return NA, None
    r = _ratio(f.rps(GATE_FULL), f.rps(GATE_PLAIN))
    return _x(r), None if r is None else r >= 0.75


def _t_edge(system: SystemSpec, goal: float) -> Check:
    def check(f: Figures, s: SystemSpec) -> tuple[str, bool | None]:
        if s.key != GATE_PLAIN.key:
            return NA, None
        r = _ratio(f.rps(system), f.rps(GATE_PLAIN))
        return _x(r), None if r is None else r >= goal

    return check


def _t_large(f: Figures, s: SystemSpec) -> tuple[str, bool | None]:
    r = _ratio(f.mib_s(s, LARGE.key), f.mib_s(NGINX_PROXY, LARGE.key))
    m = f.m(s, LARGE.key)
    if r is None or m is None:
        return NA, None
    return f"{r:.2f}x, {m.peak_rss_mib:.1f} MiB", r >= 0.8 and m.peak_rss_mib < 80


def _t_latency(f: Figures, s: SystemSpec) -> tuple[str, bool | None]:
    added = f.added(s, "p50_us")
    return (NA, None) if added is None else (f"{added:+.0f} µs", added <= 250)


def _t_slow(f: Figures, s: SystemSpec) -> tuple[str, bool | None]:
    m = f.m(s, SLOW.key)
    if m is None:
        return NA, None
    return f"{_errors(m)} errors, p99 {m.p99_us / 1000:.1f} ms", m.errors == 0 and m.p99_us <= 60_000


def _t_workers(f: Figures, s: SystemSpec) -> tuple[str, bool | None]:
    if s.key == GATE_PLAIN.key:
        r = f.scaling_ratio("asgigate-1w", "asgigate-2w")
    elif s.key == HELLO.key:
        r = f.scaling_ratio("hello-1w", "hello-2w")
    else:
        return NA, None
    return _x(r), None if r is None else r >= 1.7


TARGETS: list[tuple[str, str, Check]] = [
    ("plain proxy small GET req/s", ">= 0.40 x bare ASGI hello world", _t_small),
    ("full edge stack req/s", ">= 0.75 x plain proxy", _t_full),
    ("memory rate limit", ">= 0.9 x plain proxy", _t_edge(GATE_RL_MEMORY, 0.9)),
    ("Redis rate limit", ">= 0.6 x plain proxy", _t_edge(GATE_RL_REDIS, 0.6)),
    ("1 MiB responses MiB/s", ">= 0.8 x nginx reverse proxy, peak RSS < 80 MiB", _t_large),
    ("added latency at 1 conn p50", "<= 250 µs over direct", _t_latency),
    ("500 conns to 50 ms upstream", "no errors, p99 <= 60 ms", _t_slow),
    ("2 workers", ">= 1.7 x one worker", _t_workers),
]


def _verdict(ok: bool | None, skipped: str | None) -> str:
    if ok is None:
        return "SKIP" + (f" ({skipped})" if skipped else "")
    return "PASS" if ok else "FAIL"


def targets_table(f: Figures) -> str:
    gate_skip = f.res.skipped.get(GATE_PLAIN.key)
    own = {"full edge stack req/s": GATE_FULL, "memory rate limit": GATE_RL_MEMORY, "Redis rate limit": GATE_RL_REDIS}
    rows = []
    for name, goal, check in TARGETS:
        value, ok = check(f, GATE_PLAIN)
        peers = [check(f, p) for p in (NGINX_PROXY, AIOHTTP_PROXY, ASGIPROXY, HELLO)]
        system_skip = f.res.skipped.get(own[name].key) if name in own else None
        why = "asgigate not measured" if gate_skip else (system_skip.splitlines()[0] if system_skip else None)
        rows.append([
            name, goal, value, _verdict(ok, why),
            *(v if o is None else f"{v} {_verdict(o, None)}" for v, o in peers),
        ])  # fmt: skip
    header = ["target", "goal", "asgigate", "result", "nginx-proxy (ref)", "aiohttp-proxy (ref)", "asgiproxy (ref)",
              "hello (ref)"]  # fmt: skip
    return _table(header, rows)


EDGE_GOALS: dict[str, tuple[float, str]] = {
    GATE_FULL.key: (0.75, "full edge stack >= 0.75 x plain proxy"),
    GATE_RL_MEMORY.key: (0.9, "memory rate limit >= 0.9 x plain proxy"),
    GATE_RL_REDIS.key: (0.6, "Redis rate limit >= 0.6 x plain proxy"),
}


def _cost_us(f: Figures, s: SystemSpec) -> float | None:
    """CPU time per request over the plain proxy: 1/rps - 1/plain_rps (one worker, one saturated core)."""
    own, plain = f.rps(s), f.rps(GATE_PLAIN)
    if not own or not plain:
        return None
    return (1 / own - 1 / plain) * 1e6


def edge_table(f: Figures) -> str:
    rows = []
    plain_p50 = f.p(GATE_PLAIN, LATENCY.key, "p50_us")
    for s in (GATE_PLAIN, *EDGE_SYSTEMS):
        if s.key not in {x.key for x in f.res.systems}:
            continue
        ratio = _ratio(f.rps(s), f.rps(GATE_PLAIN))
        goal = EDGE_GOALS.get(s.key)
        target = NA if goal is None else f"{goal[1]}: {_verdict(None if ratio is None else ratio >= goal[0], None)}"
        p50 = f.p(s, LATENCY.key, "p50_us")
        rows.append([
            s.key, s.title, _num(f.rps(s)), _x(ratio),
            NA if s is GATE_PLAIN else _num(_cost_us(f, s), "+,.1f"),
            _num(p50), NA if s is GATE_PLAIN else _num(None if p50 is None or plain_p50 is None else p50 - plain_p50,
                                                       "+,.0f"),
            _errors(f.m(s, SMALL.key)),
            target if f.res.skipped.get(s.key) is None else f"SKIP ({f.res.skipped[s.key].splitlines()[0]})",
        ])  # fmt: skip
    header = ["system", "what", "small req/s", "vs plain", "µs/request over plain", "1-conn p50 µs",
              "1-conn p50 vs plain µs", "errors", "target"]  # fmt: skip
    table = _table(header, rows)
    cost = _cost_us(f, GATE_JWT)
    line = f"JWT validation cost: {_num(cost, '+,.1f')} µs per request (1/jwt_rps - 1/plain_rps, small GET)"
    vc = f.res.jwt_verify
    if vc:
        line += (
            f"; in-process `BearerAuth.verify`: {vc['uncached_us']:,.0f} µs with a signature check (RS256, "
            f"2048-bit, cache off), {vc['cached_us']:,.1f} µs from the verified-token cache"
        )
    return (
        table + "\n\n" + line + ".\n\nwrk repeats one token, so after the first request `asgigate-jwt` and "
        "`asgigate-full` take the verified-token cache path (what a client reusing its token pays); the "
        "in-process figures say what a token seen for the first time costs."
    )


REDIS_CLIENT_GOAL = 0.85  # issue 16: a client library replaces RedisWire if it keeps this share of its requests/s


def _per_round(f: Figures, system: SystemSpec, base: SystemSpec) -> list[float]:
    """system / base, run by run: runs of the same round are next to each other in time (interleaved)."""
    mine, theirs = f.res.raw.get((system.key, SMALL.key), []), f.res.raw.get((base.key, SMALL.key), [])
    return [a.rps / b.rps for a, b in zip(mine, theirs, strict=False) if b.rps]


def redis_clients_table(f: Figures) -> str:
    """The Redis rate limit through each client: requests/s, and against RedisWire, median and run by run."""
    measured = {s.key for s in f.res.systems}
    if not any(s.key in measured for s in REDIS_CLIENTS):
        return ""
    rows = []
    for s in (GATE_PLAIN, GATE_RL_REDIS, *REDIS_CLIENTS):
        runs = sorted(m.rps for m in f.res.raw.get((s.key, SMALL.key), []))
        rounds = sorted(_per_round(f, s, GATE_RL_REDIS))
        wire_us = None if s is GATE_PLAIN else _cost_over(f, s, GATE_RL_REDIS)
        rows.append([
            s.key, _num(f.rps(s)), f"{runs[0]:,.0f}-{runs[-1]:,.0f}" if runs else NA,
            _x(_ratio(f.rps(s), f.rps(GATE_RL_REDIS))),
            f"{rounds[len(rounds) // 2]:.2f}x ({rounds[0]:.2f}-{rounds[-1]:.2f})" if rounds else NA,
            _x(_ratio(f.rps(s), f.rps(GATE_PLAIN))), _num(wire_us, "+,.1f"),
            _num(f.p(s, LATENCY.key, "p50_us")), _errors(f.m(s, SMALL.key)),
        ])  # fmt: skip
    header = ["system", "small req/s (median)", "min-max", "vs RedisWire", "vs RedisWire run by run: median (range)",
              "vs plain", "µs/request over RedisWire", "1-conn p50 µs", "errors"]  # fmt: skip
    redispy = REDIS_CLIENTS[0]
    ratio = _ratio(f.rps(redispy), f.rps(GATE_RL_REDIS))
    verdict = NA if ratio is None else "reaches" if ratio >= REDIS_CLIENT_GOAL else "falls short of"
    return (
        _table(header, rows) + f"\n\nredis-py / RedisWire: {_x(ratio)} in median requests/s, which {verdict} "
        f"the {REDIS_CLIENT_GOAL:.0%} that would replace RedisWire with it (issue 16). Timed ratios here move "
        "by 10 % or more from run to run: see the instruction counts (benchmarks/README.md, 'Redis clients')."
    )


def _cost_over(f: Figures, s: SystemSpec, base: SystemSpec) -> float | None:
    own, other = f.rps(s), f.rps(base)
    if not own or not other:
        return None
    return (1 / own - 1 / other) * 1e6


SERVERS = (("uvicorn", GATE_PLAIN, GATE_RL_MEMORY), ("granian", GRANIAN_PLAIN, GRANIAN_RL_MEMORY))


def servers_table(f: Figures) -> str:
    """The plain proxy and the memory rate limit under each server, the ratio within the same server."""
    measured = {s.key for s in f.res.systems}
    rows = []
    for server, plain, limited in SERVERS:
        if plain.key not in measured and limited.key not in measured:
            continue
        rows.append([
            server, _num(f.rps(plain)), _num(f.rps(limited)), _x(_ratio(f.rps(limited), f.rps(plain))),
            _num(f.p(plain, LATENCY.key, "p50_us")), _num(f.p(limited, LATENCY.key, "p50_us")),
        ])  # fmt: skip
    header = ["server (one worker)", "plain proxy req/s", "memory rate limit req/s", "rate limit / plain",
              "plain 1-conn p50 µs", "rate limit 1-conn p50 µs"]  # fmt: skip
    return _table(header, rows) if rows else "Not measured in this run."


def scaling_table(f: Figures) -> str:
    rows = []
    for name, one, two in (
        ("hello", "hello-1w", "hello-2w"),
        ("asgigate plain", "asgigate-1w", "asgigate-2w"),
    ):
        a, b = f.res.scaling.get(one), f.res.scaling.get(two)
        reason = f.res.scaling_skipped.get(one) or f.res.scaling_skipped.get(two) or ""
        rows.append(
            [
                name,
                _num(a.rps if a else None),
                _num(b.rps if b else None),
                _x(f.scaling_ratio(one, two)),
                reason.splitlines()[0] if reason else "",
            ]
        )
    return _table(["system", "1 worker req/s", "2 workers req/s", "2w / 1w", "note"], rows)


def misc_table(f: Figures) -> str:
    it = f.res.import_times
    rows = [
        [
            "`import asgigate` (-X importtime, cumulative)",
            _num(it["importtime_ms"], ".1f") + " ms" if it else NA,
        ],
        [
            "`import asgigate` (wall, minus bare interpreter)",
            _num(it["wall_ms"], ".1f") + " ms" if it else NA,
        ],
        [
            "idle RSS, one asgigate worker (plain)",
            _num(f.res.idle_rss_mib.get(GATE_PLAIN.key), ".1f") + " MiB",
        ],
        [
            "idle RSS, one asgigate worker (full stack)",
            _num(f.res.idle_rss_mib.get(GATE_FULL.key), ".1f") + " MiB",
        ],
        ["idle RSS, bare hello world (reference)", _num(f.res.idle_rss_mib.get(HELLO.key), ".1f") + " MiB"],
    ]
    return _table(["figure", "value"], rows)


def raw_table(f: Figures) -> str:
    rows = []
    for w in WORKLOADS:
        for s in f.res.systems:
            runs = f.res.raw.get((s.key, w.key))
            if not runs:
                continue
            rows.append(
                [
                    w.key,
                    s.key,
                    ", ".join(f"{r.rps:,.0f}" for r in runs),
                    ", ".join(f"{r.p50_us / 1000:.2f}" for r in runs),
                    ", ".join(f"{r.p99_us / 1000:.2f}" for r in runs),
                    ", ".join(str(r.errors) for r in runs),
                    ", ".join(f"{r.foreign_cpu_pct:.0f}" for r in runs),
                ]
            )
    for key, runs in f.res.scaling_raw.items():
        rows.append(
            [
                "scaling",
                key,
                ", ".join(f"{r.rps:,.0f}" for r in runs),
                ", ".join(f"{r.p50_us / 1000:.2f}" for r in runs),
                ", ".join(f"{r.p99_us / 1000:.2f}" for r in runs),
                ", ".join(str(r.errors) for r in runs),
                ", ".join(f"{r.foreign_cpu_pct:.0f}" for r in runs),
            ]
        )
    header = ["workload", "system", "req/s per run", "p50 ms per run", "p99 ms per run", "errors", "other CPU %"]
    return _table(header, rows)


def _foreign_summary(res: RunResults) -> str:
    runs = [r for rs in (*res.raw.values(), *res.scaling_raw.values()) for r in rs]
    if not runs:
        return ""
    values = sorted(r.foreign_cpu_pct for r in runs)
    limit = res.settings.max_other_cpu
    busy = sum(v > limit for v in values)
    return (
        f"CPU used by other people's processes during the kept runs (% of the whole machine): median "
        f"{values[len(values) // 2]:.0f}%, max {values[-1]:.0f}%; {busy} of {len(values)} runs above {limit:g}% "
        f"after {res.retried} retries (up to {res.settings.retries} per run)"
        + (": a shared, busy machine, expect noise and prefer the ratios." if busy else ".")
    )


def render(res: RunResults) -> str:
    f = Figures(res)
    st = res.settings
    mode = "quick (smoke test: figures are rough)" if st.quick else "full"
    out = [
        f"# asgigate benchmarks, {res.started:%Y-%m-%d %H:%M}",
        "",
        f"Mode: {mode}. Each figure is the median of {st.repeats} run(s) of {st.duration_s:g} s after a "
        f"{st.warmup_s:g} s warm-up; runs of all systems are interleaved, so compare ratios within this file "
        "only. Errors are summed over the runs; peak RSS is the maximum.",
        "",
        f"Pinning: system under test on CPU {SUT_CPUS}; wrk (1 thread), the nginx upstream and the "
        f"orchestrator on CPU {LOAD_CPUS}. Worker scaling: everything allowed on CPUs {BOTH_CPUS}, "
        "wrk with 2 threads.",
        "",
        "Machine: " + ", ".join(f"{k} {v}" for k, v in res.machine.items()),
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in res.versions.items()),
        "",
    ]
    if res.background_cpu:
        busy = ", ".join(f"{v:.0f}% {k}" for k, v in res.background_cpu.items())
        noisy = max(res.background_cpu.values()) > 5
        out += [
            f"Machine CPU busy while nothing of this run was running: {busy}"
            + (" (other processes were busy: expect noise)." if noisy else "."),
            "",
        ]
    summary = _foreign_summary(res)
    if summary:
        out += [summary, ""]
    if res.finished:
        out += [f"Started {res.started:%Y-%m-%d %H:%M:%S}, finished {res.finished:%H:%M:%S}.", ""]
    if res.skipped:
        out += ["Not measured:", ""] + [f"- {k}: {v.splitlines()[0]}" for k, v in res.skipped.items()] + [""]
    out += [f"Note: {n}" for n in res.notes] + ([""] if res.notes else [])
    legend = [[s.key, s.title, s.cpus, str(s.workers)] for s in res.systems]
    out += ["Systems (see benchmarks/README.md):", "", _table(["key", "what", "CPUs", "workers"], legend), ""]
    out += [
        "## Targets", "", targets_table(f), "",
        "`asgigate` is the plain proxy route (for the next three rows: the full stack, the memory and the Redis "
        "rate limit systems, each against the plain proxy); the last four columns "
        "apply the same goals to the reference systems, for context.", "",
        f"## Throughput ({SMALL.title}, {LARGE.title}, {UPLOAD.title})", "", throughput_table(f), "",
        f"## Latency ({SLOW.title}; {LATENCY.title}, minus nginx direct)", "", latency_table(f), "",
        "## Ratios (same run only)", "", ratio_table(f), "",
        "## Edge stack costs (small GET req/s, same run)", "", edge_table(f), "",
        "## Servers (small GET, same run)", "", servers_table(f), "",
        *(["## Redis clients (small GET, same run)", "", redis_clients_table(f), ""] if redis_clients_table(f)
          else []),
        "## Worker scaling (small JSON GET @50 conns)", "", scaling_table(f), "",
        "## asgigate import time and idle memory", "", misc_table(f), "",
        "## Raw runs", "", raw_table(f), "",
    ]  # fmt: skip
    return "\n".join(out)
