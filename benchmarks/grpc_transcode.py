"""Unary REST-to-gRPC transcoding: asgigate against a minimal hand-written ASGI + json_format app, same run.

    python benchmarks/grpc_transcode.py [--duration 5] [--runs 3] [--connections 32]

Starts a grpc.aio backend, then serves the asgigate gateway (GrpcService, access log off) and the baseline (one
fixed route mapped by hand to the same method with json_format) under uvicorn, one at a time, each on the same
backend; loads each with wrk (or, without wrk, a small httpx/asyncio loop) for `duration` seconds, alternating,
`runs` times; prints the median requests/s of each and their ratio (the target is >= 0.8). Every process is
started here and stopped by its own PID; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "benchmarks" / "apps"
sys.path[:0] = [str(ROOT), str(APPS)]

from grpc_bench import PROTO  # noqa: E402

from asgigate.grpc import compile_protos  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def start(cmd: list[str], port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def load_wrk(url: str, duration: float, connections: int) -> float:
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{max(1, round(duration))}s", url],
                         capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} error replies during the run")
    match = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    if match is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    return float(match.group(1))


def load_httpx(url: str, duration: float, connections: int) -> float:
    import httpx

    async def run() -> int:
        done = 0
        stop_at = time.monotonic() + duration
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(limits=limits, timeout=10) as client:

            async def worker() -> None:
                nonlocal done
                while time.monotonic() < stop_at:
                    response = await client.get(url)
                    if response.status_code != 200:
                        raise RuntimeError(f"{url}: {response.status_code} {response.text}")
                    done += 1

            await asyncio.gather(*(worker() for _ in range(connections)))
        return done

    started = time.monotonic()
    count = asyncio.run(run())
    return count / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load run")
    parser.add_argument("--runs", type=int, default=3, help="runs per app (the median is reported)")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    load = load_wrk if shutil.which("wrk") else load_httpx

    work = Path(tempfile.mkdtemp(prefix="asgigate-grpc-bench-"))
    (work / "bench.proto").write_text(PROTO)
    descriptor_set = str(compile_protos([work / "bench.proto"], work))
    backend_port = free_port()
    backend = start([sys.executable, str(APPS / "grpc_bench.py"), "backend", descriptor_set, str(backend_port)],
                    backend_port, {"PYTHONPATH": str(ROOT)})
    env = {"GRPC_BENCH_DESCRIPTORS": descriptor_set, "GRPC_BENCH_UPSTREAM": f"grpc://127.0.0.1:{backend_port}",
           "PYTHONPATH": str(ROOT)}
    results: dict[str, list[float]] = {"asgigate": [], "minimal": []}
    try:
        for _ in range(args.runs):
            for name, attr in (("asgigate", "gateway"), ("minimal", "minimal")):
                port = free_port()
                cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(APPS), f"grpc_bench:{attr}",
                       "--host", "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"]
                server = start(cmd, port, env)
                try:
                    url = f"http://127.0.0.1:{port}/v1/items/7"
                    load(url, min(1.0, args.duration), args.connections)  # warm-up: channels, caches
                    results[name].append(load(url, args.duration, args.connections))
                finally:
                    stop(server)
    finally:
        stop(backend)
        shutil.rmtree(work, ignore_errors=True)
    gateway = statistics.median(results["asgigate"])
    minimal = statistics.median(results["minimal"])
    print(f"load generator: {'wrk' if load is load_wrk else 'httpx'}, {args.connections} connections, "
          f"{args.duration:g}s x {args.runs} runs each")
    for name, values in results.items():
        runs = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:>9}: median {statistics.median(values):8.0f} req/s  (runs: {runs})")
    print(f"    ratio: {gateway / minimal:.2f}x (asgigate / minimal; target >= 0.8)")


if __name__ == "__main__":
    main()
