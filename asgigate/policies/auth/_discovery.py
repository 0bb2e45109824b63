"""OpenID Connect discovery: one endpoint from an issuer's `/.well-known/openid-configuration`."""

from __future__ import annotations

from collections.abc import Mapping

import httpx


async def discover_endpoint(client: httpx.AsyncClient, issuer: str, name: str) -> str:
    """The issuer's `name` endpoint (e.g. "token_endpoint"); ValueError if the document names another issuer."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    response = await client.get(url)
    response.raise_for_status()
    metadata = response.json()
    endpoint = metadata.get(name) if isinstance(metadata, Mapping) else None
    if not isinstance(metadata, Mapping) or metadata.get("issuer") != issuer or not isinstance(endpoint, str):
        raise ValueError(f"{url} names another issuer or no {name}")
    return endpoint
