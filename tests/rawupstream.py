"""A misbehaving upstream: a raw TCP server that answers every connection with canned bytes."""

from __future__ import annotations

import socket
import threading
import time


class RawUpstream:
    """Accepts connections; for each, reads the request head, sends `reply`, waits `hold` seconds, closes.

    `heads` keeps every request head received, byte for byte (`header_lines` splits the last one), so a test
    sees exactly which header lines reached the upstream.
    """

    def __init__(self, reply: bytes, hold: float = 0.0) -> None:
        self.reply = reply
        self.hold = hold
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.heads: list[bytes] = []
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                self.heads.append(data.partition(b"\r\n\r\n")[0])
                if self.reply:
                    conn.sendall(self.reply)
                deadline = time.monotonic() + self.hold
                while time.monotonic() < deadline and not self._stop:
                    time.sleep(0.02)
            except OSError:
                return

    def header_lines(self) -> list[tuple[bytes, bytes]]:
        """The last request's header lines as received: (name lowered, value), in order, repeats kept."""
        lines = self.heads[-1].split(b"\r\n")[1:]
        return [(name.strip().lower(), value.strip()) for name, _, value in (line.partition(b":") for line in lines)]

    def __enter__(self) -> RawUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        self.sock.close()
