"""Paths, ports, CPU placement and run settings shared by the benchmark modules."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"  # git-ignored: rendered configs, logs, temp files
APPS_DIR = BENCH_DIR / "apps"
LUA_DIR = BENCH_DIR / "lua"
NGINX_DIR = BENCH_DIR / "nginx"
RESULTS_DIR = BENCH_DIR / "results"
VENV_PYTHON = REPO_DIR / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")

HOST = "127.0.0.1"
UPSTREAM_PORT = 8081  # preferred; any taken port is swapped for a free one at start-up

SMALL_BODY = b'{"message":"hello, world","id":12345,"ok":true}'
LARGE_BODY = bytes(range(256)) * 4096
MIB = 1 << 20
DELAY_S = 0.05

ASGIGATE_IMPORT = "from asgigate import Gateway, Proxy, Route, Upstream"


def _cpu_sets() -> tuple[str, str, str]:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        only = str(cpus[0])
        return only, only, only
    return str(cpus[0]), str(cpus[1]), f"{cpus[0]},{cpus[1]}"


# System under test on the first core; wrk, the upstream and this orchestrator on the second.
SUT_CPUS, LOAD_CPUS, BOTH_CPUS = _cpu_sets()


@dataclass(frozen=True)
class Settings:
    duration_s: float
    warmup_s: float
    repeats: int
    quick: bool
    max_minutes: float
    scaling: bool
    max_other_cpu: float  # a run during which other processes used more of the machine (%) is retried...
    retries: int  # ...at most this many times; the quietest attempt is kept

    @staticmethod
    def make(
        *,
        quick: bool,
        duration: float | None = None,
        warmup: float | None = None,
        repeats: int | None = None,
        max_minutes: float = 60.0,
        scaling: bool = True,
        max_other_cpu: float = 20.0,
        retries: int | None = None,
    ) -> Settings:
        return Settings(
            duration_s=duration if duration is not None else (2.0 if quick else 8.0),
            warmup_s=warmup if warmup is not None else (1.0 if quick else 3.0),
            repeats=repeats if repeats is not None else (1 if quick else 3),
            quick=quick,
            max_minutes=max_minutes,
            scaling=scaling,
            max_other_cpu=max_other_cpu,
            retries=retries if retries is not None else (0 if quick else 1),
        )
