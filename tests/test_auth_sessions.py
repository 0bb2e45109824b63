"""OIDCLogin's session stores through a real gateway under uvicorn: cookie sessions (sealed, chunked), memory and a
real redis-server; idle and absolute timeouts for each. Sessions are made here (no provider needed: the tokens
never expire in these tests); the login itself is in test_auth_login_browser.py and test_auth_sessions_replicas.py.
"""

from __future__ import annotations

import asyncio
import os
import time
from http.cookies import SimpleCookie
from typing import Any

import httpx
import orjson
import pytest

from asgigate import ConfigurationError, Exchange, Gateway, OIDCLogin, Proxy, Route, SessionAuth, TokenRelay, Upstream
from asgigate.policies.auth import CookieSessions, MemorySessions, RedisSessions
from asgigate.policies.auth._session import Session, SessionCipher
from asgigate.testing import BackgroundServer

from redisserver import RedisServer
from servers import ManualClock, close_sessions

SECRET = "sessions-test-secret-0123456789abcdef"


class Site(Gateway):
    def __init__(self, upstream_url: str, store: Any, clock: ManualClock, **options: Any) -> None:
        super().__init__()
        self.backend = Upstream(upstream_url, name="backend")
        self.login = OIDCLogin(issuer="http://127.0.0.1:9", client_id="web", client_secret="s", secret=SECRET,
                               store=store, clock=clock, idle_timeout=300, absolute_timeout=3600, **options)

    def policies(self) -> list[Any]:
        return [SessionAuth(self.login), TokenRelay(self.login)]

    def routes(self) -> list[Any]:
        return [self.login.routes(), Route("/{rest:path}", Proxy(self.backend, path="/echo"))]


def probe(gateway: Gateway, cookies: dict[str, str] | None = None) -> Exchange:
    header = "; ".join(f"{k}={v}" for k, v in (cookies or {}).items())
    return Exchange({"type": "http", "method": "GET", "path": "/", "scheme": "http", "query_string": b"",
                     "headers": [(b"host", b"site.test"), (b"cookie", header.encode())]}, gateway)


def parse(set_cookies: list[str]) -> dict[str, str]:
    """name -> value of Set-Cookie headers; deleted cookies get ''."""
    found = {}
    for header in set_cookies:
        morsel = next(iter(SimpleCookie(header).values()))
        found[morsel.key] = "" if morsel["max-age"] == "0" else morsel.value
    return found


def new_session(login: OIDCLogin, **claims: Any) -> Session:
    now = login._clock()
    return Session(Session.new_id(), {"sub": "alice", **claims}, "id.token.here", access_token="access-1",
                   refresh_token="refresh-1", expires_at=now + 86400, created_at=now, last_seen=now)


async def sign_in(site: Site, session: Session) -> dict[str, str]:
    """The cookies the login's callback would set for `session`."""
    login = site.login
    if not isinstance(login.store, CookieSessions):
        await login.store.set(session, login._ttl(session, login._clock()))
        await close_sessions(login.store)  # this event loop ends here; the server's has its own connections
    cookies = login._session_cookies(probe(site), session)
    assert cookies is not None
    return parse(cookies)


def fetch(base: str, path: str, cookies: dict[str, str], accept: str = "application/json") -> httpx.Response:
    """A request with exactly these cookies (a fresh client: nothing kept from earlier answers)."""
    with httpx.Client(base_url=base, cookies=cookies, timeout=10) as client:
        return client.get(path, headers={"accept": accept})


def authorization(response: httpx.Response) -> str | None:
    assert response.status_code == 200, response.text
    headers = dict(response.json()["headers"])
    assert "asgigate_session" not in headers.get("cookie", "")  # never forwarded upstream
    return headers.get("authorization")


# --- the cookie store: sealing, chunks ----------------------------------------------------------------------


def test_compressed_sealing_round_trips_and_stays_bounded() -> None:
    cipher = SessionCipher(SECRET)
    value = {"claims": ["repeated text"] * 200}
    plain, packed = cipher.seal("c", value), cipher.seal("c", value, compress=True)
    assert len(packed) < len(plain) / 5
    assert cipher.open("c", packed) == value == cipher.open("c", plain)
    assert cipher.open("other", packed) is None


def test_large_sessions_are_split_and_reassembled(upstream: BackgroundServer) -> None:
    site = Site(upstream.url, CookieSessions(chunk_size=1200, max_chunks=8), ManualClock())
    login = site.login
    session = new_session(login, blob=os.urandom(2500).hex())  # random: compression cannot shrink it
    set_cookies = login._session_cookies(probe(site), session)
    assert set_cookies is not None and len(set_cookies) >= 4
    assert all(len(header) <= 1200 for header in set_cookies)
    assert all("HttpOnly" in header and "SameSite=lax" in header for header in set_cookies)
    jar = parse(set_cookies)
    assert list(jar) == ["asgigate_session"] + [f"asgigate_session.{i}" for i in range(1, len(jar))]
    assert session.refresh_token not in "".join(jar.values())
    restored = login._read_cookies(probe(site, jar))
    assert Session.from_record(restored) == session

    # The session shrinks: one cookie now, and the request's other chunks are deleted.
    small = new_session(login)
    shrunk = parse(login._session_cookies(probe(site, jar), small) or [])
    assert shrunk["asgigate_session"].startswith("1.")
    assert all(shrunk[name] == "" for name in jar if name != "asgigate_session")

    # Too large for max_chunks: no cookies (the login then fails with 502, see test_login_too_large...).
    huge = new_session(login, blob=os.urandom(8000).hex())
    assert login._session_cookies(probe(site), huge) is None


def test_tampered_missing_or_reordered_chunks_are_no_session(upstream: BackgroundServer) -> None:
    clock = ManualClock()
    site = Site(upstream.url, CookieSessions(chunk_size=1000, max_chunks=8), clock)
    session = new_session(site.login, blob=os.urandom(1500).hex())
    jar = parse(site.login._session_cookies(probe(site), session) or [])
    assert len(jar) >= 3
    first = jar["asgigate_session"]
    broken = {
        "missing": {k: v for k, v in jar.items() if k != "asgigate_session.2"},
        "reordered": {**jar, "asgigate_session.1": jar["asgigate_session.2"], "asgigate_session.2": jar[
            "asgigate_session.1"]},
        "tampered": {**jar, "asgigate_session.1": jar["asgigate_session.1"][:-3] + "AAA"},
        "wrong count": {**jar, "asgigate_session": "2" + first[1:]},
        "huge count": {**jar, "asgigate_session": "99" + first[1:]},
        "no count": {**jar, "asgigate_session": first.partition(".")[2]},
        "garbage": {"asgigate_session": "1.!!!", "asgigate_session.1": "x"},
    }
    with BackgroundServer(site) as gateway:
        assert authorization(fetch(gateway.url, "/orders", jar)) == "Bearer access-1"
        for name, cookies in broken.items():
            response = fetch(gateway.url, "/orders", cookies)
            assert response.status_code == 401, name
            assert response.json()["code"] == "unauthorized"
            assert 'asgigate_session=""' in response.headers["set-cookie"], name
            page = fetch(gateway.url, "/orders", cookies, accept="text/html")
            assert page.status_code == 302, name
            cleared = parse(page.headers.get_list("set-cookie"))
            assert set(cleared) == set(cookies) and not any(cleared.values()), name  # every chunk deleted


def test_cookie_store_configuration() -> None:
    with pytest.raises(ConfigurationError, match="chunk_size"):
        CookieSessions(chunk_size=5000)
    with pytest.raises(ConfigurationError, match="max_chunks"):
        CookieSessions(max_chunks=0)
    with pytest.raises(ConfigurationError, match="redis://"):
        RedisSessions("http://localhost:6379")
    assert "secret" not in repr(RedisSessions("redis://:secret@10.0.0.5:6379/0"))


# --- every store: timeouts, activity, logout -----------------------------------------------------------------


STORES = ["cookie", "memory", "redis"]


def make_store(kind: str, redis: RedisServer) -> Any:
    if kind == "cookie":
        return CookieSessions()
    if kind == "memory":
        return MemorySessions()
    return RedisSessions(redis.uri, prefix=f"test:{os.urandom(4).hex()}:")


@pytest.mark.parametrize("kind", STORES)
def test_idle_timeout_extended_by_activity(kind: str, upstream: BackgroundServer, redis: RedisServer) -> None:
    clock = ManualClock()
    site = Site(upstream.url, make_store(kind, redis), clock)
    with BackgroundServer(site) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as client:
        jar = asyncio.run(sign_in(site, new_session(site.login)))
        client.cookies.update(jar)
        assert authorization(client.get("/a")) == "Bearer access-1"
        for _ in range(4):  # active every 200 s: 800 s in all, more than the 300 s idle timeout
            clock.now += 200
            response = client.get("/a")
            assert authorization(response) == "Bearer access-1"
            if kind == "cookie":  # the activity is recorded in a new cookie
                assert "asgigate_session=" in response.headers["set-cookie"]
                assert response.headers["cache-control"] == "no-store"
        clock.now += 301
        response = client.get("/a", headers={"accept": "application/json"})
        assert response.status_code == 401
        assert 'asgigate_session=""' in response.headers["set-cookie"]


@pytest.mark.parametrize("kind", STORES)
def test_absolute_timeout_however_active(kind: str, upstream: BackgroundServer, redis: RedisServer) -> None:
    clock = ManualClock()
    site = Site(upstream.url, make_store(kind, redis), clock)
    with BackgroundServer(site) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as client:
        client.cookies.update(asyncio.run(sign_in(site, new_session(site.login))))
        for _ in range(14):  # 14 x 250 s = 3500 s, under the absolute timeout of 3600 s
            clock.now += 250
            assert authorization(client.get("/a")) == "Bearer access-1"
        clock.now += 150
        assert client.get("/a", headers={"accept": "application/json"}).status_code == 401


@pytest.mark.parametrize("kind", STORES)
def test_logout_ends_the_session_for_copies_of_the_cookie(kind: str, upstream: BackgroundServer,
                                                          redis: RedisServer) -> None:
    site = Site(upstream.url, make_store(kind, redis), ManualClock())
    with BackgroundServer(site) as gateway, httpx.Client(base_url=gateway.url, timeout=10) as client:
        jar = asyncio.run(sign_in(site, new_session(site.login)))
        client.cookies.update(jar)
        assert authorization(client.get("/a")) == "Bearer access-1"
        # (the provider is not reachable here: the local logout still happens, and the browser goes on)
        logout = client.post("/auth/logout", headers={"origin": gateway.url})
        assert (logout.status_code, logout.headers["location"]) == (303, f"{gateway.url}/")
        assert parse(logout.headers.get_list("set-cookie")) == {"asgigate_session": ""}
        copy = fetch(gateway.url, "/a", jar)
        assert copy.status_code == 401


# --- RedisSessions against the real server -----------------------------------------------------------------


@pytest.mark.anyio
async def test_redis_records_touch_lock_and_expiry(redis: RedisServer) -> None:
    store = RedisSessions(redis.uri, prefix="unit:")
    now = time.time()
    session = Session(Session.new_id(), {"sub": "alice"}, "id-token", access_token="a1", refresh_token="r1",
                      expires_at=now + 60, created_at=now, last_seen=now)
    await store.set(session, ttl=100)
    assert await store.get(session.id) == session
    client = store.client()
    assert 99_000 < await client.pttl(f"unit:{session.id}") <= 100_000

    # touch records activity only: it never overwrites tokens another request has just refreshed
    stale = session.copy()
    session.access_token, session.refresh_token = "a2", "r2"
    await store.set(session, ttl=100)
    stale.last_seen = now + 50
    await store.touch(stale, ttl=500)
    found = await store.get(session.id)
    assert found is not None and (found.access_token, found.refresh_token, found.last_seen) == ("a2", "r2", now + 50)
    assert await client.pttl(f"unit:{session.id}") > 400_000

    # one lock holder at a time; only its token unlocks; the lock expires by itself
    token = await store.lock(session.id, ttl=5)
    assert token is not None and await store.lock(session.id, ttl=5) is None
    await store.unlock(session.id, "not-the-token")
    assert await store.lock(session.id, ttl=5) is None
    await store.unlock(session.id, token)
    short = await store.lock(session.id, ttl=0.05)
    assert short is not None
    await asyncio.sleep(0.1)  # the lock's expiry is Redis's (its own clock): the behaviour under test
    assert await store.lock(session.id, ttl=5) is not None

    await store.delete(session.id)
    assert await store.get(session.id) is None
    await store.touch(session, ttl=100)  # a touch after the end does not bring the session back
    assert await store.get(session.id) is None
    await client.hset(f"unit:{session.id}", {"rec": b"not json", "t": b"1"})
    assert await store.get(session.id) is None
    await client.hset(f"unit:{session.id}", {"rec": orjson.dumps({"id": "another"}), "t": b"1"})
    assert await store.get(session.id) is None
    await close_sessions(store)


def test_redis_down_is_503_not_500(upstream: BackgroundServer) -> None:
    down = RedisServer()  # never started: nothing listens on its port
    site = Site(upstream.url, RedisSessions(down.uri, timeout=0.5), ManualClock())
    session = new_session(site.login)
    cookies = parse(site.login._session_cookies(probe(site), session) or [])
    with BackgroundServer(site) as gateway:
        response = fetch(gateway.url, "/a", cookies)
        assert response.status_code == 503
        assert response.json()["code"] == "upstream_unavailable"


@pytest.mark.anyio
async def test_a_login_whose_tokens_do_not_fit_the_cookies_fails_with_502(upstream: BackgroundServer) -> None:
    """(the provider's part replaced: its answer is made large on purpose)"""
    from asgigate import BadGateway

    site = Site(upstream.url, CookieSessions(chunk_size=600, max_chunks=2), ManualClock())
    login = site.login

    async def token_request(grant_type: str, params: dict[str, str]) -> dict[str, Any]:
        return {"id_token": "x" * 10, "access_token": os.urandom(1500).hex(), "expires_in": 60}

    async def verify_id_token(id_token: str, nonce: str) -> dict[str, Any]:
        return {"sub": "alice", "nonce": nonce}

    login._token_request = token_request  # type: ignore[method-assign]
    login._verify_id_token = verify_id_token  # type: ignore[method-assign]
    pending = login._cipher.seal(login.login_cookie, {"s": "st", "n": "no", "v": "ve", "r": "/", "t": time.time()})
    exchange = Exchange({"type": "http", "method": "GET", "path": "/auth/callback", "scheme": "http",
                         "query_string": b"state=st&code=c", "headers": [
                             (b"host", b"site.test"), (b"cookie", f"{login.login_cookie}={pending}".encode())]}, site)
    with pytest.raises(BadGateway) as refused:
        await login.callback(exchange)
    assert "too large" in (refused.value.internal or "")
