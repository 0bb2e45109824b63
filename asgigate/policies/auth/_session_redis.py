"""RedisSessions: `OIDCLogin` sessions in Redis, shared by every gateway replica (needs coredis).

A session is one hash, ``{prefix}{id}``: field ``rec`` holds the record (tokens, claims, timestamps) and is
written only at login and by the one replica that refreshes the tokens (under the lock); field ``t`` holds the
last activity, written by `touch`, so recording activity never overwrites tokens refreshed meanwhile. The key
expires with the session. The refresh lock is ``{prefix}{id}:refresh``, taken with ``SET NX PX``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

import orjson

from ...errors import ConfigurationError, UpstreamUnavailable
from ._session import Session

__all__ = ["RedisSessions"]

logger = logging.getLogger("asgigate.auth")

_SET = "redis.call('hset', KEYS[1], 'rec', ARGV[1], 't', ARGV[2]) redis.call('pexpire', KEYS[1], ARGV[3])"
_TOUCH = ("if redis.call('hexists', KEYS[1], 'rec') == 1 then "
          "redis.call('hset', KEYS[1], 't', ARGV[1]) redis.call('pexpire', KEYS[1], ARGV[2]) end")
_UNLOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class RedisSessions:
    """``RedisSessions("redis://10.0.0.5:6379/0")``: sessions every replica of the gateway sees.

    `url` is a ``redis://`` or ``rediss://`` URL; `prefix` starts every key; `timeout` bounds each command and
    the connection (seconds). When Redis cannot answer, requests that need the session get 503
    ``upstream_unavailable`` (never a session mix-up). One client per event loop, created on first use.
    """

    def __init__(self, url: str, *, prefix: str = "asgigate:session:", timeout: float = 2.0,
                 **options: Any) -> None:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(f"RedisSessions url {url!r} must be a redis://, rediss:// or unix:// URL.")
        try:
            import coredis  # noqa: F401
        except ImportError as error:  # pragma: no cover - depends on the installed extras
            raise ConfigurationError("RedisSessions needs coredis: pip install coredis") from error
        self.url = url
        parts = urlsplit(url)
        self._shown = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()  # no password in logs
        self.prefix = prefix
        self.timeout = timeout
        self.options = options
        self._client: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def client(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            import coredis

            options = {"stream_timeout": self.timeout, "connect_timeout": self.timeout, **self.options}
            self._client = coredis.Redis.from_url(self.url, decode_responses=False, **options)
            self._loop = loop
        return self._client

    async def _call(self, what: str, command: Any) -> Any:
        try:
            return await command
        except Exception as error:  # coredis raises its own errors as well as OSError / TimeoutError
            logger.warning("session store %s failed (%s): %s", self._shown, what, error)
            raise UpstreamUnavailable("The session store is not available.", stage="session_store",
                                      upstream="redis") from None

    async def get(self, session_id: str) -> Session | None:
        client = self.client()
        record, seen = await self._call("get", client.hmget(self.prefix + session_id, ["rec", "t"]))
        if record is None:
            return None
        try:
            session = Session.from_record(orjson.loads(record))
        except orjson.JSONDecodeError:
            return None
        if session is None or session.id != session_id:
            return None
        try:
            session.last_seen = max(session.last_seen, float(seen)) if seen is not None else session.last_seen
        except ValueError:
            pass
        return session

    async def set(self, session: Session, ttl: float) -> None:
        client = self.client()
        await self._call("set", client.eval(_SET, [self.prefix + session.id], [
            orjson.dumps(session.record()), repr(session.last_seen), str(_ms(ttl))]))

    async def touch(self, session: Session, ttl: float) -> None:
        client = self.client()
        await self._call("touch", client.eval(_TOUCH, [self.prefix + session.id],
                                              [repr(session.last_seen), str(_ms(ttl))]))

    async def delete(self, session_id: str) -> None:
        client = self.client()
        await self._call("delete", client.delete([self.prefix + session_id]))

    async def lock(self, session_id: str, ttl: float) -> str | None:
        from coredis.tokens import PureToken

        token = secrets.token_urlsafe(12)
        client = self.client()
        taken = await self._call("lock", client.set(self.prefix + session_id + ":refresh", token,
                                                    condition=PureToken.NX, px=_ms(ttl)))
        return token if taken else None

    async def unlock(self, session_id: str, token: str) -> None:
        client = self.client()
        await self._call("unlock", client.eval(_UNLOCK, [self.prefix + session_id + ":refresh"], [token]))

    async def aclose(self) -> None:
        """Close this store's connections (`OIDCLogin.aclose`, and so the gateway's shutdown, calls it). A later
        call opens a new client."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            client.connection_pool.disconnect()
            await asyncio.sleep(0)  # the closed transports let go of their sockets in the next loop iteration

    def __repr__(self) -> str:
        return f"RedisSessions({self._shown!r}, prefix={self.prefix!r})"


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))
