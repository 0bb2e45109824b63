"""OIDCLogin: the gateway as an OpenID Connect relying party for browsers (a backend-for-frontend).

Login is the authorization code flow with PKCE (S256), `state` and `nonce` (kept, sealed, in a short-lived
cookie scoped to the callback path); the ID token is verified with the `BearerAuth` machinery (keys discovered
from the issuer, explicit algorithm allowlist, `iss`/`aud`/`exp`/`iat`) plus the `nonce` and `azp` checks.
The session is sealed (AES-GCM) into the session cookies by default, or kept in a server-side store with only
its sealed id in the cookie (see `_session`).
`SessionAuth` requires the session on a route (browsers are redirected to the login, API calls get 401) and
checks CSRF on state-changing requests; `TokenRelay` sends the session's access token upstream, refreshed
once per session when near expiry.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import math
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import httpx
from starlette.datastructures import MutableHeaders
from starlette.responses import RedirectResponse, Response

from ..._accept import negotiate
from ..._cache import BoundedCache
from ..._frozen import Frozen
from ..._httpx import PolicyClient, translate
from ...errors import (
    BadGateway,
    BadRequest,
    ConfigurationError,
    Forbidden,
    InvalidRequest,
    InvalidToken,
    Unauthorized,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ...pipeline import Policy, ResponseHead
from ...routing import Group, Route
from ._oauth import AUTH_METHODS, authorization_url, require_authlib, token_request
from ._session import (
    CookieSessions,
    MemorySessions,
    Session,
    SessionCipher,
    SessionStore,
    SharedSessionStore,
    session_size,
)
from ._session_redis import RedisSessions
from .base import Authenticator, Identity, ambiguous, only_one, presented, with_error
from .jwt import BearerAuth

if TYPE_CHECKING:
    from ...exchange import Exchange

__all__ = ["CookieSessions", "MemorySessions", "OIDCLogin", "RedisSessions", "SessionAuth", "TokenRelay"]

logger = logging.getLogger("asgigate.auth")

SESSION_KEY = "asgigate.session"
COOKIE_KEY = "asgigate.session_cookie"  # a Session to write into the cookies on the way out, or False: clear them
STALE_KEY = "asgigate.stale_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
LOGIN_TTL = 600.0  # seconds a browser has to come back from the identity provider
TOUCH_INTERVAL = 30.0  # last_seen is written back to the store (or the cookie) at most this often
REFRESH_LOCK_TTL = 10.0  # seconds a replica may hold a session's refresh lock (RedisSessions)
MAX_COPIES = 4  # copies of one session cookie name (or combinations of chunk copies) tried before refusing


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _local_path(value: str | None, default: str) -> str:
    """A return address that stays on this site: a path, never ``//evil.example`` or ``/\\evil.example``."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")) or any(c in value for c in "\r\n\t"):
        return default
    return value


class OIDCLogin:
    """Browser login with an OpenID provider; add `routes()` to the gateway's routes.

    ``OIDCLogin(issuer="https://login.example.com", client_id="web", client_secret=..., secret=SESSION_SECRET,
    base_url="https://shop.example.com")``. `secret` (32+ bytes) seals the cookies. `base_url` is the public
    origin of the gateway (the callback is ``{base_url}{prefix}/callback``); without it, it is taken from the
    request. `scope` is requested at login (add ``offline_access`` where the IdP wants it for refresh tokens);
    `params` are extra authorization request parameters (``{"resource": ...}``). See docs/login.md.
    """

    def __init__(
        self,
        *,
        issuer: str,
        client_id: str,
        secret: str | bytes,
        client_secret: str | None = None,
        base_url: str | None = None,
        prefix: str = "/auth",
        scope: str = "openid",
        params: Mapping[str, str] | None = None,
        auth_method: str = "client_secret_basic",
        after_login: str = "/",
        after_logout: str = "/",
        cookie_name: str = "asgigate_session",
        cookie_secure: bool | None = None,
        cookie_samesite: str = "lax",
        cookie_domain: str | None = None,
        idle_timeout: float = 1800.0,
        absolute_timeout: float = 8 * 3600.0,
        refresh_before: float = 60.0,
        store: SessionStore | CookieSessions | None = None,
        algorithms: Iterable[str] = ("RS256", "ES256"),
        trusted_origins: Iterable[str] = (),
        api_paths: Iterable[str] = (),
        leeway: float = 30.0,
        timeout: float | httpx.Timeout = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        require_authlib("OIDCLogin")
        if not issuer or not client_id:
            raise ConfigurationError("OIDCLogin needs the issuer and the gateway's client_id.")
        if "openid" not in scope.split():
            raise ConfigurationError("OIDCLogin scope must include 'openid'.")
        if auth_method not in AUTH_METHODS:
            raise ConfigurationError("OIDCLogin auth_method is 'client_secret_basic' or 'client_secret_post'.")
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ConfigurationError(f"OIDCLogin prefix {prefix!r} must start with '/' and not end with '/'.")
        if cookie_samesite.lower() not in ("lax", "strict", "none"):
            raise ConfigurationError("OIDCLogin cookie_samesite is 'lax', 'strict' or 'none'.")
        if cookie_samesite.lower() == "none" and cookie_secure is False:
            raise ConfigurationError("OIDCLogin: browsers refuse SameSite=None cookies that are not Secure.")
        if idle_timeout <= 0 or absolute_timeout <= 0 or refresh_before < 0:
            raise ConfigurationError("OIDCLogin timeouts must be positive and refresh_before not negative.")
        if base_url is not None and urlsplit(base_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"OIDCLogin base_url {base_url!r} must be an http(s) URL.")
        self.issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self.base_url = base_url.rstrip("/") if base_url else None
        self.prefix = prefix
        self.scope = scope
        self.params = dict(params or {})
        self.auth_method = auth_method
        self.after_login = _local_path(after_login, "/")
        self.after_logout = after_logout
        self.cookie_name = cookie_name
        self.login_cookie = f"{cookie_name}_login"
        self.cookie_secure = cookie_secure
        self.cookie_samesite = cookie_samesite.lower()
        self.cookie_domain = cookie_domain
        self.idle_timeout = idle_timeout
        self.absolute_timeout = absolute_timeout
        self.refresh_before = refresh_before
        self.store: SessionStore | CookieSessions = store if store is not None else CookieSessions()
        self.trusted_origins = frozenset(origin.rstrip("/") for origin in trusted_origins)
        self.api_paths = tuple(api_paths)
        self.timeout = timeout
        self._clock = clock
        self._cipher = SessionCipher(secret)
        # ID tokens are verified like access tokens (keys from the issuer, allowlisted algorithms), for our client.
        self._id_tokens = BearerAuth(issuer=issuer, audience=client_id, algorithms=algorithms, leeway=leeway,
                                     require=("exp", "iat", "sub"), cache_size=0, timeout=timeout,
                                     clock=clock)
        # Shared state, not per-request: the provider's metadata and the refreshes in flight (one per session).
        self._metadata: dict[str, Any] | None = None
        self._http = PolicyClient(timeout=timeout)  # one client for discovery and token requests
        self._metadata_lock: asyncio.Lock | None = None
        self._refreshing: dict[str, asyncio.Future[Session | None]] = {}
        # Cookie sessions: the refresh just done per session (old refresh token, result, until when), for requests
        # that still carry the cookie of before it: they take its result instead of reusing a rotated token.
        # Bounded by bytes: each holds the IdP's tokens and claims.
        self._rotated: BoundedCache[str, tuple[str, Session, float]] = BoundedCache(16 * 1024 * 1024,
                                                                                   max_entries=10_000)

    # --- routes --------------------------------------------------------------------------------------------

    def routes(self) -> Group:
        """``{prefix}/login``, ``{prefix}/callback`` and ``{prefix}/logout``: add it to the gateway's routes."""
        return Group(self.prefix, [
            Route("/login", self.login, methods=["GET"], name="oidc_login"),
            Route("/callback", self.callback, methods=["GET"], name="oidc_callback"),
            Route("/logout", self.logout, methods=["GET", "POST"], name="oidc_logout"),
        ], skip={SessionAuth, TokenRelay}, name=f"OIDCLogin({self.prefix})")

    @property
    def login_path(self) -> str:
        return f"{self.prefix}/login"

    async def login(self, exchange: Exchange) -> Response:
        """Start the code flow: remember state, nonce and the PKCE verifier, then send the browser to the IdP."""
        metadata = await self.metadata()
        return_to = _local_path(exchange.query_params.get("return_to"), self.after_login)
        state, nonce, verifier = secrets.token_urlsafe(24), secrets.token_urlsafe(24), secrets.token_urlsafe(48)
        url = authorization_url(
            metadata["authorization_endpoint"], client_id=self.client_id,
            redirect_uri=self._origin(exchange) + f"{self.prefix}/callback", scope=self.scope, state=state,
            nonce=nonce, verifier=verifier, extra=dict(self.params),
        )
        response = RedirectResponse(url, status_code=302)
        sealed = self._cipher.seal(self.login_cookie, {"s": state, "n": nonce, "v": verifier, "r": return_to,
                                                       "t": self._clock()})
        self._set_cookie(exchange, response, self.login_cookie, sealed, max_age=int(LOGIN_TTL),
                         path=f"{self.prefix}/callback")
        response.headers["cache-control"] = "no-store"
        return response

    async def callback(self, exchange: Exchange) -> Response:
        """The IdP sends the browser back here: check `state`, redeem the code, verify the ID token, log in."""
        pending = self._open(exchange, self.login_cookie)
        if not isinstance(pending, dict) or self._clock() - float(pending.get("t", 0)) > LOGIN_TTL:
            raise BadRequest("The login expired or was started in another browser; please sign in again.",
                             internal="no valid login cookie at the callback")
        query = exchange.query_params
        if not secrets.compare_digest(str(query.get("state", "")).encode(), str(pending["s"]).encode()):
            raise BadRequest("The login could not be completed; please sign in again.", internal="state mismatch")
        if "error" in query or "code" not in query:
            raise Unauthorized("The identity provider did not sign you in.",
                               internal=f"authorization error {query.get('error')!r}: {query.get('error_description')}")
        tokens = await self._token_request("authorization_code", {
            "code": query["code"],
            "redirect_uri": self._origin(exchange) + f"{self.prefix}/callback",
            "code_verifier": pending["v"],
        })
        if tokens is None:
            raise Unauthorized("The identity provider did not sign you in.", internal="the code was refused")
        id_token = tokens.get("id_token")
        if not isinstance(id_token, str):
            raise Unauthorized("The identity provider did not sign you in.", internal="no id_token in the answer")
        claims = await self._verify_id_token(id_token, pending["n"])
        try:
            previous = await self._load(exchange)
        except InvalidRequest:
            previous = None  # the session cookies are there twice: no telling which session to end
        if previous is not None:
            await self.end(previous)  # a login always starts a new session (no session fixation)
        now = self._clock()
        session = Session(Session.new_id(), claims, id_token, created_at=now, last_seen=now)
        self._take_tokens(session, tokens, now)
        if not isinstance(self.store, CookieSessions):
            await self.store.set(session, self._ttl(session, now))
        cookies = self._session_cookies(exchange, session)
        if cookies is None:
            raise BadGateway("The sign-in could not be completed.", stage="oidc_session", upstream=self.issuer,
                             internal="the tokens are too large for the session cookies: use a server-side store")
        response = RedirectResponse(_local_path(pending.get("r"), self.after_login), status_code=302)
        response.headers["cache-control"] = "no-store"
        self._delete_cookie(exchange, response, self.login_cookie, path=f"{self.prefix}/callback")
        for cookie in cookies:
            response.headers.append("set-cookie", cookie)
        return response

    async def logout(self, exchange: Exchange) -> Response:
        """End the session here, then at the IdP (RP-initiated logout) when it has an `end_session_endpoint`."""
        site = self._header(exchange, "sec-fetch-site")
        if (exchange.method != "GET" or site is not None) and site not in ("same-origin", "none") \
                and not self.same_origin(exchange):
            raise Forbidden("Cross-site logout requests are refused.", internal="csrf: cross-site logout")
        try:
            session = await self.session(exchange)
        except InvalidRequest:
            session = None  # the session cookies are there twice: logging out still clears them
        if session is not None:
            await self.end(session)
        after = self.after_logout
        if after.startswith("/"):
            after = self._origin(exchange) + after
        target = after
        if session is not None:
            try:
                metadata = await self.metadata()
            except (UpstreamUnavailable, UpstreamTimeout):  # the local session is over anyway: the browser goes on
                metadata = {}
            endpoint = metadata.get("end_session_endpoint")
            if isinstance(endpoint, str):
                query = {"id_token_hint": session.id_token, "post_logout_redirect_uri": after,
                         "client_id": self.client_id}
                target = f"{endpoint}?{urlencode(query)}"
        response = RedirectResponse(target, status_code=302 if exchange.method == "GET" else 303)
        response.headers["cache-control"] = "no-store"
        for cookie in self._clear_cookies(exchange):
            response.headers.append("set-cookie", cookie)
        return response

    # --- sessions ------------------------------------------------------------------------------------------

    async def session(self, exchange: Exchange) -> Session | None:
        """The request's live session (idle and absolute timeouts checked), or None; cached on the exchange."""
        if SESSION_KEY in exchange.state:
            found: Session | None = exchange.state[SESSION_KEY]
            return found
        session = await self._load(exchange)
        now = self._clock()
        if session is not None and (now - session.last_seen > self.idle_timeout
                                    or now - session.created_at > self.absolute_timeout):
            await self.end(session)
            session = None
        elif session is not None and now - session.last_seen > TOUCH_INTERVAL:
            session.last_seen = now
            if isinstance(self.store, CookieSessions):
                exchange.state[COOKIE_KEY] = session
            else:
                await self.store.touch(session, self._ttl(session, now))
        if session is None and exchange.request.cookies.get(self.cookie_name):
            exchange.state[STALE_KEY] = True
            exchange.state[COOKIE_KEY] = False
        exchange.state[SESSION_KEY] = session
        return session

    async def _load(self, exchange: Exchange) -> Session | None:
        """The session the request's cookies name or hold (timeouts not checked yet), or None."""
        opened = self._read_cookies(exchange)
        if isinstance(self.store, CookieSessions):
            session = Session.from_record(opened)
            if session is not None and self.store.ended(session.id, self._clock()):
                return None
            return session
        if not isinstance(opened, dict) or not isinstance(opened.get("id"), str):
            return None
        return await self.store.get(opened["id"])

    async def end(self, session: Session) -> None:
        """End a session: removed from the store (with cookie sessions: refused on this replica until it would
        have expired). The caller clears the cookies."""
        if isinstance(self.store, CookieSessions):
            self.store.end(session.id, session.created_at + self.absolute_timeout)
        else:
            await self.store.delete(session.id)

    async def access_token(self, session: Session, exchange: Exchange | None = None) -> str | None:
        """The session's access token, refreshed when it is within `refresh_before` of expiry (once per session
        however many requests need it). None when the session has no usable token any more (it is then ended).
        With cookie sessions, the refreshed session goes out in `exchange`'s response cookies."""
        now = self._clock()
        if self._fresh(session, now):
            return session.access_token
        if session.refresh_token is None:
            if session.access_token and (session.expires_at is None or now < session.expires_at):
                return session.access_token
            await self.end(session)  # expired, and nothing to renew it with
            self._ended(exchange)
            return None
        flight = self._refreshing.get(session.id)
        if flight is None:
            flight = asyncio.ensure_future(self._refresh(session.copy()))
            self._refreshing[session.id] = flight
            flight.add_done_callback(lambda _: self._refreshing.pop(session.id, None))
        refreshed = await asyncio.shield(flight)
        if refreshed is None:
            self._ended(exchange)
            return None
        if refreshed.access_token != session.access_token:
            session.adopt(refreshed)
            if exchange is not None and isinstance(self.store, CookieSessions):
                exchange.state[COOKIE_KEY] = session
        return session.access_token

    def _fresh(self, session: Session, now: float) -> bool:
        return bool(session.access_token) and (session.expires_at is None
                                               or now < session.expires_at - self.refresh_before)

    def _ended(self, exchange: Exchange | None) -> None:
        if exchange is not None:
            exchange.state[SESSION_KEY] = None
            exchange.state[STALE_KEY] = True
            exchange.state[COOKIE_KEY] = False

    async def _refresh(self, session: Session) -> Session | None:
        """One refresh of `session` (a copy), for this process's requests: with a shared store, under the
        session's lock, so that one replica refreshes and the others take its result from the store."""
        store = self.store
        if isinstance(store, CookieSessions):
            rotated = self._rotated.get(session.id)
            if rotated is not None and rotated[0] == session.refresh_token and self._clock() < rotated[2]:
                return rotated[1]  # this request carries the cookie of before the refresh done just now
            old = session.refresh_token
            refreshed = await self._refresh_at_idp(session)
            if refreshed is not None and old is not None and refreshed.refresh_token != old:
                now = self._clock()
                until = min(refreshed.expires_at or now + 60.0, now + 300.0)
                self._rotated.put(session.id, (old, refreshed.copy(), until), session_size(refreshed) + len(old))
            return refreshed
        if not isinstance(store, SharedSessionStore):
            return await self._refresh_at_idp(session)
        deadline = self._clock() + REFRESH_LOCK_TTL + 5.0
        while (token := await store.lock(session.id, REFRESH_LOCK_TTL)) is None:
            await asyncio.sleep(0.05)  # another replica refreshes: its result will be in the store
            current = await store.get(session.id)
            if current is None:
                return None
            if current.refresh_token != session.refresh_token or self._fresh(current, self._clock()):
                return current
            if self._clock() > deadline:
                raise UpstreamUnavailable("The session could not be renewed.", stage="oidc_refresh_lock",
                                          upstream=self.issuer)
        try:
            current = await store.get(session.id)  # again, under the lock: the refresh may just have been done
            if current is None:
                return None
            if current.refresh_token != session.refresh_token or self._fresh(current, self._clock()):
                return current
            return await self._refresh_at_idp(current)
        finally:
            await store.unlock(session.id, token)

    async def _refresh_at_idp(self, session: Session) -> Session | None:
        try:
            tokens = await self._token_request("refresh_token", {"refresh_token": session.refresh_token or ""})
        except (UpstreamUnavailable, UpstreamTimeout):
            if session.access_token and session.expires_at is not None and self._clock() < session.expires_at:
                return session  # the IdP is down: the current token still works for a while
            raise
        if tokens is None:  # the refresh token was refused (revoked, expired, reused): the session is over
            logger.info("refresh refused; ending session of %s", session.claims.get("sub"))
            await self.end(session)
            return None
        now = self._clock()
        self._take_tokens(session, tokens, now)
        if not isinstance(self.store, CookieSessions):
            await self.store.set(session, self._ttl(session, now))
        return session

    def _take_tokens(self, session: Session, tokens: Mapping[str, Any], now: float) -> None:
        access = tokens.get("access_token")
        session.access_token = access if isinstance(access, str) and access else None
        expires_in = tokens.get("expires_in")
        session.expires_at = now + float(expires_in) if isinstance(expires_in, int | float) else None
        refresh = tokens.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            session.refresh_token = refresh  # a rotated refresh token replaces the old one
        id_token = tokens.get("id_token")
        if isinstance(id_token, str) and id_token:
            session.id_token = id_token

    def _ttl(self, session: Session, now: float) -> float:
        remaining = self.absolute_timeout - (now - session.created_at)
        return max(1.0, min(self.idle_timeout + TOUCH_INTERVAL, remaining))

    def _open(self, exchange: Exchange, name: str) -> Any:
        """The value sealed in the cookie `name` (the login cookie), or None; see `_read_cookies` for copies."""
        opened = [value for copy in self._copies(exchange, name)
                  if copy and (value := self._cipher.open(name, copy)) is not None]
        if len(opened) > 1:
            raise self._ambiguous(name)
        return opened[0] if opened else None

    def _copies(self, exchange: Exchange, name: str) -> list[str]:
        copies = presented(exchange, "cookie", name)
        if len(copies) > MAX_COPIES:
            raise self._ambiguous(name)
        return copies

    def _ambiguous(self, name: str) -> InvalidRequest:
        return ambiguous("session", f"cookie {name}", with_error(self.challenge, "invalid_request"))

    @staticmethod
    def _header(exchange: Exchange, name: str) -> str | None:
        """A header the CSRF check decides on: a request cannot carry it twice (browsers send each once)."""
        return only_one(exchange, [("header", name)], f"{name} header", challenge="")

    # --- browser or API, CSRF ------------------------------------------------------------------------------

    def wants_redirect(self, exchange: Exchange) -> bool:
        """Whether a request without a session is a page navigation (302 to the login) or an API call (401)."""
        if exchange.method not in ("GET", "HEAD") or exchange.headers.get("x-requested-with"):
            return False
        path = exchange.scope.get("path", "")
        if any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.api_paths):
            return False
        mode = exchange.headers.get("sec-fetch-mode")
        if mode is not None:
            return mode == "navigate"
        return negotiate(exchange.headers.get("accept", ""), ("json", "html")) == "html"

    def refuse(self, exchange: Exchange) -> Response:
        """The answer to a request that needs a session and has none: a redirect to the login, or 401."""
        if self.wants_redirect(exchange):
            target = exchange.scope.get("path", "/")
            if exchange.scope.get("query_string"):
                target += "?" + exchange.scope["query_string"].decode("latin-1")
            response = RedirectResponse(f"{self.login_path}?{urlencode({'return_to': target})}", status_code=302)
            response.headers["cache-control"] = "no-store"
            if exchange.state.get(STALE_KEY):
                exchange.state.pop(COOKIE_KEY, None)
                for cookie in self._clear_cookies(exchange):
                    response.headers.append("set-cookie", cookie)
            return response
        headers = {}
        if exchange.state.get(STALE_KEY):
            # (an error reply has room for one Set-Cookie: without the first cookie, the others open nothing;
            # a response hook of SessionAuth or TokenRelay, where one runs, clears them all)
            headers["set-cookie"] = self._cookie(exchange, self.cookie_name, "", max_age=0)
        raise Unauthorized("Sign in first.", challenge=self.challenge, headers=headers)

    @property
    def challenge(self) -> str:
        return f'Session login="{self.login_path}"'

    def same_origin(self, exchange: Exchange) -> bool:
        """The CSRF check: the request comes from this site's own pages (or a trusted origin).

        ``Origin`` is compared to the gateway's origin and `trusted_origins`; without it, ``Sec-Fetch-Site:
        same-origin`` is accepted. A request with neither (no browser sends an unsafe one like that) is refused.
        """
        origin = self._header(exchange, "origin")
        if origin is not None and origin != "null":
            return origin.rstrip("/") in self.trusted_origins or origin.rstrip("/") == self._origin(exchange)
        return self._header(exchange, "sec-fetch-site") == "same-origin"

    # --- the identity provider -----------------------------------------------------------------------------

    async def metadata(self) -> dict[str, Any]:
        """The provider's discovery document (fetched once; retried on the next request when it failed)."""
        if self._metadata is not None:
            return self._metadata
        if self._metadata_lock is None:
            self._metadata_lock = asyncio.Lock()
        async with self._metadata_lock:
            if self._metadata is None:
                url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
                try:
                    response = await self._http.get().get(url, headers={"accept": "application/json"})
                    response.raise_for_status()
                    document = response.json()
                    if not isinstance(document, dict) or document.get("issuer") != self.issuer:
                        raise ValueError("the discovery document names another issuer")
                    for name in ("authorization_endpoint", "token_endpoint"):
                        if not isinstance(document.get(name), str):
                            raise ValueError(f"the discovery document has no {name}")
                except (httpx.HTTPError, ValueError) as error:
                    logger.warning("OpenID discovery of %s failed: %s", self.issuer, error)
                    raise translate(error, stage="oidc_discovery", upstream=self.issuer, dependency=True,
                                    detail="The identity provider is not available.") from None
                self._metadata = document
        return self._metadata

    async def _token_request(self, grant_type: str, params: dict[str, str]) -> dict[str, Any] | None:
        """POST to the token endpoint; None when the IdP refuses (4xx), 503 when it cannot answer."""
        endpoint = (await self.metadata())["token_endpoint"]
        try:
            response = await token_request(self._http.get(), endpoint, grant_type, params, client_id=self.client_id,
                                           client_secret=self._client_secret, auth_method=self.auth_method)
            if 400 <= response.status_code < 500:
                logger.info("token endpoint refused %s: %s", grant_type, response.text[:200])
                return None
            response.raise_for_status()
            body = response.json()
            if not isinstance(body, dict):
                raise ValueError("the token response is not a JSON object")
            return body
        except (httpx.HTTPError, ValueError) as error:
            logger.warning("token endpoint of %s failed: %s", self.issuer, error)
            raise translate(error, stage="oidc_token", upstream=self.issuer, dependency=True,
                            detail="The identity provider is not available.") from None

    async def _verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            identity = await self._id_tokens.verify(id_token)
        except InvalidToken as error:
            raise Unauthorized("The identity provider's answer could not be verified.",
                               internal=f"id_token: {error.internal}") from None
        claims = dict(identity.claims)
        claimed = claims.get("nonce")
        if not isinstance(claimed, str) or not secrets.compare_digest(claimed.encode(), nonce.encode()):
            raise Unauthorized("The identity provider's answer could not be verified.", internal="nonce mismatch")
        aud = claims.get("aud")
        if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != self.client_id:
            raise Unauthorized("The identity provider's answer could not be verified.", internal="azp mismatch")
        return claims

    # --- cookies -------------------------------------------------------------------------------------------

    def _origin(self, exchange: Exchange) -> str:
        if self.base_url is not None:
            return self.base_url
        scheme = exchange.scope.get("scheme", "http")
        host = exchange.headers.get("host") or "localhost"
        return f"{scheme}://{host}"

    def _secure(self, exchange: Exchange) -> bool:
        if self.cookie_secure is not None:
            return self.cookie_secure
        return self._origin(exchange).startswith("https://")

    def _set_cookie(self, exchange: Exchange, response: Response, name: str, value: str, *, max_age: int,
                    path: str = "/") -> None:
        response.set_cookie(name, value, max_age=max_age, path=path, domain=self.cookie_domain,
                            secure=self._secure(exchange), httponly=True,
                            samesite=self.cookie_samesite)  # type: ignore[arg-type]

    def _delete_cookie(self, exchange: Exchange, response: Response, name: str, path: str = "/") -> None:
        response.delete_cookie(name, path=path, domain=self.cookie_domain, secure=self._secure(exchange),
                               httponly=True, samesite=self.cookie_samesite)  # type: ignore[arg-type]

    def _cookie(self, exchange: Exchange, name: str, value: str, *, max_age: int) -> str:
        """One Set-Cookie header value with the session cookies' attributes (max_age 0 deletes the cookie)."""
        probe = Response()
        if max_age <= 0:
            self._delete_cookie(exchange, probe, name)
        else:
            self._set_cookie(exchange, probe, name, value, max_age=max_age)
        return probe.headers["set-cookie"]

    def _chunk_names(self, exchange: Exchange) -> list[str]:
        """The session cookies the request carries: ``{name}`` and ``{name}.1``, ``{name}.2``..."""
        prefix = self.cookie_name + "."
        return [name for name in exchange.request.cookies
                if name == self.cookie_name or (name.startswith(prefix) and name[len(prefix):].isdigit())]

    def _read_cookies(self, exchange: Exchange) -> Any:
        """The value sealed across the session cookies (``{name}`` holds ``count.part``), or None when any part
        is missing, reordered or tampered with.

        A browser can hold a cookie name twice (one for this host and one for a parent domain, after
        `cookie_domain` changed; one tossed in by a sibling site) and send both. Copies that do not open are
        no session (noise a sibling site could toss in to lock users out); copies of the one session are that
        session (the most recently active copy is taken); copies of two sessions are refused with 400
        `invalid_request`: neither may win by its position (a login CSRF by cookie tossing).
        """
        name = self.cookie_name
        chunks: dict[int, list[str]] = {}
        opened: list[Any] = []
        for first in self._copies(exchange, name):
            count, _, part = first.partition(".")
            if not count.isdigit() or not 1 <= int(count) <= self._max_chunks:
                continue
            rest = [chunks.setdefault(i, self._copies(exchange, f"{name}.{i}")) for i in range(1, int(count))]
            if math.prod(len(copies) for copies in rest) > MAX_COPIES:
                raise self._ambiguous(name)
            for combination in itertools.product(*rest):  # one combination, unless a chunk is there twice
                value = self._cipher.open(name, part + "".join(combination))
                if value is not None:
                    opened.append(value)
                    break
        if len(opened) > 1:
            ids = {value.get("id") if isinstance(value, dict) else None for value in opened}
            if len(ids) > 1 or None in ids:
                raise self._ambiguous(name)
            return max(opened, key=lambda value: value.get("t") if isinstance(value.get("t"), int | float) else 0)
        return opened[0] if opened else None

    @property
    def _max_chunks(self) -> int:
        return self.store.max_chunks if isinstance(self.store, CookieSessions) else 1

    def _session_cookies(self, exchange: Exchange, session: Session) -> list[str] | None:
        """The Set-Cookie values that carry `session` (the whole record, or its id with a server-side store),
        and that delete the request's session cookies no longer needed. None when it does not fit."""
        now = self._clock()
        max_age = max(1, int(session.created_at + self.absolute_timeout - now))
        if isinstance(self.store, CookieSessions):
            sealed = self._cipher.seal(self.cookie_name, session.record(), compress=True)
            longest = f"{self.cookie_name}.{self.store.max_chunks}"
            room = self.store.chunk_size - len(self._cookie(exchange, longest, "x", max_age=max_age)) - 3
            parts = [sealed[i:i + room] for i in range(0, len(sealed), room)]
            if len(parts) > self.store.max_chunks:
                logger.warning("session of %s needs %d cookies (max_chunks=%d)", session.claims.get("sub"),
                               len(parts), self.store.max_chunks)
                return None
        else:
            parts = [self._cipher.seal(self.cookie_name, {"id": session.id})]
        names = [self.cookie_name] + [f"{self.cookie_name}.{i}" for i in range(1, len(parts))]
        cookies = [self._cookie(exchange, name, f"{len(parts)}.{part}" if i == 0 else part, max_age=max_age)
                   for i, (name, part) in enumerate(zip(names, parts, strict=True))]
        cookies += [self._cookie(exchange, name, "", max_age=0) for name in self._chunk_names(exchange)
                    if name not in names]
        return cookies

    def _clear_cookies(self, exchange: Exchange) -> list[str]:
        return [self._cookie(exchange, name, "", max_age=0) for name in self._chunk_names(exchange)]

    def write_cookies(self, exchange: Exchange, headers: MutableHeaders) -> None:
        """On the way out: the session cookies changed by this request (a refresh, recorded activity, an end)."""
        pending = exchange.state.pop(COOKIE_KEY, None)
        if pending is None:
            return
        cookies = self._session_cookies(exchange, pending) if isinstance(pending, Session) else None
        if cookies is None:  # the session ended (or outgrew the cookies: it ends too)
            cookies = self._clear_cookies(exchange)
        for cookie in cookies:
            headers.append("set-cookie", cookie)
        cache_control = headers.get("cache-control", "")
        if "no-store" not in cache_control and "private" not in cache_control:
            headers["cache-control"] = "no-store"  # a shared cache must never keep (and hand out) a session

    async def aclose(self) -> None:
        """Close the clients that talk to the provider, and the session store's connections. `SessionAuth` and
        `TokenRelay` call this from their own `aclose()`, so the gateway's shutdown reaches it (more than once is
        fine)."""
        await self._http.aclose()
        await self._id_tokens.aclose()
        close = getattr(self.store, "aclose", None)  # a store with connections of its own (RedisSessions)
        if close is not None:
            await close()

    def __repr__(self) -> str:
        return f"OIDCLogin(issuer={self.issuer!r}, client_id={self.client_id!r}, prefix={self.prefix!r})"


class SessionAuth(Frozen, Authenticator):
    """Requires a logged-in `OIDCLogin` session: ``SessionAuth(login)``; sets `exchange.identity`.

    Without a session, page navigations are redirected to the login (and come back afterwards); other requests
    (``fetch``/XHR, ``Accept: application/json``, `X-Requested-With`, the login's `api_paths`) get 401.
    State-changing requests (not GET/HEAD/OPTIONS) must come from the site itself (`OIDCLogin.same_origin`),
    else 403 ``forbidden`` (reason ``csrf``). The session cookies are not forwarded upstream; a request whose
    cookies hold two different sessions is 400 ``invalid_request`` (see `OIDCLogin._read_cookies`).
    """

    def __init__(self, login: OIDCLogin, *, optional: bool = False, csrf: bool = True) -> None:
        self.login = login
        self.optional = optional
        self.csrf = csrf
        self._cookies = (login.cookie_name, login.login_cookie)
        self.places = (("cookie", login.cookie_name),)  # a session split in chunks starts with this one too

    @property
    def challenge(self) -> str:
        return self.login.challenge

    async def authenticate(self, exchange: Exchange) -> Identity | None:
        session = await self.login.session(exchange)
        if session is None:
            return None
        if self.csrf and exchange.method not in SAFE_METHODS and not self.login.same_origin(exchange):
            error = Forbidden("Cross-site requests cannot use the session.",
                              internal=f"csrf: origin {exchange.headers.get('origin')!r}, "
                                       f"sec-fetch-site {exchange.headers.get('sec-fetch-site')!r}")
            error.reason = "csrf"
            raise error
        self._strip_cookies(exchange)
        subject = session.claims.get("sub")
        return Identity(subject if isinstance(subject, str) else None, claims=MappingProxyType(session.claims),
                        method="session")

    async def on_request(self, exchange: Exchange) -> Response | None:
        identity = await self.authenticate(exchange)
        if identity is None:
            return None if self.optional else self.login.refuse(exchange)
        exchange.identity = identity
        return None

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        self.login.write_cookies(exchange, head.headers)

    async def aclose(self) -> None:
        await self.login.aclose()

    def _strip_cookies(self, exchange: Exchange) -> None:
        """Remove the gateway's cookies from every `Cookie` line (HTTP/2 sends one per cookie); the others go
        upstream in one line, as RFC 9113 8.2.3 has them joined for HTTP/1.1."""
        lines = exchange.headers.getlist("cookie")
        if not lines:
            return
        prefix = self.login.cookie_name + "."
        kept = [stripped for line in lines for part in line.split(";")
                if (stripped := part.strip())
                and (name := stripped.partition("=")[0].strip()) not in self._cookies
                and not (name.startswith(prefix) and name[len(prefix):].isdigit())]
        add = [(b"cookie", "; ".join(kept).encode("latin-1"))] if kept else []
        exchange.replace_headers([b"cookie"], add)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SessionAuth) and (self.login, self.optional, self.csrf) == (
            other.login, other.optional, other.csrf)

    def __hash__(self) -> int:
        return hash((SessionAuth, id(self.login), self.optional, self.csrf))

    def __repr__(self) -> str:
        extra = (", optional=True" if self.optional else "") + ("" if self.csrf else ", csrf=False")
        return f"SessionAuth({self.login!r}{extra})"


class TokenRelay(Frozen, Policy):
    """Sends the session's access token upstream as ``Authorization: Bearer ...``: ``TokenRelay(login)``.

    Put it after `SessionAuth`. The token is refreshed when near expiry (`OIDCLogin.refresh_before`), once per
    session however many requests arrive meanwhile; when it cannot be refreshed the session ends and the
    request is answered like one without a session. Requests authenticated otherwise (a bearer token through
    `AnyAuth`) keep their own `Authorization` header.
    """

    after = (Authenticator,)

    def __init__(self, login: OIDCLogin) -> None:
        self.login = login

    async def on_request(self, exchange: Exchange) -> Response | None:
        session: Session | None = exchange.state.get(SESSION_KEY)
        if session is None:
            return None
        token = await self.login.access_token(session, exchange)
        if token is None:
            return self.login.refuse(exchange)
        exchange.replace_headers([b"authorization"], [(b"authorization", f"Bearer {token}".encode("latin-1"))])
        return None

    async def on_response(self, exchange: Exchange, head: ResponseHead) -> None:
        self.login.write_cookies(exchange, head.headers)

    async def aclose(self) -> None:
        await self.login.aclose()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenRelay) and self.login is other.login

    def __hash__(self) -> int:
        return hash((TokenRelay, id(self.login)))

    def __repr__(self) -> str:
        return f"TokenRelay({self.login!r})"
