"""BearerAuth against a real OpenID provider: node's oidc-provider, started on 127.0.0.1 by the tests.

The provider signs JWT access tokens (RFC 9068, `typ: at+jwt`) with RS256 for the resource `urn:asgigate:rs`
and ES256 for `urn:asgigate:es`, issued through the client_credentials grant. The gateway discovers its keys
from the issuer URL alone, and runs under uvicorn in front of the shared echo upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from idp.provider import OpenIDProvider, openid_provider

from asgigate import (
    AnyAuth,
    Authorize,
    BearerAuth,
    ClientCredentials,
    ForwardIdentity,
    Gateway,
    IntrospectionAuth,
    Proxy,
    Route,
    Upstream,
    UpstreamUnavailable,
)
from asgigate.policies.auth import Authenticator
from asgigate.testing import BackgroundServer

from servers import run_closing


class OrdersGateway(Gateway):
    def __init__(self, issuer: str, upstream_url: str, audience: str | list[str] = "urn:asgigate:rs",
                 auth: Authenticator | None = None) -> None:
        super().__init__()
        self.issuer = issuer
        self.audience = audience
        self.orders = Upstream(upstream_url, name="orders")
        self.auth = auth or BearerAuth(issuer=issuer, audience=audience, typ="at+jwt", min_refresh_interval=5)

    def policies(self) -> list[Any]:
        return [
            self.auth,
            ForwardIdentity({"x-user-id": "subject", "x-client-id": "client_id", "x-scopes": "scopes",
                             "x-tenant": "claim:tenant"}),
        ]

    def routes(self) -> list[Any]:
        return [
            Route("/orders", Proxy(self.orders, path="/echo"), policies=[Authorize(scopes=["orders:read"])]),
            Route("/admin", Proxy(self.orders, path="/echo"), policies=[Authorize(roles=["admin"])]),
        ]


@pytest.fixture(scope="module")
def idp() -> Iterator[OpenIDProvider]:
    with openid_provider() as provider:
        yield provider


@pytest.fixture(scope="module")
def gateway(idp: OpenIDProvider, upstream: BackgroundServer) -> Iterator[httpx.Client]:
    with BackgroundServer(OrdersGateway(idp.url, upstream.url, ["urn:asgigate:rs", "urn:asgigate:es"])) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            yield client


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def forwarded(response: httpx.Response) -> dict[str, str]:
    assert response.status_code == 200, response.text
    return {name: value for name, value in response.json()["headers"] if name.startswith("x-")}


@pytest.mark.parametrize("resource", ["urn:asgigate:rs", "urn:asgigate:es"])
def test_real_tokens_are_accepted(idp: OpenIDProvider, gateway: httpx.Client, resource: str) -> None:
    token = idp.token(resource=resource)
    headers = forwarded(gateway.get("/orders", headers={**bearer(token), "x-user-id": "forged"}))
    assert headers["x-user-id"] == "orders-client"
    assert headers["x-client-id"] == "orders-client"
    assert headers["x-scopes"] == "orders:read"
    assert headers["x-tenant"] == "acme"


def test_both_algorithms_are_really_used(idp: OpenIDProvider) -> None:
    import base64
    import json

    def alg(token: str) -> str:
        header = token.split(".")[0]
        value: str = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))["alg"]
        return value

    assert alg(idp.token(resource="urn:asgigate:rs")) == "RS256"
    assert alg(idp.token(resource="urn:asgigate:es")) == "ES256"


def test_scopes_and_roles_from_the_provider(idp: OpenIDProvider, gateway: httpx.Client) -> None:
    reader = idp.token("orders-client", scope="orders:write")  # a token without orders:read
    response = gateway.get("/orders", headers=bearer(reader))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert gateway.get("/admin", headers=bearer(idp.token("orders-client"))).status_code == 403
    admin = idp.token("admin-client", scope="orders:read admin")
    assert gateway.get("/admin", headers=bearer(admin)).status_code == 200
    assert gateway.get("/orders", headers=bearer(admin)).status_code == 200


def test_tampered_and_foreign_tokens_are_refused(idp: OpenIDProvider, upstream: BackgroundServer) -> None:
    token = idp.token()
    header, payload, signature = token.split(".")
    tampered = f"{header}.{payload[:-4]}AAAA.{signature}"
    # A gateway that accepts only the RS256 resource refuses the ES256 resource's tokens (wrong audience).
    with BackgroundServer(OrdersGateway(idp.url, upstream.url)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/orders", headers=bearer(token)).status_code == 200
        for bad in (tampered, idp.token(resource="urn:asgigate:es")):
            response = client.get("/orders", headers=bearer(bad))
            assert response.status_code == 401
            assert response.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
        # Another provider (fresh keys with the same kids, another issuer) is not trusted.
        with openid_provider() as other:
            response = client.get("/orders", headers=bearer(other.token()))
            assert response.status_code == 401
            assert response.json()["code"] == "invalid_token"


def test_keeps_serving_while_the_provider_is_down(upstream: BackgroundServer) -> None:
    with openid_provider() as provider:
        tokens = [provider.token(), provider.token(resource="urn:asgigate:es")]
        server = BackgroundServer(OrdersGateway(provider.url, upstream.url, ["urn:asgigate:rs", "urn:asgigate:es"]))
        with server, httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/orders", headers=bearer(tokens[0])).status_code == 200  # keys fetched
            provider.stop()
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"{provider.url}/jwks", timeout=2)
            response = client.get("/orders", headers=bearer(tokens[1]))  # never seen, verified with cached keys
            assert response.status_code == 200, response.text


# --- opaque tokens: introspection (RFC 7662) -------------------------------------------------------------------


def introspection(idp: OpenIDProvider, **options: Any) -> IntrospectionAuth:
    options.setdefault("client_secret", "gateway-secret")
    return IntrospectionAuth(issuer=idp.url, client_id="gateway", audience="urn:asgigate:opaque", **options)


def opaque(idp: OpenIDProvider, client: str = "orders-client", scope: str = "orders:read") -> str:
    token = idp.token(client, scope=scope, resource="urn:asgigate:opaque")
    assert token.count(".") == 0  # really opaque
    return token


def test_opaque_tokens_are_introspected(idp: OpenIDProvider, upstream: BackgroundServer) -> None:
    gateway = OrdersGateway(idp.url, upstream.url, auth=introspection(idp))
    with BackgroundServer(gateway) as server, httpx.Client(base_url=server.url, timeout=10) as client:
        headers = forwarded(client.get("/orders", headers=bearer(opaque(idp))))
        assert headers["x-client-id"] == "orders-client"
        assert headers["x-scopes"] == "orders:read"
        assert headers["x-tenant"] == "acme"
        assert client.get("/admin", headers=bearer(opaque(idp, "admin-client", "admin"))).status_code == 200
        response = client.get("/orders", headers=bearer(opaque(idp, scope="orders:write")))
        assert response.status_code == 403
        for bad in ("made-up-token", opaque(idp) + "x", idp.token(resource="urn:asgigate:rs")):
            response = client.get("/orders", headers=bearer(bad))
            assert response.status_code == 401, bad
            assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_jwt_or_opaque_on_one_route(idp: OpenIDProvider, upstream: BackgroundServer) -> None:
    auth = AnyAuth(BearerAuth(issuer=idp.url, audience="urn:asgigate:rs"), introspection(idp))
    with BackgroundServer(OrdersGateway(idp.url, upstream.url, auth=auth)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        assert forwarded(client.get("/orders", headers=bearer(idp.token())))["x-client-id"] == "orders-client"
        assert forwarded(client.get("/orders", headers=bearer(opaque(idp))))["x-client-id"] == "orders-client"
        assert client.get("/orders", headers=bearer("nope")).json()["code"] == "invalid_token"


def test_introspection_caches_and_fails_closed(upstream: BackgroundServer) -> None:
    with openid_provider() as provider:
        seen, unseen = opaque(provider), opaque(provider)
        gateway = OrdersGateway(provider.url, upstream.url, auth=introspection(provider))
        with BackgroundServer(gateway) as server, httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/orders", headers=bearer(seen)).status_code == 200
            provider.stop()
            assert client.get("/orders", headers=bearer(seen)).status_code == 200  # cached
            response = client.get("/orders", headers=bearer(unseen))  # cannot be checked: refused, not let in
            assert response.status_code == 503
            assert response.json()["code"] == "upstream_unavailable"


def test_wrong_gateway_credentials_fail_closed(idp: OpenIDProvider, upstream: BackgroundServer) -> None:
    auth = introspection(idp, client_secret="wrong", auth_method="client_secret_post")
    with BackgroundServer(OrdersGateway(idp.url, upstream.url, auth=auth)) as server, \
            httpx.Client(base_url=server.url, timeout=10) as client:
        assert client.get("/orders", headers=bearer(opaque(idp))).status_code == 503


# --- client credentials for upstream calls -----------------------------------------------------------------------


class CallsOnItsOwnBehalf(Gateway):
    def __init__(self, upstream_url: str, credentials: ClientCredentials) -> None:
        super().__init__()
        self.backend = Upstream(upstream_url, name="backend")
        self.credentials = credentials

    def routes(self) -> list[Any]:
        return [Route("/report", Proxy(self.backend, path="/echo"), policies=[self.credentials])]


def upstream_token(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    values = [value for name, value in response.json()["headers"] if name == "authorization"]
    assert len(values) == 1 and values[0].startswith("Bearer ")
    return values[0].removeprefix("Bearer ")


def test_client_credentials_token_for_the_upstream(idp: OpenIDProvider, upstream: BackgroundServer) -> None:
    fetches = []

    class Counting(ClientCredentials):  # a ClientCredentials is immutable: count its fetches in a subclass
        async def _fetch(self) -> tuple[str, float]:
            fetches.append(1)
            return await super()._fetch()

    credentials = Counting(issuer=idp.url, client_id="orders-client", client_secret="orders-secret",
                           auth_method="client_secret_post", scope="orders:read", resource="urn:asgigate:rs")
    with BackgroundServer(CallsOnItsOwnBehalf(upstream.url, credentials)) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            first = upstream_token(client.get("/report", headers={"authorization": "Bearer the-callers-own"}))

            async def burst() -> list[str]:
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as aclient:
                    responses = await asyncio.gather(*(aclient.get("/report") for _ in range(20)))
                return [upstream_token(r) for r in responses]

            assert set(asyncio.run(burst())) == {first}  # cached, reused, fetched once
    assert len(fetches) == 1
    # a real token from the provider, that a resource server accepts
    verifier = BearerAuth(issuer=idp.url, audience="urn:asgigate:rs", typ="at+jwt")
    identity = run_closing(verifier.verify(first), verifier)
    assert (identity.client_id, identity.scopes) == ("orders-client", frozenset({"orders:read"}))


def test_client_credentials_refresh_single_flight_and_failure(idp: OpenIDProvider) -> None:
    now = [0.0]
    credentials = ClientCredentials(token_url=f"{idp.url}/token", client_id="gateway", client_secret="gateway-secret",
                                    scope="orders:read", resource="urn:asgigate:rs", clock=lambda: now[0])

    async def many() -> set[str]:
        return set(await asyncio.gather(*(credentials.token() for _ in range(10))))

    first = run_closing(many(), credentials)  # (each event loop closes the policy's client it used)
    assert len(first) == 1  # ten concurrent callers, one token
    now[0] = 250.0  # the token lives 300 s; refreshed 30 s before expiry
    assert run_closing(credentials.token(), credentials) in first
    now[0] = 271.0
    renewed = run_closing(credentials.token(), credentials)
    assert renewed not in first
    wrong = ClientCredentials(token_url=f"{idp.url}/token", client_id="gateway", client_secret="nope")
    with pytest.raises(UpstreamUnavailable):
        run_closing(wrong.token(), wrong)
