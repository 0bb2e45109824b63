"""Authorize (scopes, roles, claim conditions), ForwardIdentity, ApiKeyAuth and AnyAuth, through the front door
(the gateway under uvicorn; the echo upstream, whose only job is to show what it received, in process)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from idp.tokens import AUDIENCE, ISSUER, RSA, claims, jwks, sign
from starlette.responses import JSONResponse, Response

from asgigate import (
    AnyAuth,
    ApiKeyAuth,
    Authorize,
    BearerAuth,
    ClientCredentials,
    ConfigurationError,
    Direct,
    Exchange,
    ForwardIdentity,
    Gateway,
    Group,
    IntrospectionAuth,
    Proxy,
    Route,
    Upstream,
)
from asgigate.policies.auth import Authenticator, Consumer, Identity, hash_api_key
from asgigate.testing import BackgroundServer

from apps.upstream import app as sample_upstream

MOBILE_KEY = "mk_live_9f2c1d0e7b6a5c4d3e2f1a0b"
PARTNER_KEY = "pk_live_0a1b2c3d4e5f60718293a4b5"

CONSUMERS = [
    Consumer("mobile-app", keys=[hash_api_key(MOBILE_KEY)], scopes=frozenset({"orders:read"}),
             metadata={"plan": "gold", "tenant": "acme"}),
    Consumer("partner", keys=(hash_api_key(PARTNER_KEY), hash_api_key("old-partner-key")),
             metadata={"plan": "free"}),
]


def is_acme(value: Any) -> bool:
    return value == "acme"


class RulesGateway(Gateway):
    def __init__(self) -> None:
        super().__init__()
        self.backend = Upstream("http://backend.internal", name="backend", app=sample_upstream)
        self.auth = AnyAuth(
            BearerAuth(issuer=ISSUER, audience=AUDIENCE, keys=jwks(RSA)),
            ApiKeyAuth(CONSUMERS, header="x-api-key", query="api_key"),
        )

    def policies(self) -> list[Any]:
        return [
            self.auth,
            ForwardIdentity({"x-user-id": "subject", "x-scopes": "scopes", "x-tenant": "claim:tenant",
                             "x-plan": "metadata:plan", "x-consumer": "consumer", "x-auth": "method",
                             "x-client-id": "client_id"}, strip=("x-user-roles",)),
        ]

    def routes(self) -> list[Any]:
        echo = Proxy(self.backend, path="/echo")
        return [
            Route("/public", echo, skip={Authenticator}),
            Route("/read", echo, policies=[Authorize(scopes=["orders:read"])]),
            Route("/write", echo, policies=[Authorize(scopes=["orders:read", "orders:write"])]),
            Route("/either", echo, policies=[Authorize(any_scopes=["orders:write", "profile"])]),
            Group("/admin", [Route("/stats", echo)], policies=[Authorize(roles=["admin", "ops"])]),
            Route("/tenant", echo, policies=[Authorize(claims={"tenant": is_acme, "plan": "gold"})]),
            Route("/verified", echo, policies=[Authorize(claims={"email_verified": True})]),
            Route("/groups", echo, policies=[Authorize(claims={"groups": "staff"})]),
            Route("/keycloak", echo, policies=[Authorize(roles=["admin"], roles_claim="realm_access.roles")]),
            Route("/check", echo, policies=[Authorize(check=lambda identity: identity.subject == "user-1")]),
            Route("/healthz", Direct(json={"ok": True}), skip={Authenticator, ForwardIdentity}),
        ]


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with BackgroundServer(RulesGateway()) as server, httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


def bearer(**overrides: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {sign(claims(**overrides))}"}


def seen(response: httpx.Response) -> dict[str, list[str]]:
    """The headers the upstream received (the echo endpoint sends them back)."""
    assert response.status_code == 200, response.text
    found: dict[str, list[str]] = {}
    for name, value in response.json()["headers"]:
        found.setdefault(name, []).append(value)
    return found


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    return body


# --- scopes, roles, claims -------------------------------------------------------------------------------------


def test_all_scopes(client: httpx.Client) -> None:
    assert client.get("/read", headers=bearer()).status_code == 200
    response = client.get("/write", headers=bearer())
    refused(response, 403, "insufficient_scope")
    assert response.headers["www-authenticate"] == 'Bearer error="insufficient_scope", scope="orders:read orders:write"'
    assert client.get("/write", headers=bearer(scope="orders:read orders:write")).status_code == 200


def test_any_scope(client: httpx.Client) -> None:
    assert client.get("/either", headers=bearer(scope="profile")).status_code == 200
    assert client.get("/either", headers=bearer(scope="orders:write")).status_code == 200
    refused(client.get("/either", headers=bearer(scope="orders:read")), 403, "insufficient_scope")
    refused(client.get("/either", headers=bearer(scope=None)), 403, "insufficient_scope")


def test_roles(client: httpx.Client) -> None:
    refused(client.get("/admin/stats", headers=bearer()), 403, "insufficient_scope")  # roles: ["reader"]
    assert client.get("/admin/stats", headers=bearer(roles=["ops"])).status_code == 200
    assert client.get("/admin/stats", headers=bearer(roles="admin")).status_code == 200
    refused(client.get("/admin/stats", headers=bearer(roles=None)), 403, "insufficient_scope")
    nested = bearer(realm_access={"roles": ["admin"]})
    assert client.get("/keycloak", headers=nested).status_code == 200
    refused(client.get("/keycloak", headers=bearer(roles=["admin"])), 403, "insufficient_scope")


def test_claim_conditions(client: httpx.Client) -> None:
    refused(client.get("/tenant", headers=bearer()), 403, "insufficient_scope")  # no plan claim
    assert client.get("/tenant", headers=bearer(plan="gold")).status_code == 200
    refused(client.get("/tenant", headers=bearer(plan="gold", tenant="evil")), 403, "insufficient_scope")
    assert client.get("/verified", headers=bearer(email_verified=True)).status_code == 200
    refused(client.get("/verified", headers=bearer(email_verified="true")), 403, "insufficient_scope")
    assert client.get("/groups", headers=bearer(groups=["staff", "dev"])).status_code == 200
    refused(client.get("/groups", headers=bearer(groups=["dev"])), 403, "insufficient_scope")
    assert client.get("/check", headers=bearer()).status_code == 200
    refused(client.get("/check", headers=bearer(sub="user-2")), 403, "insufficient_scope")


def test_refusal_does_not_name_the_rule(client: httpx.Client) -> None:
    body = refused(client.get("/tenant", headers=bearer(plan="silver")), 403, "insufficient_scope")
    assert "plan" not in str(body) and "tenant" not in str(body)


def test_rules_on_api_key_consumers(client: httpx.Client) -> None:
    assert client.get("/read", headers={"x-api-key": MOBILE_KEY}).status_code == 200
    refused(client.get("/read", headers={"x-api-key": PARTNER_KEY}), 403, "insufficient_scope")
    assert client.get("/tenant", headers={"x-api-key": MOBILE_KEY}).status_code == 200  # metadata as claims


# --- identity forwarding ---------------------------------------------------------------------------------------


def test_identity_is_forwarded_and_forgeries_stripped(client: httpx.Client) -> None:
    forged = {"x-user-id": "admin", "X-Tenant": "evil", "x-user-roles": "admin", "x-scopes": "everything"}
    headers = seen(client.get("/read", headers={**bearer(), **forged}))
    assert headers["x-user-id"] == ["user-1"]
    assert headers["x-tenant"] == ["acme"]
    assert headers["x-scopes"] == ["orders:read profile"]
    assert headers["x-auth"] == ["jwt"]
    assert headers["x-client-id"] == ["web"]
    assert "x-user-roles" not in headers and "x-plan" not in headers and "x-consumer" not in headers
    assert headers["authorization"][0].startswith("Bearer ")  # the token itself goes on


def test_forgeries_stripped_without_authentication(client: httpx.Client) -> None:
    headers = seen(client.get("/public", headers={"x-user-id": "admin", "x-consumer": "partner"}))
    assert "x-user-id" not in headers and "x-consumer" not in headers


def test_values_that_cannot_be_headers_are_left_out(client: httpx.Client) -> None:
    headers = seen(client.get("/read", headers=bearer(sub="line\r\nx-evil: 1", tenant="Zürich✓")))
    assert "x-user-id" not in headers and "x-evil" not in headers and "x-tenant" not in headers


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize("tenant", [2**64, -(2**63) - 1, [1, 2**70], {"id": 2**100}, float("inf"), nested(300)],
                         ids=["beyond-64-bits", "below-64-bits", "in-a-list", "in-an-object", "infinity", "too-deep"])
def test_claims_json_cannot_carry_are_left_out(client: httpx.Client, tenant: Any) -> None:
    """A signed token may carry any number: one that JSON (orjson) cannot write is left out, not a 500."""
    headers = seen(client.get("/read", headers=bearer(tenant=tenant)))
    assert "x-tenant" not in headers
    assert headers["x-user-id"] == ["user-1"]


def test_claims_json_can_carry_are_sent(client: httpx.Client) -> None:
    headers = seen(client.get("/read", headers=bearer(tenant={"id": 2**64 - 1, "n": [-(2**63), 1.5, True]})))
    assert headers["x-tenant"] == ['{"id":18446744073709551615,"n":[-9223372036854775808,1.5,true]}']


# --- API keys and several authenticators -----------------------------------------------------------------------


def test_api_key_in_header_is_hidden_from_the_upstream(client: httpx.Client) -> None:
    headers = seen(client.get("/read", headers={"x-api-key": MOBILE_KEY, "x-consumer": "forged"}))
    assert headers["x-consumer"] == ["mobile-app"]
    assert headers["x-plan"] == ["gold"]
    assert headers["x-auth"] == ["api_key"]
    assert "x-api-key" not in headers


def test_api_key_in_query_is_hidden_from_the_upstream(client: httpx.Client) -> None:
    response = client.get("/public", params={"a": "1"})
    assert response.json()["query_string"] == "a=1"
    response = client.get(f"/tenant?a=1&api_key={MOBILE_KEY}&b=%20x")
    assert seen(response)["x-consumer"] == ["mobile-app"]
    assert response.json()["query_string"] == "a=1&b=%20x"


def test_rotated_keys_and_unknown_keys(client: httpx.Client) -> None:
    assert seen(client.get("/public"))  # skip works
    response = client.get("/either", headers={"x-api-key": "old-partner-key"})
    refused(response, 403, "insufficient_scope")  # known (old key still valid), but no scopes
    response = client.get("/read", headers={"x-api-key": "mk_live_guess"})
    refused(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'ApiKey header="x-api-key"'


def test_first_authenticator_that_succeeds_wins(client: httpx.Client) -> None:
    assert seen(client.get("/read", headers={"x-api-key": MOBILE_KEY}))["x-consumer"] == ["mobile-app"]
    assert seen(client.get("/read", headers=bearer()))["x-user-id"] == ["user-1"]
    # a credential of each kind, whichever is good, is ambiguous: the other one would go upstream unchecked
    for both in ({"authorization": "Bearer not-a-token", "x-api-key": MOBILE_KEY}, {**bearer(), "x-api-key": "nope"}):
        refused(client.get("/read", headers=both), 400, "invalid_request")
    # only a broken token: the token's own refusal
    response = client.get("/read", headers={"authorization": "Bearer not-a-token"})
    refused(response, 401, "invalid_token")
    # nothing at all: every challenge
    response = client.get("/read")
    refused(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == 'Bearer, ApiKey header="x-api-key"'


# --- configuration ---------------------------------------------------------------------------------------------


def test_authorize_requires_an_authenticator() -> None:
    class NoAuth(Gateway):
        def routes(self) -> list[Any]:
            return [Route("/x", Direct(json={}), policies=[Authorize(scopes=["a"])])]

    with pytest.raises(ConfigurationError, match="Authorize requires Authenticator"):
        NoAuth().build()


@pytest.mark.parametrize(("factory", "message"), [
    (lambda: Authorize(), "no rule"),
    (lambda: Authorize(scopes="orders:read"), "list of strings"),
    (lambda: Consumer("x", keys=["plaintext-key"]), "stored hashed"),
    (lambda: Consumer("", keys=[]), "name"),
    (lambda: ApiKeyAuth(CONSUMERS, header=None), "header or a query"),
    (lambda: ApiKeyAuth([*CONSUMERS, Consumer("dup", keys=[hash_api_key(MOBILE_KEY)])]), "share an API key"),
    (lambda: ApiKeyAuth(["k"]), "Consumer objects"),  # type: ignore[list-item]
    (lambda: ForwardIdentity({"x user": "subject"}), "header name"),
    (lambda: ForwardIdentity({"x-user": "password"}), "ForwardIdentity value"),
    (lambda: AnyAuth(), "at least one"),
    (lambda: ClientCredentials(client_id="gw", client_secret="s"), "token_url, or the issuer"),
    (lambda: ClientCredentials(issuer="https://idp", client_id="gw", client_secret=""), "client_secret"),
    (lambda: ClientCredentials(issuer="https://idp", client_id="gw", client_secret="s", auth_method="x"),
     "auth_method"),
    (lambda: IntrospectionAuth(client_id="gw", client_secret="s"), "endpoint, or the issuer"),
    (lambda: IntrospectionAuth(endpoint="ftp://idp/introspect", client_id="gw", client_secret="s"), "http"),
    (lambda: IntrospectionAuth(issuer="https://idp", client_id="gw", client_secret=""), "client_secret"),
    (lambda: IntrospectionAuth(issuer="https://idp", client_id="gw", client_secret="s", auth_method="mtls"),
     "auth_method"),
    (lambda: IntrospectionAuth(issuer="https://idp", client_id="gw", client_secret="s", token_from="body"),
     "token_from"),
])
def test_configuration_errors(factory: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        factory()


def test_config_objects_compare_and_print() -> None:
    assert Authorize(scopes=["a", "b"]) == Authorize(scopes=["b", "a"])
    assert repr(Authorize(scopes=["b", "a"], roles=["admin"], claims={"tenant": is_acme, "plan": "gold"})) == (
        "Authorize(scopes=['a', 'b'], roles=['admin'], claims={'tenant': is_acme, 'plan': 'gold'})")
    assert ApiKeyAuth(CONSUMERS) == ApiKeyAuth(CONSUMERS)
    assert repr(ApiKeyAuth(CONSUMERS, query="k")) == (
        "ApiKeyAuth(['mobile-app', 'partner'], header='x-api-key', query='k')")
    assert repr(CONSUMERS[1]) == "Consumer('partner', 2 keys)"
    assert MOBILE_KEY not in repr(CONSUMERS) and hash_api_key(MOBILE_KEY) not in repr(CONSUMERS)
    assert ForwardIdentity({"X-User": "subject"}) == ForwardIdentity({"x-user": "subject"})
    assert repr(ForwardIdentity({"X-User": "subject"})) == "ForwardIdentity({'x-user': 'subject'})"
    introspection = IntrospectionAuth(issuer="https://idp", client_id="gw", client_secret="hunter2", audience="api")
    assert repr(introspection) == "IntrospectionAuth(issuer='https://idp', client_id='gw', audience='api')"
    assert introspection == IntrospectionAuth(issuer="https://idp", client_id="gw", client_secret="hunter2",
                                              audience="api")
    assert introspection != IntrospectionAuth(issuer="https://idp", client_id="gw", client_secret="x", audience="api")
    credentials = ClientCredentials(issuer="https://idp", client_id="gw", client_secret="hunter2", scope="orders")
    assert repr(credentials) == "ClientCredentials(issuer='https://idp', client_id='gw', scope='orders')"
    assert credentials == ClientCredentials(issuer="https://idp", client_id="gw", client_secret="hunter2",
                                            scope="orders")
    identity = Identity("u", claims={"a": {"b": 1}}, scopes=frozenset({"s"}))
    assert identity.claim("a.b") == 1 and identity.claim("a.c") is None
    assert "claims" not in repr(identity)


async def whoami(exchange: Exchange) -> Response:
    identity = exchange.identity
    return JSONResponse({"subject": identity.subject if isinstance(identity, Identity) else None})


def test_optional_authentication() -> None:
    class Optional(Gateway):
        def routes(self) -> list[Any]:
            return [Route("/whoami", whoami, policies=[ApiKeyAuth(CONSUMERS, optional=True)])]

    with BackgroundServer(Optional()) as server, httpx.Client(base_url=server.url, timeout=10) as c:
        assert c.get("/whoami").json() == {"subject": None}
        assert c.get("/whoami", headers={"x-api-key": MOBILE_KEY}).json() == {"subject": "mobile-app"}
        refused(c.get("/whoami", headers={"x-api-key": "wrong"}), 401, "unauthorized")  # present but invalid
