"""One credential per request: a request that carries a credential twice, or in two places, is refused (400
`invalid_request`), and what a policy verified is the only credential its upstream receives.

Through the front door: the gateway under uvicorn (httptools), a raw-socket upstream that records the request head
byte for byte, so each test sees exactly which header lines reached it (and that a refused request reached nothing).
"""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from idp.tokens import AUDIENCE, ISSUER, OTHER_RSA, RSA, claims, jwks, sign
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from asgigate import (
    AnyAuth,
    ApiKeyAuth,
    BearerAuth,
    ClientCredentials,
    Exchange,
    ForwardAuth,
    Gateway,
    IntrospectionAuth,
    InvalidRequest,
    InvalidToken,
    OIDCLogin,
    Proxy,
    Route,
    SessionAuth,
    TokenRelay,
    Upstream,
)
from asgigate.policies.auth import Authenticator, Consumer, Identity, hash_api_key
from asgigate.policies.auth._session import Session
from asgigate.testing import BackgroundServer

from rawupstream import RawUpstream

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
SECRET = "duplicates-test-secret-0123456789abcdef"
KEY = "dk_live_4c1f0e9d8b7a6c5d4e3f2a1b"
OTHER_KEY = "dk_live_other_0a9b8c7d6e5f4a3b"
VALID = sign(claims())
FORGED = sign(claims(sub="admin", scope="admin"), OTHER_RSA)  # signed by an attacker's key, same kid


class Services:
    """The decision service of ForwardAuth (allows ``Bearer good``) and a token endpoint for ClientCredentials."""

    def __init__(self) -> None:
        self.asked: list[list[tuple[str, str]]] = []
        self.app = Starlette(routes=[StarletteRoute("/verify", self.verify),
                                     StarletteRoute("/token", self.token, methods=["POST"])])

    async def verify(self, request: Request) -> Response:
        self.asked.append([(k.decode(), v.decode()) for k, v in request.scope["headers"]])
        return Response(status_code=200 if request.headers.get("authorization") == "Bearer good" else 401)

    async def token(self, request: Request) -> Response:
        return JSONResponse({"access_token": "gateway-token", "token_type": "Bearer", "expires_in": 300})


class SharedSecret(Authenticator):
    """A custom authenticator, as docs/auth.md writes one: it reads its header with `credential()`."""

    @property
    def challenge(self) -> str:
        return 'Secret header="x-service-secret"'

    async def authenticate(self, exchange: Exchange) -> Identity | None:
        secret = self.credential(exchange, "header:X-Service-Secret", "query:secret")
        if secret is None:
            return None
        if secret != "s3cret":
            raise InvalidToken()
        return Identity("billing", method="shared_secret")


class Guarded(Gateway):
    def __init__(self, upstream_url: str, services_url: str) -> None:
        super().__init__()
        self.backend = Upstream(upstream_url, name="raw")
        self.services = Upstream(services_url, name="services")
        self.login = OIDCLogin(issuer="http://127.0.0.1:9", client_id="web", client_secret="s", secret=SECRET)

    def routes(self) -> list[Any]:
        raw = Proxy(self.backend, path="/")
        consumers = [Consumer("app", keys=[hash_api_key(KEY)]), Consumer("other", keys=[hash_api_key(OTHER_KEY)])]
        bearer = BearerAuth(issuer=ISSUER, audience=AUDIENCE, keys=jwks(RSA))
        return [
            self.login.routes(),
            Route("/bearer", raw, policies=[bearer]),
            Route("/bearer-realm", raw, policies=[
                BearerAuth(issuer=ISSUER, audience=AUDIENCE, keys=jwks(RSA), realm="api")]),
            Route("/bearer-query", raw, policies=[BearerAuth(issuer=ISSUER, audience=AUDIENCE, keys=jwks(RSA),
                                                             token_from=["header", "query:access_token"])]),
            Route("/bearer-cookie", raw, policies=[
                BearerAuth(issuer=ISSUER, audience=AUDIENCE, keys=jwks(RSA), token_from=["cookie:access_token"])]),
            Route("/introspected", raw, policies=[
                IntrospectionAuth(endpoint="http://127.0.0.1:9/introspect", client_id="gw", client_secret="s")]),
            Route("/key", raw, policies=[ApiKeyAuth(consumers, query="api_key")]),
            Route("/key-shown", raw, policies=[ApiKeyAuth(consumers, query="api_key", hide_credentials=False)]),
            Route("/any", raw, policies=[AnyAuth(bearer, ApiKeyAuth(consumers))]),
            Route("/any-introspected", raw, policies=[AnyAuth(bearer, IntrospectionAuth(
                endpoint="http://127.0.0.1:9/introspect", client_id="gw", client_secret="s"))]),
            Route("/custom", raw, policies=[SharedSecret()]),
            Route("/session", raw, policies=[SessionAuth(self.login)]),
            Route("/relay", raw, policies=[SessionAuth(self.login), TokenRelay(self.login)]),
            Route("/forward", raw, policies=[ForwardAuth(self.services, path="/verify")]),
            Route("/gateway-token", raw, policies=[
                ClientCredentials(token_url=f"{self.services.url}/token", client_id="gw", client_secret="s")]),
        ]


@pytest.fixture(scope="module")
def services() -> Iterator[tuple[Services, str]]:
    found = Services()
    with BackgroundServer(found.app) as server:
        yield found, server.url


@pytest.fixture(scope="module")
def raw() -> Iterator[RawUpstream]:
    with RawUpstream(OK) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def site(raw: RawUpstream, services: tuple[Services, str]) -> Iterator[tuple[Guarded, str]]:
    gateway = Guarded(raw.url, services[1])
    with BackgroundServer(gateway) as server:
        yield gateway, server.url


def send(site: tuple[Guarded, str], raw: RawUpstream, path: str, headers: list[tuple[str, str]],
         method: str = "GET") -> tuple[httpx.Response, list[tuple[bytes, bytes]] | None]:
    """The gateway's answer to a request with exactly these header lines (repeats kept, in order), and the header
    lines the upstream received for it (None when the request did not reach it)."""
    before = len(raw.heads)
    with httpx.Client(base_url=site[1], timeout=10) as client:
        response = client.request(method, path, headers=[("accept", "application/json"), *headers])
    reached = raw.header_lines() if len(raw.heads) > before else None
    return response, reached


def lines(received: list[tuple[bytes, bytes]] | None, name: str) -> list[str]:
    assert received is not None, "the request did not reach the upstream"
    return [value.decode("latin-1") for key, value in received if key == name.encode()]


def refused(response: httpx.Response, reached: object,
            challenge: str | None = 'Bearer error="invalid_request"') -> None:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_request"
    assert response.headers.get("www-authenticate") == challenge
    assert reached is None, "a refused request reached the upstream"


# --- BearerAuth --------------------------------------------------------------------------------------------------


def test_a_second_authorization_header_is_refused_not_forwarded(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    """The attack as found: a valid token first and a forged one second got 200, and the upstream got both."""
    response, reached = send(site, raw, "/bearer", [("authorization", f"Bearer {VALID}"),
                                                    ("authorization", f"Bearer {FORGED}")])
    refused(response, reached)
    response, reached = send(site, raw, "/bearer", [("authorization", f"Bearer {FORGED}"),
                                                    ("authorization", f"Bearer {VALID}")])
    refused(response, reached)
    # the same token twice, and a Bearer line next to another scheme's: Authorization is not a list header
    for second in (f"Bearer {VALID}", "Basic YWRtaW46YWRtaW4="):
        refused(*send(site, raw, "/bearer", [("authorization", f"Bearer {VALID}"), ("authorization", second)]))


def test_the_verified_token_is_the_only_one_the_upstream_receives(site: tuple[Guarded, str],
                                                                  raw: RawUpstream) -> None:
    response, reached = send(site, raw, "/bearer", [("authorization", f"Bearer {VALID}")])
    assert response.status_code == 200, response.text
    assert lines(reached, "authorization") == [f"Bearer {VALID}"]


def test_the_realm_is_in_the_challenge(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    response, reached = send(site, raw, "/bearer-realm", [("authorization", f"Bearer {VALID}"),
                                                          ("authorization", f"Bearer {FORGED}")])
    refused(response, reached, 'Bearer realm="api", error="invalid_request"')


def test_a_header_token_and_a_query_token_are_refused(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    refused(*send(site, raw, f"/bearer-query?access_token={FORGED}", [("authorization", f"Bearer {VALID}")]))
    refused(*send(site, raw, f"/bearer-query?access_token={VALID}&access_token={FORGED}", []))
    response, reached = send(site, raw, f"/bearer-query?x=1&access_token={VALID}", [])
    assert response.status_code == 200, response.text
    assert lines(reached, "authorization") == []
    assert raw.heads[-1].startswith(f"GET /?x=1&access_token={VALID} HTTP/1.1".encode())


def test_a_token_cookie_sent_twice_is_refused(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    refused(*send(site, raw, "/bearer-cookie", [("cookie", f"access_token={VALID}; access_token={FORGED}")]))
    refused(*send(site, raw, "/bearer-cookie", [("cookie", f"access_token={VALID}"),
                                                ("cookie", f"access_token={FORGED}")]))  # one line per cookie
    response, reached = send(site, raw, "/bearer-cookie", [("cookie", f"theme=dark; access_token={VALID}")])
    assert response.status_code == 200, response.text
    assert lines(reached, "cookie") == [f"theme=dark; access_token={VALID}"]


def test_introspection_refuses_before_asking(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    """Two tokens are refused before the endpoint is asked (it is down here: one token gets 503)."""
    refused(*send(site, raw, "/introspected", [("authorization", "Bearer opaque-1"),
                                               ("authorization", "Bearer opaque-2")]))
    assert send(site, raw, "/introspected", [("authorization", "Bearer opaque-1")])[0].status_code == 503


def test_any_auth_does_not_try_the_others_on_an_ambiguous_request(site: tuple[Guarded, str],
                                                                  raw: RawUpstream) -> None:
    refused(*send(site, raw, "/any", [("authorization", f"Bearer {FORGED}"), ("authorization", f"Bearer {VALID}"),
                                      ("x-api-key", KEY)]))


def test_any_auth_refuses_a_credential_of_another_kind_next_to_the_accepted_one(site: tuple[Guarded, str],
                                                                                raw: RawUpstream) -> None:
    """The one AnyAuth accepted is checked; the other would reach the upstream unchecked."""
    refused(*send(site, raw, "/any", [("authorization", f"Bearer {VALID}"), ("x-api-key", "forged")]),
            'Bearer error="invalid_request"')
    refused(*send(site, raw, "/any", [("authorization", f"Bearer {FORGED}"), ("x-api-key", KEY)]), API_KEY_CHALLENGE)
    response, reached = send(site, raw, "/any", [("authorization", f"Bearer {VALID}")])
    assert response.status_code == 200
    assert lines(reached, "authorization") == [f"Bearer {VALID}"]
    response, reached = send(site, raw, "/any", [("x-api-key", KEY)])
    assert response.status_code == 200
    assert lines(reached, "authorization") == [] and lines(reached, "x-api-key") == []


def test_any_auth_over_one_place_is_one_credential(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    """BearerAuth and IntrospectionAuth both read Authorization: a JWT accepted by the first is not ambiguous."""
    response, reached = send(site, raw, "/any-introspected", [("authorization", f"Bearer {VALID}")])
    assert response.status_code == 200
    assert lines(reached, "authorization") == [f"Bearer {VALID}"]


# --- ApiKeyAuth --------------------------------------------------------------------------------------------------

API_KEY_CHALLENGE = 'ApiKey header="x-api-key", error="invalid_request"'


def test_a_repeated_api_key_is_refused(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    for path in ("/key", "/key-shown"):
        refused(*send(site, raw, path, [("x-api-key", KEY), ("x-api-key", OTHER_KEY)]), API_KEY_CHALLENGE)
        refused(*send(site, raw, path, [("x-api-key", KEY), ("x-api-key", "forged")]), API_KEY_CHALLENGE)
        refused(*send(site, raw, f"{path}?api_key={OTHER_KEY}", [("x-api-key", KEY)]), API_KEY_CHALLENGE)
        refused(*send(site, raw, f"{path}?api_key={KEY}&api_key=forged", []), API_KEY_CHALLENGE)


def test_the_verified_api_key_is_hidden_or_the_only_one(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    response, reached = send(site, raw, "/key", [("x-api-key", KEY)])
    assert response.status_code == 200
    assert lines(reached, "x-api-key") == []
    response, reached = send(site, raw, "/key-shown", [("x-api-key", KEY)])
    assert response.status_code == 200
    assert lines(reached, "x-api-key") == [KEY]


def test_a_custom_authenticator_reads_one_credential(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    challenge = 'Secret header="x-service-secret", error="invalid_request"'
    refused(*send(site, raw, "/custom", [("x-service-secret", "s3cret"), ("x-service-secret", "guess")]), challenge)
    refused(*send(site, raw, "/custom?secret=guess", [("x-service-secret", "s3cret")]), challenge)
    response, reached = send(site, raw, "/custom", [("x-service-secret", "s3cret")])
    assert response.status_code == 200
    assert lines(reached, "x-service-secret") == ["s3cret"]


# --- SessionAuth, TokenRelay --------------------------------------------------------------------------------------


def session_cookie(gateway: Guarded, subject: str | Session) -> str:
    """The `name=value` of a session cookie the login would set for `subject`'s new session (or this one)."""
    login = gateway.login
    now = login._clock()
    session = subject if isinstance(subject, Session) else Session(
        Session.new_id(), {"sub": subject}, "id.token.here", access_token=f"access-{subject}",
        expires_at=now + 86400, created_at=now, last_seen=now)
    probe = Exchange({"type": "http", "method": "GET", "path": "/", "scheme": "http", "query_string": b"",
                      "headers": [(b"host", b"site.test")]}, gateway)
    cookies = login._session_cookies(probe, session)
    assert cookies is not None and len(cookies) == 1
    morsel = next(iter(SimpleCookie(cookies[0]).values()))
    return f"{morsel.key}={morsel.value}"


SESSION_CHALLENGE = 'Session login="/auth/login", error="invalid_request"'


def test_two_sessions_in_the_cookies_are_refused(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    """Two sessions (one tossed in by a sibling site for the parent domain, say): neither wins by its position."""
    alice, mallory = session_cookie(site[0], "alice"), session_cookie(site[0], "mallory")
    for path in ("/session", "/relay"):
        refused(*send(site, raw, path, [("cookie", f"{alice}; {mallory}")]), SESSION_CHALLENGE)
        refused(*send(site, raw, path, [("cookie", f"{mallory}; {alice}")]), SESSION_CHALLENGE)
        refused(*send(site, raw, path, [("cookie", alice), ("cookie", mallory)]), SESSION_CHALLENGE)
    refused(*send(site, raw, "/session", [("cookie", "; ".join([alice] * 5))]), SESSION_CHALLENGE)  # bounded


def test_copies_of_one_session_and_noise_are_not_a_second_session(site: tuple[Guarded, str],
                                                                   raw: RawUpstream) -> None:
    """A host-only and a domain copy of one session (after cookie_domain changed) are that session; a copy that
    does not open (garbage tossed in to lock users out) is no session. Neither reaches the upstream."""
    alice = session_cookie(site[0], "alice")
    name = alice.partition("=")[0]
    for cookies in ([f"{alice}; {alice}"], [alice, alice], [f"{name}=1.garbage; {alice}"], [alice, f"{name}=x"]):
        response, reached = send(site, raw, "/relay", [("cookie", c) for c in cookies])
        assert response.status_code == 200, (cookies, response.text)
        assert lines(reached, "authorization") == ["Bearer access-alice"]
        assert lines(reached, "cookie") == []
    now = site[0].login._clock()
    session = Session(Session.new_id(), {"sub": "bob"}, "id.token.here", access_token="access-old",
                      expires_at=now + 86400, created_at=now - 20, last_seen=now - 20)
    older = session_cookie(site[0], session)
    session.access_token, session.last_seen = "access-new", now
    newer = session_cookie(site[0], session)
    for cookies in ([older, newer], [newer, older]):  # the most recently active copy is taken, in any order
        response, reached = send(site, raw, "/relay", [("cookie", "; ".join(cookies))])
        assert response.status_code == 200, (cookies, response.text)
        assert lines(reached, "authorization") == ["Bearer access-new"]


def test_session_cookies_are_stripped_from_every_cookie_line(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    alice = session_cookie(site[0], "alice")
    response, reached = send(site, raw, "/session", [("cookie", f"lang=en; {alice}"), ("cookie", "theme=dark")])
    assert response.status_code == 200, response.text
    assert lines(reached, "cookie") == ["lang=en; theme=dark"]
    response, reached = send(site, raw, "/session", [("cookie", "theme=dark"), ("cookie", alice)])
    assert response.status_code == 200, response.text
    assert lines(reached, "cookie") == ["theme=dark"]


def test_token_relay_replaces_every_authorization_line(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    alice = session_cookie(site[0], "alice")
    response, reached = send(site, raw, "/relay", [("cookie", alice), ("authorization", f"Bearer {FORGED}"),
                                                   ("authorization", "Bearer forged-2")])
    assert response.status_code == 200, response.text
    assert lines(reached, "authorization") == ["Bearer access-alice"]
    assert lines(reached, "cookie") == []


def test_the_csrf_headers_cannot_be_sent_twice(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    alice = session_cookie(site[0], "alice")
    origin = site[1]
    assert send(site, raw, "/session", [("cookie", alice), ("origin", origin)], method="POST")[0].status_code == 200
    refused(*send(site, raw, "/session", [("cookie", alice), ("origin", origin), ("origin", "https://evil.test")],
                  method="POST"), challenge=None)
    refused(*send(site, raw, "/session", [("cookie", alice), ("sec-fetch-site", "same-origin"),
                                          ("sec-fetch-site", "cross-site")], method="POST"), challenge=None)


def test_logout_clears_duplicated_session_cookies(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    alice, mallory = session_cookie(site[0], "alice"), session_cookie(site[0], "mallory")
    with httpx.Client(base_url=site[1], timeout=10) as client:
        response = client.get("/auth/logout", headers=[("cookie", f"{alice}; {mallory}"),
                                                       ("sec-fetch-site", "same-origin")])
    assert response.status_code == 302
    assert any(c.startswith("asgigate_session=;") or 'asgigate_session=""' in c
               for c in response.headers.get_list("set-cookie"))


# --- ForwardAuth, ClientCredentials ------------------------------------------------------------------------------


def test_forward_auth_refuses_a_repeated_header_it_sends(site: tuple[Guarded, str], raw: RawUpstream,
                                                        services: tuple[Services, str]) -> None:
    asked = len(services[0].asked)
    refused(*send(site, raw, "/forward", [("authorization", "Bearer good"), ("authorization", "Bearer evil")]),
            challenge=None)
    assert len(services[0].asked) == asked  # refused before the service was asked
    response, reached = send(site, raw, "/forward", [("authorization", "Bearer good")])
    assert response.status_code == 200
    assert lines(reached, "authorization") == ["Bearer good"]


def test_forward_auth_sends_every_cookie_line(site: tuple[Guarded, str], raw: RawUpstream,
                                              services: tuple[Services, str]) -> None:
    response, reached = send(site, raw, "/forward", [("authorization", "Bearer good"), ("cookie", "a=1"),
                                                     ("cookie", "b=2")])
    assert response.status_code == 200
    assert [v for k, v in services[0].asked[-1] if k == "cookie"] == ["a=1; b=2"]
    assert lines(reached, "cookie") == ["a=1", "b=2"]


def test_client_credentials_replace_every_authorization_line(site: tuple[Guarded, str], raw: RawUpstream) -> None:
    response, reached = send(site, raw, "/gateway-token", [("authorization", f"Bearer {VALID}"),
                                                           ("authorization", f"Bearer {FORGED}")])
    assert response.status_code == 200, response.text
    assert lines(reached, "authorization") == ["Bearer gateway-token"]


# --- the error ---------------------------------------------------------------------------------------------------


def test_the_error() -> None:
    assert (InvalidRequest.status_code, InvalidRequest.code) == (400, "invalid_request")
    assert InvalidRequest().headers == {"www-authenticate": 'Bearer error="invalid_request"'}
    assert InvalidRequest(challenge='ApiKey error="invalid_request"').headers == {
        "www-authenticate": 'ApiKey error="invalid_request"'}
    assert InvalidRequest(challenge="").headers == {}
