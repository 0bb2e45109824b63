"""Starting pinned processes, waiting for them, stopping them, and reading their memory from /proc."""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class Proc:
    """A process tree we started (in its own session) with ``taskset -c CPUS``; stopped by its own PID."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        cpus: str,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.popen = subprocess.Popen(
                ["taskset", "-c", cpus, *cmd],  # taskset execs: the PID is the program's own
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)  # the group this Proc created (pgid == our child's pid)
            self.popen.wait(5)

    def tree(self) -> list[int]:
        return process_tree(self.pid)


def process_tree(pid: int) -> list[int]:
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        i += 1
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        out.extend(int(c) for c in children)
    return out


def set_affinity(pids: Sequence[int], cpus: str) -> None:
    mask = {int(c) for c in cpus.split(",")}
    for pid in pids:
        for tid in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid.name), mask)


def status_kib(pid: int, field: str) -> int:
    """VmRSS / VmHWM etc. of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib(pids: Sequence[int]) -> float:
    return sum(status_kib(p, "VmRSS") for p in pids) / 1024


def reset_peak(pids: Sequence[int]) -> None:
    """Reset VmHWM (writing 5 to clear_refs, Linux >= 4.0) so the next peak is this run's own."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


class PeakRss:
    """Polls the summed VmRSS of a process tree every ``interval`` s; ``peak_mib`` also folds in VmHWM."""

    def __init__(self, root_pid: int, interval: float = 0.05) -> None:
        self.root_pid = root_pid
        self.interval = interval
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        reset_peak(process_tree(self.root_pid))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for pid in process_tree(self.root_pid):
            self.peaks[pid] = max(self.peaks.get(pid, 0), status_kib(pid, "VmHWM"))

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in process_tree(self.root_pid):
                self.peaks[pid] = max(self.peaks.get(pid, 0), status_kib(pid, "VmRSS"))
            self._stop.wait(self.interval)

    @property
    def peak_mib(self) -> float:
        return sum(self.peaks.values()) / 1024


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen there (with SO_REUSEADDR, as nginx and uvicorn do)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def http_request(
    host: str,
    port: int,
    path: str,
    method: str = "GET",
    body: bytes | None = None,
    timeout: float = 5.0,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes, float]:
    """One request on a fresh connection: (status, body, seconds)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        start = time.perf_counter()
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Type"] = "application/octet-stream"
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read()
        return response.status, data, time.perf_counter() - start
    finally:
        conn.close()


def redis_ping(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a Redis answers PING there (listening is not yet serving)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(host: str, cpus: str, log: Path, cwd: Path) -> tuple[Proc | None, str]:
    """A throw-away redis-server (no persistence) on a free port: (the process, its URL) or (None, why not)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None, "redis-server not installed (bash benchmarks/run.sh installs it)"
    port = free_port(host)
    cmd = [binary, "--port", str(port), "--bind", host, "--save", "", "--appendonly", "no"]
    proc = Proc("redis", cmd, cpus, log, cwd=cwd)
    deadline = time.monotonic() + 10
    while not redis_ping(host, port):
        if not proc.alive() or time.monotonic() > deadline:
            error = f"redis-server did not answer PING: {proc.tail(3)}"
            proc.stop()
            return None, error
        time.sleep(0.05)
    return proc, f"redis://{host}:{port}"


def wait_http(proc: Proc, host: str, port: int, path: str, timeout: float = 30.0) -> str | None:
    """Wait until ``path`` answers HTTP at all; returns an error message, or None when up."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if not proc.alive():
            return f"exited with code {proc.popen.returncode}:\n{proc.tail()}"
        try:
            http_request(host, port, path, timeout=2.0)
            return None  # it answers; whether the answer is right is systems.check()'s job
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    return f"not answering on {path} after {timeout:.0f}s ({last}):\n{proc.tail()}"


def cpu_busy_percent(seconds: float = 1.0) -> float:
    """How busy the whole machine is (all CPUs, from /proc/stat) over ``seconds``: background noise."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return 100.0 * (busy1 - busy0) / max(1, total1 - total0)


def _descendants_of(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    ours = {root}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                changed = True
    return ours


def _foreign_ticks(root: int) -> dict[int, int]:
    """CPU clock ticks (own + reaped children) of every process that is not ``root`` or under it."""
    ours = _descendants_of(root)
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in ours:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[int(entry.name)] = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return ticks


class ForeignCpu:
    """Share of the whole machine's CPU used by processes that are not ours during a block: other people's
    work on a shared machine. Processes that start and exit inside the block count only once reaped."""

    def __init__(self) -> None:
        self.percent = 0.0

    def __enter__(self) -> ForeignCpu:
        self._start = _foreign_ticks(os.getpid())
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        end = _foreign_ticks(os.getpid())
        elapsed = time.monotonic() - self._t0
        used = sum(max(0, t - self._start.get(pid, 0)) for pid, t in end.items())
        # A process gone since the start was reaped: its parent's cutime/cstime now holds its whole lifetime,
        # including the part before the start, so take that part back out.
        used -= sum(t for pid, t in self._start.items() if pid not in end)
        capacity = elapsed * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
        self.percent = min(100.0, max(0.0, 100.0 * used / capacity)) if capacity else 0.0


def wait_quiet(max_seconds: float, threshold: float = 10.0) -> float:
    """Wait (at most ``max_seconds``) until the machine is under ``threshold`` % busy; returns the last %."""
    deadline = time.monotonic() + max_seconds
    busy = cpu_busy_percent(2.0)
    while busy >= threshold and time.monotonic() < deadline:
        busy = cpu_busy_percent(5.0)
    return busy
