"""BearerAuth through the front door: a gateway under uvicorn, tokens made by hand, keys static or fetched.

Every "must reject" case of the design is its own test case: each is a 401 `invalid_token` (the expired
token's code is `expired_token`, with the same challenge) whose body says nothing about what was wrong.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from idp.tokens import AUDIENCE, EC, ISSUER, OTHER_RSA, RSA, b64, b64json, claims, hs256_with_public_key, jwks, sign
from joserfc.jwk import ECKey, RSAKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute

from asgigate import BearerAuth, ConfigurationError, Direct, Exchange, ExpiredToken, Gateway, InvalidToken, Route
from asgigate.policies.auth import Authenticator, Identity
from asgigate.testing import BackgroundServer

from servers import ManualClock, wait_until


async def me(exchange: Exchange) -> Response:
    identity = exchange.identity
    assert isinstance(identity, Identity)
    return JSONResponse({
        "subject": identity.subject, "client_id": identity.client_id, "scopes": sorted(identity.scopes),
        "method": identity.method, "tenant": identity.claim("tenant"),
    })


class JwtGateway(Gateway):
    def __init__(self, auth: Authenticator) -> None:
        super().__init__()
        self.auth = auth

    def policies(self) -> list[Any]:
        return [self.auth]

    def routes(self) -> list[Any]:
        return [
            Route("/healthz", Direct(json={"ok": True}), skip={Authenticator}),
            Route("/me", me),
        ]


def static_auth(**options: Any) -> BearerAuth:
    options.setdefault("keys", jwks(RSA, EC))
    return BearerAuth(issuer=ISSUER, audience=AUDIENCE, **options)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with BackgroundServer(JwtGateway(static_auth())) as server, httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def bearer(token: str) -> dict[str, bytes]:
    return {"authorization": f"Bearer {token}".encode("latin-1")}


# --- accepted ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "alg"), [(RSA, "RS256"), (EC, "ES256")])
def test_valid_token_sets_the_identity(client: httpx.Client, key: Any, alg: str) -> None:
    response = client.get("/me", headers=bearer(sign(claims(), key, alg)))
    assert response.status_code == 200, response.text
    assert response.json() == {"subject": "user-1", "client_id": "web", "scopes": ["orders:read", "profile"],
                               "method": "jwt", "tenant": "acme"}


def test_audience_list_and_scp_claim(client: httpx.Client) -> None:
    token = sign(claims(aud=["other", AUDIENCE], scope=None, scp=["a", "b"], client_id=None, azp="spa"))
    response = client.get("/me", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json()["scopes"] == ["a", "b"]
    assert response.json()["client_id"] == "spa"


def test_clock_skew_is_tolerated(client: httpx.Client) -> None:
    now = int(time.time())
    token = sign(claims(exp=now - 10, nbf=now + 10, iat=now + 10))  # within the default 30 s leeway
    assert client.get("/me", headers=bearer(token)).status_code == 200


def test_skipped_route_needs_no_token(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"ok": True}


def test_missing_token_is_a_plain_challenge(client: httpx.Client) -> None:
    for headers in ({}, {"authorization": "Basic dXNlcjpwYXNz"}):
        response = client.get("/me", headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["code"] == "unauthorized"


# --- must reject ---------------------------------------------------------------------------------------------

NOW = int(time.time())
VALID = sign(claims())
header_part, payload_part, signature_part = VALID.split(".")

REJECTED: dict[str, str] = {
    "alg none": sign(claims(), None, "none"),
    "alg None (case)": sign(claims(), None, "None"),
    "alg none with a signature": sign(claims(), None, "none") + signature_part,
    "alg missing": b64json({"typ": "JWT", "kid": "rsa-1"}).decode() + "." + payload_part + "." + signature_part,
    "HS256 signed with the RSA public key": hs256_with_public_key(claims()),
    "alg outside the allowlist (RS512)": sign(claims(), RSA, "RS512"),
    "alg outside the allowlist (PS256)": sign(claims(), RSA, "PS256"),
    "unknown kid": sign(claims(), OTHER_RSA, kid="rsa-999"),
    "no kid, another key's signature": sign(claims(), OTHER_RSA, kid=None),
    "known kid, another key's signature": sign(claims(), OTHER_RSA),
    "ES256 token naming the RSA kid": sign(claims(), EC, "ES256", kid="rsa-1"),
    "jku header pointing elsewhere": sign(claims(), OTHER_RSA, kid="evil", jku="https://evil.test/jwks.json"),
    "x5u header pointing elsewhere": sign(claims(), OTHER_RSA, kid="evil", x5u="https://evil.test/cert.pem"),
    "embedded jwk header": sign(claims(), OTHER_RSA, kid=None, jwk=dict(OTHER_RSA.as_dict(private=False))),
    "jku on an otherwise valid token": sign(claims(), jku="https://evil.test/jwks.json"),
    "x5c header": sign(claims(), x5c=["MIIBIjANBgkq"]),
    "expired": sign(claims(exp=NOW - 3600, iat=NOW - 7200)),
    "not yet valid": sign(claims(nbf=NOW + 3600)),
    "issued in the future": sign(claims(iat=NOW + 3600)),
    "no exp": sign(claims(exp=None)),
    "exp not a number": sign(claims(exp=str(NOW + 300))),
    "wrong issuer": sign(claims(iss="https://evil.test")),
    "no issuer": sign(claims(iss=None)),
    "wrong audience": sign(claims(aud="billing-api")),
    "no audience": sign(claims(aud=None)),
    "payload tampered": header_part + "." + b64json(claims(sub="admin")).decode() + "." + signature_part,
    "signature stripped": header_part + "." + payload_part + ".",
    "malformed base64 header": "eyJhbGciOiJSUzI1NiJ9!." + payload_part + "." + signature_part,
    "malformed base64 payload": header_part + ".%%%." + signature_part,
    "header not JSON": b64(b"{not json").decode() + "." + payload_part + "." + signature_part,
    "header a JSON list": b64json(["RS256"]).decode() + "." + payload_part + "." + signature_part,
    "payload not JSON (signed)": sign(b64(b"{not json")),
    "payload a JSON list (signed)": sign(b64json(["sub", "user-1"])),
    "two segments": header_part + "." + payload_part,
    "five segments (JWE)": ".".join([header_part, payload_part, signature_part, "a", "b"]),
    "not ascii": header_part + "." + payload_part + "." + signature_part + "é",
    "oversize token": sign(claims(padding="x" * 9000)),
    "unknown crit header": sign(claims(), crit=["urn:example:policy"], **{"urn:example:policy": "x"}),
    "crit naming a registered header": sign(claims(), crit=["exp"], exp=NOW + 300),
    "garbage": "hello",
}

LEAKY_WORDS = ("kid", "alg", "signature", "issuer", "audience", "jku", "x5u", "jwk", "crit", "base64", "json",
               "expired at", "rsa", "none", "key")


@pytest.mark.parametrize("token", list(REJECTED.values()), ids=list(REJECTED))
def test_must_reject(client: httpx.Client, token: str) -> None:
    response = client.get("/me", headers=bearer(token))
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    body = response.json()
    assert body["code"] in ("invalid_token", "expired_token")
    assert set(body) <= {"type", "title", "status", "code", "request_id", "instance"}, body
    text = response.text.lower()
    assert not [word for word in LEAKY_WORDS if word in text], text


def test_expired_token_says_so_in_the_challenge_only(client: httpx.Client) -> None:
    response = client.get("/me", headers=bearer(REJECTED["expired"]))
    assert response.json()["code"] == "expired_token"
    assert response.headers["www-authenticate"] == (
        'Bearer error="invalid_token", error_description="The access token expired"')


def test_valid_token_still_passes_after_the_attacks(client: httpx.Client) -> None:
    assert client.get("/me", headers=bearer(VALID)).status_code == 200


# --- options -------------------------------------------------------------------------------------------------


def test_token_from_cookie_query_and_header() -> None:
    auth = static_auth(token_from=["header:x-token", "cookie:at", "query:access_token"])
    token = sign(claims())
    with BackgroundServer(JwtGateway(auth)) as server, httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/me", headers={"x-token": token}).status_code == 200
        c.cookies.set("at", token)
        assert c.get("/me").status_code == 200
        c.cookies.clear()
        assert c.get("/me", params={"access_token": token}).status_code == 200
        assert c.get("/me", headers=bearer(token)).status_code == 401  # not a configured place
        c.cookies.set("at", "junk")
        assert c.get("/me").headers["www-authenticate"].startswith("Bearer error=")


def test_typ_when_configured() -> None:
    auth = static_auth(typ="at+jwt")
    asyncio.run(auth.verify(sign(claims(), typ="at+jwt")))
    asyncio.run(auth.verify(sign(claims(), typ="application/at+jwt")))
    for typ in ("JWT", None):
        with pytest.raises(InvalidToken):
            asyncio.run(auth.verify(sign(claims(), typ=typ)))


def test_static_pem_keys_and_hmac() -> None:
    pem = RSA.as_pem(private=False).decode()
    auth = BearerAuth(issuer=ISSUER, audience=AUDIENCE, keys=pem, algorithms=["RS256"])
    assert asyncio.run(auth.verify(sign(claims(), kid=None))).subject == "user-1"
    private_pem = EC.as_pem(private=True)
    auth = BearerAuth(issuer=ISSUER, audience=[AUDIENCE, "x"], keys=[private_pem], algorithms=["ES256"])
    assert asyncio.run(auth.verify(sign(claims(), EC, "ES256"))).subject == "user-1"
    from joserfc.jwk import OctKey

    secret = OctKey.import_key("a-long-shared-secret-for-hmac-tests-only!!", {"kid": "s1"})
    auth = BearerAuth(issuer=ISSUER, audience=AUDIENCE, keys=[secret], algorithms=["HS256"])
    assert asyncio.run(auth.verify(sign(claims(), secret, "HS256"))).subject == "user-1"
    with pytest.raises(InvalidToken):
        asyncio.run(auth.verify(sign(claims(), RSA, "RS256")))


def test_verified_tokens_are_cached_until_expiry() -> None:
    now = [1_000_000.0]
    auth = static_auth(clock=lambda: now[0], leeway=0, cache_size=2)
    calls = []
    keys = auth._keys
    original = keys.find

    async def counting(kid: str | None, alg: str) -> Any:
        calls.append(kid)
        return await original(kid, alg)

    keys.find = counting  # type: ignore[method-assign]
    token = sign(claims(iat=int(now[0]), exp=int(now[0]) + 60))
    first = asyncio.run(auth.verify(token))
    assert asyncio.run(auth.verify(token)) is first
    assert calls == ["rsa-1"]  # the second call paid for no key lookup and no signature check
    for i in range(3):
        asyncio.run(auth.verify(sign(claims(iat=int(now[0]), exp=int(now[0]) + 60, sub=f"u{i}"))))
    assert len(auth._verified) == 2  # bounded
    asyncio.run(auth.verify(token))
    now[0] += 61
    with pytest.raises(ExpiredToken):
        asyncio.run(auth.verify(token))  # a cached token still expires


@pytest.mark.parametrize(("options", "message"), [
    ({"algorithms": ["none"]}, "'none' is never allowed"),
    ({"algorithms": ["RS256", "HS256"]}, "HMAC"),
    ({"algorithms": []}, "algorithms"),
    ({"audience": []}, "audience"),
    ({"audience": ""}, "audience"),
    ({"token_from": "body:x"}, "token_from"),
    ({"token_from": "cookie"}, "token_from"),
    ({"keys": {"kty": "RSA"}}, "Invalid JWK"),
    ({"keys": "not a key"}, "PEM"),
    ({"keys": {"keys": []}}, "No usable"),
])
def test_configuration_errors(options: dict[str, Any], message: str) -> None:
    options.setdefault("keys", jwks(RSA))
    with pytest.raises(ConfigurationError, match=message):
        BearerAuth(issuer=ISSUER, **{"audience": AUDIENCE, **options})
    with pytest.raises(ConfigurationError, match="HMAC"):
        BearerAuth(issuer=ISSUER, audience=AUDIENCE, algorithms=["HS256"])  # HMAC needs static keys


def test_config_compares_and_prints() -> None:
    assert static_auth() == static_auth()
    assert static_auth() != static_auth(typ="at+jwt")
    assert repr(static_auth(token_from=["cookie:at"])) == (
        "BearerAuth(issuer='https://idp.test', audience='orders-api', algorithms=['RS256', 'ES256'], keys=2, "
        "token_from=['cookie:at'])")
    remote = BearerAuth(issuer="https://idp.test", audience="a")
    assert repr(remote) == "BearerAuth(issuer='https://idp.test', audience='a', algorithms=['RS256', 'ES256'])"


# --- keys from the issuer ------------------------------------------------------------------------------------


class FakeIdP:
    """An issuer that publishes discovery and a JWKS, counts fetches, and can be switched off."""

    def __init__(self) -> None:
        self.keys: list[Any] = [RSA]
        self.up = True
        self.issuer_override: str | None = None
        self.fetches = {"discovery": 0, "jwks": 0}
        self.url = ""
        self.app = Starlette(routes=[
            StarletteRoute("/.well-known/openid-configuration", self.discovery),
            StarletteRoute("/jwks", self.jwks),
        ])

    async def discovery(self, request: Request) -> Response:
        self.fetches["discovery"] += 1
        if not self.up:
            return Response(status_code=503)
        return JSONResponse({"issuer": self.issuer_override or self.url, "jwks_uri": f"{self.url}/jwks"})

    async def jwks(self, request: Request) -> Response:
        self.fetches["jwks"] += 1
        if not self.up:
            return Response(status_code=503)
        return JSONResponse(jwks(*self.keys))


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    fake = FakeIdP()
    with BackgroundServer(fake.app) as server:
        fake.url = server.url
        yield fake


def remote_gateway(idp: FakeIdP, **options: Any) -> BackgroundServer:
    return BackgroundServer(JwtGateway(BearerAuth(issuer=idp.url, audience=AUDIENCE, **options)))


def test_discovery_and_key_rotation(idp: FakeIdP) -> None:
    with remote_gateway(idp, min_refresh_interval=0) as gw, httpx.Client(base_url=gw.url, timeout=10) as c:
        assert c.get("/me", headers=bearer(sign(claims(iss=idp.url)))).status_code == 200
        assert c.get("/me", headers=bearer(sign(claims(iss=idp.url, sub="again")))).status_code == 200
        assert idp.fetches == {"discovery": 1, "jwks": 1}  # cached
        idp.keys = [RSA, EC]  # the IdP rotates a new key in
        response = c.get("/me", headers=bearer(sign(claims(iss=idp.url), EC, "ES256")))
        assert response.status_code == 200, response.text
        assert idp.fetches == {"discovery": 1, "jwks": 2}  # refetched once for the unknown kid


def test_unknown_kid_refetch_is_rate_limited(idp: FakeIdP) -> None:
    with remote_gateway(idp, min_refresh_interval=60) as gw, httpx.Client(base_url=gw.url, timeout=10) as c:
        assert c.get("/me", headers=bearer(sign(claims(iss=idp.url)))).status_code == 200
        for i in range(5):
            token = sign(claims(iss=idp.url), OTHER_RSA, kid=f"made-up-{i}")
            assert c.get("/me", headers=bearer(token)).status_code == 401
        assert idp.fetches["jwks"] == 1  # made-up kids cannot make the gateway hammer the IdP


def test_cached_keys_serve_while_the_idp_is_down(idp: FakeIdP) -> None:
    clock = ManualClock()
    with remote_gateway(idp, jwks_ttl=60, min_refresh_interval=0, clock=clock) as gw, \
            httpx.Client(base_url=gw.url, timeout=10) as c:
        assert c.get("/me", headers=bearer(sign(claims(iss=idp.url)))).status_code == 200
        idp.up = False
        clock.advance(61)  # the key set is now stale; refreshing fails
        for i in range(3):
            response = c.get("/me", headers=bearer(sign(claims(iss=idp.url, sub=f"u{i}"))))
            assert response.status_code == 200, response.text
        wait_until(lambda: idp.fetches["jwks"] >= 2)  # the refresh runs in the background: it may come late
        assert idp.fetches["jwks"] >= 2  # it did try to refresh


def test_no_keys_at_all_is_503(idp: FakeIdP) -> None:
    idp.up = False
    with remote_gateway(idp) as gw, httpx.Client(base_url=gw.url, timeout=10) as c:
        response = c.get("/me", headers=bearer(sign(claims(iss=idp.url))))
        assert response.status_code == 503
        assert response.json()["code"] == "upstream_unavailable"
        assert c.get("/me").status_code == 401  # no token: refused before any key is needed


def test_discovery_naming_another_issuer_is_not_trusted(idp: FakeIdP) -> None:
    idp.issuer_override = "https://evil.test"
    with remote_gateway(idp) as gw, httpx.Client(base_url=gw.url, timeout=10) as c:
        assert c.get("/me", headers=bearer(sign(claims(iss=idp.url)))).status_code == 503
        assert idp.fetches["jwks"] == 0


def test_explicit_jwks_uri_skips_discovery(idp: FakeIdP) -> None:
    with remote_gateway(idp, jwks_uri=f"{idp.url}/jwks") as gw, httpx.Client(base_url=gw.url, timeout=10) as c:
        assert c.get("/me", headers=bearer(sign(claims(iss=idp.url)))).status_code == 200
        assert idp.fetches == {"discovery": 0, "jwks": 1}


def test_generated_keys_are_distinct() -> None:
    assert isinstance(RSA, RSAKey) and isinstance(EC, ECKey)
    assert RSA.as_dict()["n"] != OTHER_RSA.as_dict()["n"]
