"""Browser sessions of `OIDCLogin`: the sealing cipher, the session record and where records live.

`CookieSessions` (the default) keeps the whole record in the browser: sealed with AES-GCM (encrypted and
authenticated, bound to the cookie's name), compressed first, and split over several cookies when large.
`MemorySessions` and `RedisSessions` (in `_session_redis`) keep it on the gateway; the cookie then holds only
the sealed session id. Every store sees the same `Session`; `OIDCLogin` checks the idle and absolute timeouts.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import sys
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeGuard, runtime_checkable

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..._cache import json_size
from ...errors import ConfigurationError

__all__ = ["CookieSessions", "MemorySessions", "Session", "SessionCipher", "SessionStore", "SharedSessionStore"]

_COMPRESSED = b"\x00"  # plaintext marker: JSON never starts with a NUL byte
MAX_PLAINTEXT = 1 << 20  # a sealed value never opens to more than this (decompression is bounded too)


class SessionCipher:
    """Seals JSON values into cookie-safe strings (AES-256-GCM, random 96-bit nonce per value).

    The key is derived from `secret` (at least 32 bytes, or a string of at least 32 characters); the cookie name
    is the associated data, so a value sealed for one cookie does not open as another. With ``compress=True``
    the JSON is deflated before sealing when that makes it shorter.
    """

    def __init__(self, secret: str | bytes) -> None:
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        if len(raw) < 32:
            raise ConfigurationError("The session secret must be at least 32 bytes (secrets.token_urlsafe(32)).")
        self._aead = AESGCM(hashlib.sha256(b"asgigate session v1\0" + raw).digest())

    def seal(self, purpose: str, value: Any, *, compress: bool = False) -> str:
        plain = orjson.dumps(value)
        if compress:
            packed = _COMPRESSED + zlib.compress(plain, 9)
            if len(packed) < len(plain):
                plain = packed
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plain, purpose.encode())
        return base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()

    def open(self, purpose: str, text: str) -> Any:
        """The value sealed in `text`, or None when it is malformed, tampered with or sealed for another cookie."""
        try:
            data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            if len(data) < 12 + 16:
                return None
            plain = self._aead.decrypt(data[:12], data[12:], purpose.encode())
            if plain.startswith(_COMPRESSED):
                inflater = zlib.decompressobj()
                plain = inflater.decompress(plain[1:], MAX_PLAINTEXT)
                if inflater.unconsumed_tail:
                    return None
            return orjson.loads(plain)
        except (InvalidTag, ValueError, binascii.Error, zlib.error, orjson.JSONDecodeError):
            return None


@dataclass
class Session:
    """One logged-in browser: the ID token's claims, the tokens and the session's timestamps (epoch seconds)."""

    id: str
    claims: dict[str, Any]
    id_token: str = field(repr=False)
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    expires_at: float | None = None  # of the access token
    created_at: float = field(default_factory=time.time)
    last_seen: float = field(default_factory=time.time)

    @staticmethod
    def new_id() -> str:
        return secrets.token_urlsafe(32)

    def record(self) -> dict[str, Any]:
        """The JSON form, for cookies and shared stores (short keys: it travels in every request's cookies)."""
        record: dict[str, Any] = {"id": self.id, "c": self.claims, "i": self.id_token, "t0": self.created_at,
                                  "t": self.last_seen}
        for key, value in (("a", self.access_token), ("r", self.refresh_token), ("e", self.expires_at)):
            if value is not None:
                record[key] = value
        return record

    @classmethod
    def from_record(cls, record: Any) -> Session | None:
        """The session in `record`, or None when it is not one (a record of another version, say)."""
        if not isinstance(record, dict):
            return None
        id_, claims, id_token = record.get("id"), record.get("c"), record.get("i")
        created, seen = record.get("t0"), record.get("t")
        access, refresh, expires = record.get("a"), record.get("r"), record.get("e")
        if not (isinstance(id_, str) and isinstance(claims, dict) and isinstance(id_token, str)
                and _number(created) and _number(seen) and (expires is None or _number(expires))
                and isinstance(access, str | None) and isinstance(refresh, str | None)):
            return None
        return cls(id_, claims, id_token, access, refresh, expires, created, seen)

    def adopt(self, other: Session) -> None:
        """Take `other`'s tokens (a refresh done by another request or replica)."""
        for name in ("id_token", "access_token", "refresh_token", "expires_at"):
            setattr(self, name, getattr(other, name))

    def copy(self) -> Session:
        return Session(**{f.name: getattr(self, f.name) for f in fields(self)})


def session_size(session: Session) -> int:
    """The memory a session takes: its tokens (the IdP's, often kilobytes each) and claims, and the objects."""
    tokens = (session.id, session.id_token, session.access_token, session.refresh_token)
    return 600 + sum(sys.getsizeof(token) for token in tokens if token is not None) + json_size(session.claims)


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


class SessionStore(Protocol):
    """Where sessions live on the gateway, keyed by session id (the cookie then holds only the sealed id).

    `set` writes the whole record; `touch` only records activity (`last_seen`) and must not overwrite tokens that
    another request may just have refreshed. `ttl` (seconds) is how long the store keeps an untouched record.
    """

    async def get(self, session_id: str) -> Session | None: ...

    async def set(self, session: Session, ttl: float) -> None: ...

    async def touch(self, session: Session, ttl: float) -> None: ...

    async def delete(self, session_id: str) -> None: ...


@runtime_checkable
class SharedSessionStore(SessionStore, Protocol):
    """A store several gateway replicas share: it also holds the per-session refresh lock."""

    async def lock(self, session_id: str, ttl: float) -> str | None:
        """Take the session's refresh lock for `ttl` seconds: a token to unlock with, or None if it is taken."""
        ...

    async def unlock(self, session_id: str, token: str) -> None: ...


class CookieSessions:
    """The default: the whole session in the browser, sealed (AES-GCM), compressed, split over several cookies.

    Cookies are ``{name}``, ``{name}.1``, ``{name}.2``... each Set-Cookie header at most `chunk_size` bytes
    with its attributes (browsers and proxies refuse cookies over 4 KB); a session that needs more than
    `max_chunks` cookies fails the login with 502 (use a server-side store for such tokens). Nothing is kept on
    the gateway but a bounded list of the sessions logged out here (`remember_ended`), so that a copy of a
    logged-out cookie opens nothing on this replica until it would have expired anyway.
    """

    def __init__(self, *, chunk_size: int = 3800, max_chunks: int = 5, remember_ended: int = 100_000) -> None:
        if not 512 <= chunk_size <= 4096:
            raise ConfigurationError("CookieSessions chunk_size must be between 512 and 4096 bytes.")
        if not 1 <= max_chunks <= 20:
            raise ConfigurationError("CookieSessions max_chunks must be between 1 and 20.")
        self.chunk_size = chunk_size
        self.max_chunks = max_chunks
        self.remember_ended = remember_ended
        self._ended: dict[str, float] = {}

    def ended(self, session_id: str, now: float) -> bool:
        until = self._ended.get(session_id)
        if until is None:
            return False
        if now >= until:
            del self._ended[session_id]
            return False
        return True

    def end(self, session_id: str, until: float) -> None:
        if self.remember_ended < 1:
            return
        self._ended.pop(session_id, None)
        if len(self._ended) >= self.remember_ended:
            del self._ended[next(iter(self._ended))]
        self._ended[session_id] = until

    def __repr__(self) -> str:
        return f"CookieSessions(chunk_size={self.chunk_size}, max_chunks={self.max_chunks})"


class MemorySessions:
    """Sessions in this process's memory: fine for one replica; they are lost when the gateway restarts.

    Bounded by `max_sessions` and by `max_bytes`, the memory their tokens and claims take (the oldest session is
    dropped first); expired entries are dropped when read. Every request of a session shares one `Session`
    object, so a refresh is seen by all of them at once.
    """

    def __init__(self, max_sessions: int = 100_000, *, max_bytes: int = 256 * 1024 * 1024,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_sessions < 1:
            raise ConfigurationError("MemorySessions max_sessions must be at least 1.")
        if max_bytes < 1:
            raise ConfigurationError("MemorySessions max_bytes must be at least 1.")
        self.max_sessions = max_sessions
        self.max_bytes = max_bytes
        self._clock = clock
        # oldest first: session id -> (session, expiry, size charged)
        self._sessions: OrderedDict[str, tuple[Session, float, int]] = OrderedDict()
        self._bytes = 0

    @property
    def bytes(self) -> int:
        """The memory charged for the sessions kept."""
        return self._bytes

    async def get(self, session_id: str) -> Session | None:
        entry = self._sessions.get(session_id)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            self._drop(session_id)
            return None
        return entry[0]

    async def set(self, session: Session, ttl: float) -> None:
        self._drop(session.id)
        size = session_size(session)
        self._sessions[session.id] = (session, self._clock() + ttl, size)
        self._bytes += size
        sessions = self._sessions
        while len(sessions) > self.max_sessions or (self._bytes > self.max_bytes and len(sessions) > 1):
            self._bytes -= sessions.popitem(last=False)[1][2]

    async def touch(self, session: Session, ttl: float) -> None:
        entry = self._sessions.get(session.id)
        if entry is not None:
            self._sessions[session.id] = (entry[0], self._clock() + ttl, entry[2])

    async def delete(self, session_id: str) -> None:
        self._drop(session_id)

    def _drop(self, session_id: str) -> None:
        entry = self._sessions.pop(session_id, None)
        if entry is not None:
            self._bytes -= entry[2]

    def __len__(self) -> int:
        return len(self._sessions)

    def __repr__(self) -> str:
        return f"MemorySessions(max_sessions={self.max_sessions}, max_bytes={self.max_bytes})"
