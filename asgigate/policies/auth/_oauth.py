"""The OAuth 2.0 client side of the gateway's requests to an identity provider, on authlib's protocol layer.

authlib builds what goes on the wire: the authorization URL (RFC 6749 4.1.1, with PKCE S256 from RFC 7636), the
form bodies of token and introspection requests, and the client authentication (``client_secret_basic``,
``client_secret_post`` or ``none``). The requests themselves go out over httpx with the gateway's timeouts;
authlib's own httpx integration is not used (it is moving to another HTTP package, and the gateway decides per
call what a refusal and an outage mean).
"""

from __future__ import annotations

from typing import Any

import httpx

from ...errors import ConfigurationError

__all__ = ["AUTH_METHODS", "authorization_url", "form_post", "require_authlib", "token_request"]

AUTH_METHODS = ("client_secret_basic", "client_secret_post")

_FORM = "application/x-www-form-urlencoded"


def require_authlib(what: str) -> None:
    """At build time: a clear message when the `auth` extra is missing (`import asgigate` never needs it)."""
    try:
        import authlib  # noqa: F401
    except ImportError:
        raise ConfigurationError(f"{what} needs authlib: pip install 'asgigate[auth]'") from None


def authorization_url(
    endpoint: str, *, client_id: str, redirect_uri: str, scope: str, state: str, nonce: str, verifier: str,
    extra: dict[str, str] | None = None,
) -> str:
    """The URL that starts the authorization code flow with PKCE (S256) and an OpenID Connect nonce."""
    from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
    from authlib.oauth2.rfc7636 import create_s256_code_challenge

    url: str = prepare_grant_uri(
        endpoint, client_id, "code", redirect_uri=redirect_uri, scope=scope, state=state, nonce=nonce,
        code_challenge=create_s256_code_challenge(verifier), code_challenge_method="S256", **(extra or {}),
    )
    return url


async def form_post(
    client: httpx.AsyncClient, url: str, body: str, *, client_id: str, client_secret: str | None, auth_method: str,
) -> httpx.Response:
    """POST a form body to an endpoint of the IdP, authenticated as the client the way `auth_method` says."""
    from authlib.oauth2.auth import ClientAuth

    method = auth_method if client_secret is not None else "none"
    headers: dict[str, str] = {"content-type": _FORM, "accept": "application/json"}
    _, headers, body = ClientAuth(client_id, client_secret, method).prepare("POST", url, headers, body)
    return await client.post(url, content=body.encode(), headers=headers)


async def token_request(
    client: httpx.AsyncClient, url: str, grant_type: str, params: dict[str, Any], *, client_id: str,
    client_secret: str | None, auth_method: str,
) -> httpx.Response:
    """A token endpoint request (RFC 6749 section 4): the grant and its parameters, client authentication."""
    from authlib.oauth2.rfc6749.parameters import prepare_token_request

    body: str = prepare_token_request(grant_type, **params)
    return await form_post(client, url, body, client_id=client_id, client_secret=client_secret,
                           auth_method=auth_method)
