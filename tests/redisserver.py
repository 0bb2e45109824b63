"""A real redis-server on a free 127.0.0.1 port, for the rate limit tests (killed by PID when done)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

from servers import free_port, wait_port


class RedisServer:
    """``with RedisServer() as redis: redis.uri``; `stop()` and `start()` simulate an outage on the same port."""

    def __init__(self) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError(
                "redis-server is not installed: the rate limit tests need it (./dev test installs the Debian "
                "package redis-server; or: apt-get install redis-server)"
            )
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.binary is not None
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, 10, self.proc)
        deadline = time.monotonic() + 10
        while self.command(b"PING") != b"+PONG\r\n":  # listening is not yet serving
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server does not answer PING")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def flush(self) -> None:
        assert self.command(b"FLUSHALL") == b"+OK\r\n"

    def command(self, *words: bytes) -> bytes:
        """One command in RESP, its raw reply (enough for PING / FLUSHALL)."""
        payload = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in words)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(payload)
                return s.recv(65536)
        except OSError:
            return b""

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
