"""Run every system under every workload, side by side, and print/write the comparison.

Usage (see benchmarks/README.md): ``bash benchmarks/run.sh [--quick]``, which bootstraps the tools and calls
this file with the project's venv Python.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import sys
import time
from datetime import datetime
from pathlib import Path
from types import FrameType

from config import BOTH_CPUS, ECHO_MODULE, HOST, LOAD_CPUS, PYTHON, RESULTS_DIR, WORK_DIR, Settings
from envinfo import asgigate_import_error, import_time, machine, versions
from procs import Proc, cpu_busy_percent, process_tree, rss_mib, set_affinity, start_redis, wait_quiet
from report import RunResults, render
from systems import (
    DIRECT,
    GATE_PLAIN,
    GATE_RL_REDIS,
    REDIS_CLIENTS,
    SCALING,
    SYSTEMS,
    SystemSpec,
    start,
    with_free_ports,
)
from tokens import BenchJwt, make_jwt, verify_cost_us
from workloads import LATENCY, SMALL, WORKLOADS, Measurement, Workload, WrkError, combine, run_wrk

WORKLOAD_KEYS = [w.key for w in WORKLOADS]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke test: 2 s runs, 1 s warm-up, 1 repeat")
    p.add_argument("--duration", type=float, help="seconds per measured run (default 8, quick 2)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per system and workload (default 3, quick 1)")
    p.add_argument("--repeats", type=int, help="measured runs per system and workload (default 3, quick 1)")
    p.add_argument("--systems", help="comma-separated system keys to run (nginx-direct always runs)")
    p.add_argument(
        "--workloads", help="comma-separated workload keys to run (default: all; " + ", ".join(WORKLOAD_KEYS) + ")"
    )
    p.add_argument(
        "--redis-clients",
        action="store_true",
        help="the Redis rate limit through each client (RedisWire, redis-py, coredis) beside the plain proxy, "
        "small GET and 1-conn latency only, no worker scaling (benchmarks/README.md, 'Redis clients')",
    )
    p.add_argument("--no-scaling", action="store_true", help="skip the 1 vs 2 workers comparison")
    p.add_argument("--max-minutes", type=float, default=60.0, help="stop measuring after this long (default 60)")
    p.add_argument(
        "--max-other-cpu",
        type=float,
        default=20.0,
        help="retry a run if other people's processes used more than this %% of the machine (default 20)",
    )
    p.add_argument("--retries", type=int, help="retries of such a disturbed run (default 1, quick 0)")
    p.add_argument(
        "--wait-quiet",
        type=float,
        help="wait up to this many seconds for the machine to be < 10%% busy before starting (default 300, quick 0)",
    )
    p.add_argument(
        "--results-dir",
        type=Path,
        help="where to write the markdown (default: results/, or .work/results/ for --quick)",
    )
    return p.parse_args(argv)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def preflight() -> list[str]:
    problems = [f"`{tool}` not found" for tool in ("wrk", "nginx", "taskset") if shutil.which(tool) is None]
    if not ECHO_MODULE.exists():
        problems.append(f"nginx echo module missing ({ECHO_MODULE}; Debian package libnginx-mod-http-echo)")
    if not Path(PYTHON).exists():
        problems.append(f"python not found: {PYTHON}")
    return problems


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Bench:
    def __init__(
        self, settings: Settings, res: RunResults, jwt: BenchJwt | None, workloads: list[Workload] | None = None
    ) -> None:
        self.settings = settings
        self.workloads = workloads or WORKLOADS
        self.res = res
        self.procs: dict[str, Proc] = {}
        self.jwt = jwt
        self.env: dict[str, str] = jwt.env() if jwt else {}  # added to every system's environment
        self.headers = [jwt.header] if jwt else []  # sent by wrk to every system, so request sizes are equal
        self.redis: Proc | None = None
        self.redis_error: str | None = None
        self.upstream_port = next(s.port for s in res.systems if s.key == DIRECT.key)
        self.deadline = time.monotonic() + settings.max_minutes * 60

    def out_of_time(self) -> bool:
        if time.monotonic() < self.deadline:
            return False
        note = f"stopped measuring after --max-minutes {self.settings.max_minutes:g}: some figures are missing"
        if note not in self.res.notes:
            self.res.notes.append(note)
            log(note)
        return True

    def start_redis(self) -> None:
        """A throw-away redis-server (no persistence) on a free port, on the load core like the upstream."""
        log(f"start redis-server, CPUs {LOAD_CPUS}")
        self.redis, found = start_redis(HOST, LOAD_CPUS, WORK_DIR / "logs" / "redis.log", WORK_DIR)
        if self.redis is None:
            self.redis_error = found
        else:
            self.env["RATELIMIT_REDIS_URL"] = found

    def start_all(self, specs: list[SystemSpec], gate_error: str | None, skipped: dict[str, str]) -> None:
        for spec in specs:
            if spec.asgigate and gate_error:
                skipped[spec.key] = f"asgigate does not import yet ({gate_error})"
                log(f"skip {spec.key}: {skipped[spec.key]}")
                continue
            why = (
                "no benchmark token (joserfc missing: pip install -e '.[auth]')" if spec.auth and self.jwt is None
                else self.redis_error if spec.redis and self.redis is None
                else None
            )  # fmt: skip
            if why:
                skipped[spec.key] = why
                log(f"skip {spec.key}: {why}")
                continue
            log(f"start {spec.key} on port {spec.port}, CPUs {spec.cpus}")
            auth = dict([h.split(": ", 1) for h in self.headers])
            proc, error = start(spec, self.upstream_port, self.env, auth)
            if error is not None:
                proc.stop()
                skipped[spec.key] = error
                log(f"skip {spec.key}: {error}")
                continue
            self.procs[spec.key] = proc

    def stop(self, keys: list[str]) -> None:
        for key in reversed(keys):
            proc = self.procs.pop(key, None)
            if proc is not None:
                proc.stop()

    def run(
        self, spec: SystemSpec, workload: Workload, label: str, *, warm: bool, cpus: str = LOAD_CPUS, threads: int = 1
    ) -> Measurement | None:
        """Warm up (if asked), then measure; a run disturbed by other processes is retried, quietest kept."""
        st = self.settings
        proc = self.procs[spec.key]
        try:
            if warm and st.warmup_s > 0:
                run_wrk(spec.port, workload, st.warmup_s, cpus=cpus, threads=threads, headers=self.headers)
            best: Measurement | None = None
            for attempt in range(st.retries + 1):
                m = run_wrk(
                    spec.port, workload, st.duration_s, cpus=cpus, threads=threads, rss_pid=proc.pid,
                    headers=self.headers,
                )  # fmt: skip
                if best is None or m.foreign_cpu_pct < best.foreign_cpu_pct:
                    best = m
                if m.foreign_cpu_pct <= st.max_other_cpu:
                    break
                if attempt < st.retries:
                    self.res.retried += 1
                    log(f"{label} {spec.key}: other processes used {m.foreign_cpu_pct:.0f}% of the CPU: again")
                    time.sleep(0.5)
        except WrkError as exc:
            self.res.notes.append(f"{spec.key} / {label.strip()}: {exc}")
            log(f"{spec.key} / {label}: {exc}")
            return None
        assert best is not None
        log(
            f"{label} {spec.key:15} {best.rps:>10,.0f} req/s {best.mib_s:>8,.1f} MiB/s  "
            f"p50 {best.p50_us / 1000:7.2f} ms  p99 {best.p99_us / 1000:7.2f} ms  errors {best.errors}  "
            f"peak RSS {best.peak_rss_mib:.1f} MiB  other CPU {best.foreign_cpu_pct:.0f}%"
        )
        time.sleep(0.5)
        return best

    def usable(self, spec: SystemSpec, skipped: dict[str, str]) -> bool:
        proc = self.procs.get(spec.key)
        if proc is None or self.out_of_time():
            return False
        if not proc.alive():
            skipped[spec.key] = f"died during the run:\n{proc.tail()}"
            self.procs.pop(spec.key)
            log(f"{spec.key} died: {proc.tail(5)}")
            return False
        return True

    def main_rounds(self, specs: list[SystemSpec]) -> None:
        st = self.settings
        for rnd in range(st.repeats):
            for workload in self.workloads:
                for spec in specs:
                    if not spec.runs(workload.key) or not self.usable(spec, self.res.skipped):
                        continue
                    m = self.run(spec, workload, f"[{rnd + 1}/{st.repeats}] {workload.key:8}", warm=rnd == 0)
                    if m is not None:
                        self.res.raw.setdefault((spec.key, workload.key), []).append(m)

    def scaling_rounds(self, gate_error: str | None) -> None:
        """1 vs 2 uvicorn workers; the SUT, wrk (2 threads) and the upstream all share both cores."""
        st = self.settings
        upstream = self.procs[DIRECT.key]
        specs = with_free_ports(SCALING)
        set_affinity(process_tree(upstream.pid), BOTH_CPUS)
        try:
            self.start_all(specs, gate_error, self.res.scaling_skipped)
            for rnd in range(st.repeats):
                for spec in specs:
                    if not self.usable(spec, self.res.scaling_skipped):
                        continue
                    label = f"[{rnd + 1}/{st.repeats}] scaling "
                    m = self.run(spec, SMALL, label, warm=rnd == 0, cpus=BOTH_CPUS, threads=2)
                    if m is not None:
                        self.res.scaling_raw.setdefault(spec.key, []).append(m)
        finally:
            self.stop([s.key for s in specs])
            set_affinity(process_tree(upstream.pid), LOAD_CPUS)


def main(argv: list[str] | None = None) -> int:
    if "--instructions" in (sys.argv[1:] if argv is None else argv):
        import instructions  # the callgrind counts instead of the timed runs (benchmarks/instructions.py)

        return instructions.main(argv)
    args = parse_args(argv)
    wanted = set(args.systems.split(",")) if args.systems else None
    workload_keys = args.workloads.split(",") if args.workloads else None
    if args.redis_clients:
        wanted = (wanted or set()) | {GATE_PLAIN.key, GATE_RL_REDIS.key, *(s.key for s in REDIS_CLIENTS)}
        workload_keys = workload_keys or [SMALL.key, LATENCY.key]
    known = [*SYSTEMS, *REDIS_CLIENTS]  # the Redis client systems run only when named
    unknown = sorted((wanted or set()) - {s.key for s in known}) + sorted(set(workload_keys or ()) - set(WORKLOAD_KEYS))
    if unknown:
        log(f"unknown system or workload: {', '.join(unknown)}")
        return 2
    workloads = [w for w in WORKLOADS if workload_keys is None or w.key in workload_keys]
    settings = Settings.make(
        quick=args.quick,
        duration=args.duration,
        warmup=args.warmup,
        repeats=args.repeats,
        max_minutes=args.max_minutes,
        scaling=not args.no_scaling and not args.redis_clients,
        max_other_cpu=args.max_other_cpu,
        retries=args.retries,
    )
    problems = preflight()
    if problems:
        log("cannot run: " + "; ".join(problems) + " (bash benchmarks/run.sh installs them)")
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))  # 500 conns in + out
    os.sched_setaffinity(0, {int(c) for c in LOAD_CPUS.split(",")})  # keep the orchestrator off the SUT core
    (WORK_DIR / "logs").mkdir(parents=True, exist_ok=True)
    (WORK_DIR / "logs" / "wrk.log").write_text("")
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)

    specs = with_free_ports([s for s in (SYSTEMS if wanted is None else known)
                             if s is DIRECT or wanted is None or s.key in wanted])  # fmt: skip
    res = RunResults(settings=settings, started=datetime.now(), machine=machine(), versions=versions(), systems=specs)
    if len(os.sched_getaffinity(0) | {int(c) for c in BOTH_CPUS.split(",")}) < 2:
        res.notes.append("fewer than 2 CPUs: the SUT and the load generator share one core")
    wait = args.wait_quiet if args.wait_quiet is not None else (0.0 if settings.quick else 300.0)
    if wait > 0:
        log(f"waiting up to {wait:.0f} s for the machine to be quiet")
    res.background_cpu["before"] = wait_quiet(wait) if wait > 0 else cpu_busy_percent()
    gate_error = asgigate_import_error()
    if gate_error:
        log(f"asgigate systems will be skipped: `{'from asgigate import ...'}` fails: {gate_error}")
    else:
        log("measuring `import asgigate` time")
        res.import_times = import_time()
    jwt: BenchJwt | None = None
    try:
        jwt = make_jwt()
    except ImportError as exc:
        res.notes.append(f"no benchmark JWT ({exc}): systems with JWT auth are skipped")
    if jwt is not None and not gate_error:
        log("measuring BearerAuth.verify in-process")
        res.jwt_verify = verify_cost_us(jwt)

    bench = Bench(settings, res, jwt, workloads)
    try:
        if any(s.redis for s in specs) and not gate_error:
            bench.start_redis()
        bench.start_all(specs[:1], gate_error, res.skipped)
        if DIRECT.key not in bench.procs:
            log(f"the nginx upstream did not start: {res.skipped.get(DIRECT.key)}")
            return 1
        bench.start_all(specs[1:], gate_error, res.skipped)
        time.sleep(1.0)
        for key, proc in bench.procs.items():
            res.idle_rss_mib[key] = rss_mib(proc.tree())
        bench.main_rounds(specs)
        bench.stop([s.key for s in specs if s.key != DIRECT.key])
        if settings.scaling:
            bench.scaling_rounds(gate_error)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        return 130
    finally:
        bench.stop(list(bench.procs))
        if bench.redis is not None:
            bench.redis.stop()

    res.background_cpu["after"] = cpu_busy_percent()
    res.finished = datetime.now()
    res.combined = {key: combine(runs) for key, runs in res.raw.items()}
    res.scaling = {key: combine(runs) for key, runs in res.scaling_raw.items()}
    text = render(res)
    print(text)
    out_dir = args.results_dir or (WORK_DIR / "results" if settings.quick else RESULTS_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "-quick" if settings.quick else ""
    path = out_dir / f"{res.started:%Y-%m-%d_%H%M}{suffix}.md"
    path.write_text(text + "\n")
    log(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
