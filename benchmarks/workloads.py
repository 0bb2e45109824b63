"""The wrk workloads, one wrk run, and how repeated runs are folded into one figure."""

from __future__ import annotations

import contextlib
import json
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from config import HOST, LOAD_CPUS, LUA_DIR, MIB, WORK_DIR
from procs import ForeignCpu, PeakRss


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    path: str
    connections: int
    upload: bool = False
    body_mib: float = 0.0  # MiB moved per request, for MiB/s (request body for uploads, response otherwise)
    # Poll the SUT's RSS during the run. Off for the latency-sensitive workloads: the poller shares the
    # load core with wrk.
    track_rss: bool = False


SMALL = Workload("small", "small JSON GET @50 conns", "/small", 50)
LARGE = Workload("large", "1 MiB GET @10 conns", "/1m", 10, body_mib=1.0, track_rss=True)
UPLOAD = Workload("upload", "1 MiB POST @10 conns", "/upload", 10, upload=True, body_mib=1.0, track_rss=True)
SLOW = Workload("slow", "50 ms upstream @500 conns", "/delay", 500, track_rss=True)
LATENCY = Workload("latency", "small JSON GET @1 conn", "/small", 1)
WORKLOADS: list[Workload] = [SMALL, LARGE, UPLOAD, SLOW, LATENCY]


class WrkError(RuntimeError):
    pass


@dataclass
class Measurement:
    requests: float
    duration_s: float
    p50_us: float
    p90_us: float
    p99_us: float
    max_us: float
    errors: int
    error_detail: dict[str, int] = field(default_factory=dict)
    peak_rss_mib: float = 0.0
    body_mib: float = 0.0
    foreign_cpu_pct: float = 0.0  # CPU used by other people's processes during the run (% of the machine)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def mib_s(self) -> float:
        return self.rps * self.body_mib


def _script(workload: Workload) -> str:
    report = LUA_DIR / "report.lua"
    if not workload.upload:
        return str(report)
    combined = WORK_DIR / "wrk-upload.lua"  # wrk takes one script: upload.lua followed by report.lua
    combined.write_text((LUA_DIR / "upload.lua").read_text() + "\n" + report.read_text())
    return str(combined)


def run_wrk(
    port: int,
    workload: Workload,
    duration_s: float,
    *,
    cpus: str = LOAD_CPUS,
    threads: int = 1,
    rss_pid: int | None = None,
    headers: Sequence[str] = (),
) -> Measurement:
    """One wrk run (bounded by ``-d`` and a subprocess timeout), optionally polling the SUT's peak RSS.

    `headers` ("Name: value") go with every request (the benchmark's bearer token)."""
    seconds = max(1, round(duration_s))
    cmd = [
        "taskset", "-c", cpus, "wrk",
        f"-t{min(threads, workload.connections)}", f"-c{workload.connections}", f"-d{seconds}s",
        "--timeout", "5s", "--latency", "-s", _script(workload),
        *(arg for header in headers for arg in ("-H", header)),
        f"http://{HOST}:{port}{workload.path}",
    ]  # fmt: skip
    env = {"WRK_BODY_BYTES": str(MIB), "PATH": "/usr/local/bin:/usr/bin:/bin"}
    monitor = PeakRss(rss_pid) if rss_pid is not None and workload.track_rss else None
    foreign = ForeignCpu()
    with foreign, monitor if monitor is not None else contextlib.nullcontext():
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, env=env, check=False)
        except subprocess.TimeoutExpired as exc:
            raise WrkError(f"wrk did not finish: {' '.join(cmd)}") from exc
    shown = " ".join(repr(arg) if " " in arg else arg for arg in cmd)
    with (WORK_DIR / "logs" / "wrk.log").open("a") as log:
        log.write(f"$ {shown}\n{done.stdout}{done.stderr}\n")
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if done.returncode != 0 or line is None:
        raise WrkError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()[-300:]}")
    raw = json.loads(line.removeprefix("WRKJSON "))
    detail = {k: int(raw[k]) for k in ("connect", "read", "write", "status", "timeout") if raw[k]}
    return Measurement(
        requests=raw["requests"],
        duration_s=raw["duration_us"] / 1e6,
        p50_us=raw["p50"],
        p90_us=raw["p90"],
        p99_us=raw["p99"],
        max_us=raw["max"],
        errors=sum(detail.values()),
        error_detail=detail,
        peak_rss_mib=monitor.peak_mib if monitor is not None else 0.0,
        body_mib=workload.body_mib,
        foreign_cpu_pct=foreign.percent,
    )


def combine(runs: list[Measurement]) -> Measurement:
    """Median of each figure over the repeats; errors are summed and peak RSS is the maximum."""
    detail: dict[str, int] = {}
    for run in runs:
        for key, count in run.error_detail.items():
            detail[key] = detail.get(key, 0) + count
    rps = statistics.median(r.rps for r in runs)
    return Measurement(
        requests=rps,
        duration_s=1.0,
        p50_us=statistics.median(r.p50_us for r in runs),
        p90_us=statistics.median(r.p90_us for r in runs),
        p99_us=statistics.median(r.p99_us for r in runs),
        max_us=max(r.max_us for r in runs),
        errors=sum(r.errors for r in runs),
        error_detail=detail,
        peak_rss_mib=max(r.peak_rss_mib for r in runs),
        body_mib=runs[0].body_mib,
        foreign_cpu_pct=statistics.median(r.foreign_cpu_pct for r in runs),
    )
