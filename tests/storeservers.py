"""Real Memcached, Redis Sentinel and Redis Cluster servers on free 127.0.0.1 ports (killed by PID when done)."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from servers import free_port, wait_port


def _binary(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: the rate limit store tests need it (./dev test installs the "
                           f"Debian package {package}; or: apt-get install {package})")
    return path


def _command(port: int, *words: bytes) -> bytes:
    """One command in RESP, its raw reply (enough for PING, INFO, CLUSTER INFO)."""
    payload = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(payload)
            return s.recv(65536)
    except OSError:
        return b""


def _wait_for(check: object, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up")
        time.sleep(0.05)


class _Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.dir = Path(tempfile.mkdtemp(prefix="asgigate-stores-"))

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(args), cwd=self.dir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)


class MemcachedServer(_Processes):
    """``with MemcachedServer() as memcached: memcached.uri``"""

    def __init__(self) -> None:
        super().__init__()
        self.binary = _binary("memcached", "memcached")
        self.port = free_port()

    @property
    def uri(self) -> str:
        return f"memcached://127.0.0.1:{self.port}"

    def __enter__(self) -> MemcachedServer:
        user = ["-u", getpass.getuser()] if os.geteuid() == 0 else []  # memcached refuses root without -u
        proc = self.spawn(self.binary, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "32", *user)
        wait_port(self.port, 10, proc)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _redis_args(binary: str, port: int) -> list[str]:
    return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]


class RedisSentinel(_Processes):
    """A Redis primary watched by one Sentinel: ``redis+sentinel://127.0.0.1:<sentinel port>/<service>``."""

    service = "asgigate"

    def __init__(self) -> None:
        super().__init__()
        self.binary = _binary("redis-server", "redis-server")
        self.primary_port = free_port()
        self.port = free_port()

    @property
    def uri(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/{self.service}"

    def __enter__(self) -> RedisSentinel:
        primary = self.spawn(*_redis_args(self.binary, self.primary_port))
        wait_port(self.primary_port, 10, primary)
        _wait_for(lambda: _command(self.primary_port, b"PING") == b"+PONG\r\n", "the Redis primary")
        config = self.dir / "sentinel.conf"  # Sentinel rewrites its config file: a fresh writable one
        config.write_text(f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
                          f"sentinel monitor {self.service} 127.0.0.1 {self.primary_port} 1\n"
                          f"sentinel down-after-milliseconds {self.service} 60000\n")
        sentinel = self.spawn(self.binary, str(config), "--sentinel")
        wait_port(self.port, 10, sentinel)
        expected = str(self.primary_port).encode()
        _wait_for(lambda: expected in _command(self.port, b"SENTINEL", b"get-master-addr-by-name",
                                               self.service.encode()), "Sentinel")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisCluster(_Processes):
    """Three Redis Cluster primaries (no replicas): ``redis+cluster://127.0.0.1:<port>,...``"""

    def __init__(self, nodes: int = 3) -> None:
        super().__init__()
        self.binary = _binary("redis-server", "redis-server")
        self.cli = _binary("redis-cli", "redis-server")
        self.ports = [free_port() for _ in range(nodes)]

    @property
    def uri(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def __enter__(self) -> RedisCluster:
        for port in self.ports:
            # the cluster bus on its own free port (the default, port + 10000, may be taken or out of range)
            proc = self.spawn(*_redis_args(self.binary, port), "--cluster-enabled", "yes",
                              "--cluster-config-file", f"nodes-{port}.conf", "--cluster-port", str(free_port()))
            wait_port(port, 10, proc)
        for port in self.ports:
            _wait_for(lambda port=port: _command(port, b"PING") == b"+PONG\r\n", f"Redis node {port}")
        subprocess.run([self.cli, "--cluster", "create", *(f"127.0.0.1:{port}" for port in self.ports),
                        "--cluster-replicas", "0", "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        for port in self.ports:
            _wait_for(lambda port=port: b"cluster_state:ok" in _command(port, b"CLUSTER", b"INFO"), "the cluster")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
