"""ForwardAuth: ask an external HTTP service whether to allow each request (like nginx `auth_request`).

The service receives a GET with the chosen request headers and `X-Forwarded-Method/-Uri/-Host/-Proto/-For`.
A 2xx answer allows the request, and the chosen headers of that answer are copied onto the upstream request
(incoming copies removed first, so clients cannot forge them); 401 and 403 are passed on to the client (with
the service's `WWW-Authenticate`); anything else, or no answer, refuses with 503: fail closed, unless
`fail_open=True`. Decisions can be cached for `cache_ttl` seconds, keyed on the identity an earlier
authenticator set (or the forwarded credentials), the method and the path.

With ``body=N`` the service also receives the request body (a POST; bodies over N bytes are refused with 413
before it is asked); the body is read once, then replayed to the target unchanged. Only then is the policy an
ASGI layer (it needs the body stream); otherwise it is a request hook and never touches the body.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import httpx

from ..._cache import BoundedCache
from ..._frozen import Frozen
from ..._httpx import translate
from ...errors import BadRequest, ConfigurationError, Forbidden, PayloadTooLarge, Unauthorized, UpstreamUnavailable
from ...exchange import Exchange
from ...pipeline import Policy
from ...types import ASGIApp, Message, Receive, Scope, Send
from ...upstreams import Upstream
from .base import Authenticator, Identity, ambiguous, presented

if TYPE_CHECKING:
    from starlette.responses import Response

__all__ = ["ForwardAuth"]

logger = logging.getLogger("asgigate.auth")
TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
Decision = tuple[int, tuple[tuple[bytes, bytes], ...], str | None]


class ForwardAuth(Frozen, Policy):
    """``ForwardAuth(self.authz, path="/verify", send=["authorization", "cookie"], copy=["x-user-id"])``.

    `upstream` is the decision service (an `Upstream` you keep on the gateway, so its client is pooled and
    closed at shutdown); `path` the URL path to call. `send` names the request headers it receives
    (``authorization`` and ``cookie`` by default; one of them sent twice is 400 `invalid_request`, except
    ``cookie``, whose lines are joined); `copy` the headers of its 2xx answer set on the upstream request.
    `cache_ttl` (0: off) caches decisions, at most `cache_size` of them in `cache_bytes` (the memory the copied
    headers take); `fail_open` lets requests through when it cannot answer.
    `body` (bytes, 0: off) forwards request bodies up to that size (larger ones get 413).
    """

    after = (Authenticator,)

    def __new__(cls, *args: Any, body: int = 0, **options: Any) -> ForwardAuth:
        # Forwarding bodies needs the body stream, so only then is the policy an ASGI layer (see `wrap`).
        return super().__new__(_ForwardAuthWithBody if body and cls is ForwardAuth else cls)

    def __init__(
        self,
        upstream: Upstream,
        *,
        path: str = "/",
        send: Iterable[str] = ("authorization", "cookie"),
        copy: Iterable[str] = (),
        cache_ttl: float = 0.0,
        cache_size: int = 10_000,
        cache_bytes: int = 32 * 1024 * 1024,
        fail_open: bool = False,
        body: int = 0,
        timeout: float | httpx.Timeout | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(upstream, Upstream):
            raise ConfigurationError(f"ForwardAuth needs an Upstream for the decision service, not {upstream!r}.")
        if not path.startswith("/"):
            raise ConfigurationError(f"ForwardAuth path {path!r} must start with '/'.")
        self.upstream = upstream
        self.path = path
        self.send = tuple(name.lower() for name in send)
        self.copy = tuple(name.lower() for name in copy)
        for name in (*self.send, *self.copy):
            if not TOKEN.match(name):
                raise ConfigurationError(f"ForwardAuth header name {name!r} is not a valid header name.")
        if isinstance(body, bool) or not isinstance(body, int) or body < 0:
            raise ConfigurationError(f"ForwardAuth body={body!r} must be a size in bytes (0: no body).")
        if cache_size < 0 or cache_bytes < 0:
            raise ConfigurationError("ForwardAuth cache_size and cache_bytes must not be negative.")
        self.body = body
        self.cache_ttl = cache_ttl
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self.fail_open = fail_open
        self.timeout = timeout
        self._clock = clock
        self._copy_bytes = [name.encode() for name in self.copy]
        # Shared decision cache, not per-request state: keyed by a digest, but a decision holds the headers the
        # service answered (which may repeat what the client sent), so it is bounded by bytes too.
        self._decisions: BoundedCache[bytes, tuple[Decision, float]] = BoundedCache(
            cache_bytes if cache_size and cache_ttl > 0 else 0, max_entries=cache_size or None)

    def _cache_key(self, exchange: Exchange, sent: dict[str, str], body: bytes | None) -> bytes:
        identity = exchange.identity
        who = f"{identity.method}:{identity.subject}:{identity.client_id}" if isinstance(identity, Identity) \
            else "\0".join(f"{k}={v}" for k, v in sorted(sent.items()))
        raw = f"{who}\0{exchange.method}\0{exchange.scope.get('raw_path', b'').decode('latin-1')}"
        digest = hashlib.sha256(raw.encode("utf-8", "replace"))
        if body is not None:
            digest.update(b"\0" + hashlib.sha256(body).digest())
        return digest.digest()

    async def on_request(self, exchange: Exchange) -> Response | None:
        await self._decide(exchange, None)
        return None

    async def _decide(self, exchange: Exchange, body: bytes | None) -> None:
        sent = self._sent(exchange)
        key = self._cache_key(exchange, sent, body) if self.cache_ttl > 0 else None
        cached = self._decisions.get(key) if key is not None else None
        if cached is not None and self._clock() < cached[1]:
            decision = cached[0]
        else:
            decision = await self._ask(exchange, sent, body)
            if key is not None and decision[0] in (200, 401, 403):
                self._decisions.put(key, (decision, self._clock() + self.cache_ttl), _size(decision))
        status, copied, challenge = decision
        if status == 200:
            exchange.replace_headers(self._copy_bytes, copied)
            return
        if status == 401:
            raise Unauthorized("Authentication is required.", challenge=challenge)
        if status == 403:
            raise Forbidden("This request is not allowed.")
        if self.fail_open:
            exchange.replace_headers(self._copy_bytes)
            return
        raise UpstreamUnavailable("The request could not be authorized.", stage="forward_auth",
                                  upstream=self.upstream.name)

    def _sent(self, exchange: Exchange) -> dict[str, str]:
        """The `send` headers, each as one value: the service must judge every line the upstream will get."""
        sent = {}
        for name in self.send:
            values = presented(exchange, "header", name)
            if len(values) > 1:
                if name != "cookie":
                    # The service would judge one line and the upstream get both; the scheme is the service's
                    # business, so no challenge is guessed.
                    raise ambiguous(f"{name} header", f"header {name}", challenge="")
                values = ["; ".join(values)]  # cookies may come one per line (HTTP/2): the service gets them all
            if values:
                sent[name] = values[0]
        return sent

    async def _ask(self, exchange: Exchange, sent: dict[str, str], body: bytes | None) -> Decision:
        raw_path = exchange.scope.get("raw_path") or exchange.scope.get("path", "/").encode()
        query = exchange.scope.get("query_string", b"")
        uri = raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
        headers = {
            **sent,
            "x-forwarded-method": exchange.method,
            "x-forwarded-uri": uri,
            "x-forwarded-host": exchange.headers.get("host", ""),
            "x-forwarded-proto": exchange.scope.get("scheme", "http"),
        }
        if exchange.client_ip:
            headers["x-forwarded-for"] = exchange.client_ip
        if exchange.request_id:
            headers["x-request-id"] = exchange.request_id
        options: dict[str, Any] = {} if self.timeout is None else {"timeout": self.timeout}
        if body is not None:
            options["content"] = body
            if (content_type := exchange.headers.get("content-type")) is not None:
                headers["content-type"] = content_type
        try:
            response = await self.upstream.client.request("GET" if body is None else "POST", self.path,
                                                          headers=headers, **options)
        except httpx.HTTPError as error:
            logger.warning("forward auth at %s failed: %s", self.upstream.name, error)
            if self.fail_open:
                return (503, (), None)
            raise translate(error, stage="forward_auth", upstream=self.upstream.name, dependency=True,
                            detail="The request could not be authorized.") from None
        if 200 <= response.status_code < 300:
            copied = tuple(
                (name.encode(), value.encode("latin-1"))
                for name in self.copy for value in response.headers.get_list(name)
                if not any(c in value for c in "\r\n\0")
            )
            return (200, copied, None)
        if response.status_code in (401, 403):
            return (response.status_code, (), response.headers.get("www-authenticate"))
        logger.warning("forward auth at %s answered %s", self.upstream.name, response.status_code)
        return (503, (), None)

    async def aclose(self) -> None:
        """Close the service's client (the gateway closes it too when one of its routes uses the upstream)."""
        await self.upstream.aclose()

    def _config(self) -> tuple[Any, ...]:
        return (self.upstream, self.path, self.send, self.copy, self.cache_ttl, self.fail_open, self.body)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ForwardAuth) and self._config() == other._config()

    def __hash__(self) -> int:
        return hash((self.upstream.url, self.path, self.send, self.copy, self.cache_ttl, self.fail_open, self.body))

    def __repr__(self) -> str:
        parts = [f"{self.upstream.name}{self.path}"]
        if self.copy:
            parts.append(f"copy={list(self.copy)!r}")
        if self.cache_ttl:
            parts.append(f"cache_ttl={self.cache_ttl}")
        if self.fail_open:
            parts.append("fail_open=True")
        if self.body:
            parts.append(f"body={self.body}")
        return f"ForwardAuth({', '.join(parts)})"


def _size(decision: Decision) -> int:
    """What a cached decision takes: its copied headers and challenge, and about 500 bytes for the entry."""
    _, copied, challenge = decision
    return 512 + sum(sys.getsizeof(name) + sys.getsizeof(value) + 64 for name, value in copied) + len(challenge or "")


class _ForwardAuthWithBody(ForwardAuth):
    """`ForwardAuth(..., body=N)`: reads the body (at most N bytes), asks with it, then replays it to the target."""

    on_request = Policy.on_request  # the decision is made in `wrap`, where the body stream is

    def wrap(self, app: ASGIApp) -> ASGIApp:
        async def forward_auth(scope: Scope, receive: Receive, send: Send) -> None:
            exchange = Exchange.of(scope)  # type: ignore[arg-type]
            body = await self._read_body(exchange, receive)
            await self._decide(exchange, body)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()  # after the body: the disconnect, when it comes
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await app(scope, replay, send)

        return forward_auth

    async def _read_body(self, exchange: Exchange, receive: Receive) -> bytes:
        declared = exchange.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.body:
            raise PayloadTooLarge(f"The request body is larger than {self.body} bytes.")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise BadRequest("The request body was not received completely.", internal="client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.body:
                raise PayloadTooLarge(f"The request body is larger than {self.body} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
