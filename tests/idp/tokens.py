"""Keys and hand-made tokens for the auth tests, including malformed and malicious ones.

Tokens are assembled here byte by byte (not through a JWT library's encoder) so that the tests can put
anything in the header: `alg: none`, `jku`, `crit`, a wrong `kid`, broken base64.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from joserfc.jwk import ECKey, Key, RSAKey
from joserfc.jws import JWSRegistry

ISSUER = "https://idp.test"
AUDIENCE = "orders-api"

RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig", "alg": "RS256"})
EC = ECKey.generate_key("P-256", parameters={"kid": "ec-1", "use": "sig", "alg": "ES256"})
OTHER_RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1", "use": "sig", "alg": "RS256"})  # same kid!


def b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def b64json(value: Any) -> bytes:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def jwks(*keys: Key) -> dict[str, Any]:
    return {"keys": [dict(key.as_dict(private=False)) for key in keys]}


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "client_id": "web", "scope": "orders:read profile",
        "iat": now, "exp": now + 300, "roles": ["reader"], "tenant": "acme",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any] | bytes, key: Key | None = RSA, alg: str = "RS256", **header: Any) -> str:
    """A compact JWS over `payload` with `header` (kid defaults to the key's, typ to JWT; None removes one)."""
    full: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if key is not None and key.kid:
        full["kid"] = key.kid
    full.update(header)
    full = {k: v for k, v in full.items() if v is not None}
    body = payload if isinstance(payload, bytes) else b64json(payload)
    signing_input = b64json(full) + b"." + body
    if alg == "none" or key is None:
        signature = b""
    else:
        signature = JWSRegistry.algorithms[alg].sign(signing_input, key)
    return (signing_input + b"." + b64(signature)).decode()


def hs256_with_public_key(payload: dict[str, Any], key: RSAKey = RSA) -> str:
    """Algorithm confusion: an HS256 token whose HMAC secret is the RSA public key in PEM (what a naive
    verifier that hands the 'key' to whatever algorithm the token names would accept)."""
    secret = key.as_pem(private=False)
    signing_input = b64json({"alg": "HS256", "typ": "JWT", "kid": key.kid}) + b"." + b64json(payload)
    return (signing_input + b"." + b64(hmac.new(secret, signing_input, hashlib.sha256).digest())).decode()
