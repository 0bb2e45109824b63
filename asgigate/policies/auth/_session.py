"""Browser sessions of `OIDCLogin`: the sealed cookie, the session record and the in-memory session store.

The cookie holds only a random session id, sealed with AES-GCM (encrypted and authenticated, bound to the
cookie's name), so it stays under 150 bytes and a client can neither read nor forge one. The tokens stay on the
gateway, in a `SessionStore` keyed by that id: they never reach the browser, and a refresh (with a rotated
refresh token) updates one record that every concurrent request of the session sees.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...errors import ConfigurationError

__all__ = ["MemorySessions", "Session", "SessionCipher", "SessionStore"]


class SessionCipher:
    """Seals small JSON values into cookie-safe strings (AES-256-GCM, random 96-bit nonce per value).

    The key is derived from `secret` (at least 32 bytes, or a string of at least 32 characters); the cookie name
    is the associated data, so a value sealed for one cookie does not open as another.
    """

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(raw) < 32:
            raise ConfigurationError("The session secret must be at least 32 bytes (secrets.token_urlsafe(32)).")
        self._aead = AESGCM(hashlib.sha256(b"asgigate session v1\0" + raw).digest())

    def seal(self, purpose: str, value: Any) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, orjson.dumps(value), purpose.encode())
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open(self, purpose: str, text: str) -> Any:
        """The value sealed in `text`, or None when it is malformed, tampered with or sealed for another cookie."""
        try:
            data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            if len(data) < 12 + 16:
                return None
            return orjson.loads(self._aead.decrypt(data[:12], data[12:], purpose.encode()))
        except (InvalidTag, ValueError, binascii.Error, orjson.JSONDecodeError):
            return None


@dataclass
class Session:
    """One logged-in browser: the ID token's claims and the tokens, kept on the gateway."""

    id: str
    claims: dict[str, Any]
    id_token: str
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None  # of the access token (epoch seconds)
    created_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(32)


class SessionStore(Protocol):
    """Where sessions live between requests. One store per `OIDCLogin`; `MemorySessions` is the default."""

    async def get(self, session_id: str) -> Session | None: ...

    async def set(self, session: Session, ttl: float) -> None: ...

    async def delete(self, session_id: str) -> None: ...


class MemorySessions:
    """Sessions in this process's memory: fine for one replica; they are lost when the gateway restarts.

    Bounded by `max_sessions` (the oldest session is dropped first); expired entries are dropped when read.
    """

    def __init__(self, max_sessions: int = 100_000, *, clock: Callable[[], float] = time.monotonic) -> None:
        if max_sessions < 1:
            raise ConfigurationError("MemorySessions max_sessions must be at least 1.")
        self.max_sessions = max_sessions
        self._clock = clock
        self._sessions: dict[str, tuple[Session, float]] = {}

    async def get(self, session_id: str) -> Session | None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            del self._sessions[session_id]
            return None
        return entry[0]

    async def set(self, session: Session, ttl: float) -> None:
        self._sessions.pop(session.id, None)
        if len(self._sessions) >= self.max_sessions:
            del self._sessions[next(iter(self._sessions))]
        self._sessions[session.id] = (session, self._clock() + ttl)

    async def delete(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def __repr__(self) -> str:
        return f"MemorySessions(max_sessions={self.max_sessions})"
