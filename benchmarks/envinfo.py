"""What the results file records about the machine and software, plus asgigate's import cost."""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from config import ASGIGATE_IMPORT, PYTHON, REPO_DIR, SUT_CPUS
from systems import environment


def _run(cmd: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=REPO_DIR, env=environment()
    )


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text(), re.M)
    return {
        "nproc": str(os.cpu_count()),
        "CPU": model.group(1).strip() if model else platform.processor(),
        "kernel": f"{platform.system()} {platform.release()}",
        "memory": f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "?",
    }


def git_sha() -> str:
    env = {**environment(), "GIT_OPTIONAL_LOCKS": "0"}  # read-only: never refresh the index
    head = subprocess.run(
        ["git", "-C", str(REPO_DIR), "rev-parse", "--short=12", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if head.returncode != 0:
        return "no commit yet"
    status = subprocess.run(
        ["git", "-C", str(REPO_DIR), "status", "--porcelain", "--", "asgigate"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def versions() -> dict[str, str]:
    code = (
        "import sys, importlib.metadata as m\n"
        "print('python', sys.version.split()[0])\n"
        "for name in ('uvicorn', 'granian', 'uvloop', 'httptools', 'aiohttp', 'asgiproxy', 'joserfc', 'limits',\n"
        "             'coredis', 'redis', 'hiredis', 'asgigate'):\n"
        "    try: print(name, m.version(name))\n"
        "    except m.PackageNotFoundError: print(name, 'not installed')\n"
    )
    out = dict(line.split(" ", 1) for line in _run([PYTHON, "-c", code]).stdout.splitlines())
    nginx = _run(["nginx", "-v"]).stderr.strip()
    out["nginx"] = nginx.split("/", 1)[-1] if "/" in nginx else nginx
    wrk = _run(["wrk", "-v"]).stdout.splitlines()
    out["wrk"] = wrk[0].split(" [")[0].removeprefix("wrk ") if wrk else "?"
    redis = _run(["redis-server", "--version"]).stdout.split() if shutil.which("redis-server") else []
    out["redis-server"] = next((w.removeprefix("v=") for w in redis if w.startswith("v=")), "not installed")
    out["asgigate git sha"] = git_sha()
    return out


def asgigate_import_error() -> str | None:
    """None when the asgigate API the gateway apps use imports, else the reason."""
    done = _run([PYTHON, "-c", ASGIGATE_IMPORT])
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"


def import_time(samples: int = 5) -> dict[str, float]:
    """``import asgigate`` cost: -X importtime's cumulative figure, and the wall-clock difference between
    ``python -c 'import asgigate'`` and ``python -c pass`` (medians, pinned to the SUT core)."""
    pin = ["taskset", "-c", SUT_CPUS, PYTHON]
    cumulative: list[float] = []
    wall: list[float] = []
    for _ in range(samples):
        err = _run([*pin, "-X", "importtime", "-c", "import asgigate"]).stderr
        for line in err.splitlines():
            parts = [p.strip() for p in line.removeprefix("import time:").split("|")]
            if len(parts) == 3 and parts[2] == "asgigate":
                cumulative.append(float(parts[1]))
        t0 = time.perf_counter()
        _run([*pin, "-c", "pass"])
        t1 = time.perf_counter()
        _run([*pin, "-c", "import asgigate"])
        t2 = time.perf_counter()
        wall.append((t2 - t1) - (t1 - t0))
    return {
        "importtime_ms": statistics.median(cumulative) / 1000 if cumulative else float("nan"),
        "wall_ms": statistics.median(wall) * 1000,
    }
