"""The JWT the benchmark sends: a key pair and one long-lived RS256 token, made once per run by the harness.

The public key goes to every system as ``BENCH_JWT_KEY`` (a JWK, JSON), with ``BENCH_JWT_ISSUER`` and
``BENCH_JWT_AUDIENCE``; the token goes to wrk as ``-H "Authorization: Bearer ..."`` for every system and
workload, so request sizes are equal everywhere (systems without auth ignore the header, proxies forward it).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from dataclasses import dataclass

ISSUER = "https://bench.asgigate.invalid"
AUDIENCE = "asgigate-bench"
KID = "bench-1"
TTL_S = 24 * 3600  # far longer than any run (--max-minutes), so no token expires mid-run


@dataclass(frozen=True)
class BenchJwt:
    token: str
    public_jwk: str  # JSON

    @property
    def header(self) -> str:
        return f"Authorization: Bearer {self.token}"

    def env(self) -> dict[str, str]:
        return {"BENCH_JWT_KEY": self.public_jwk, "BENCH_JWT_ISSUER": ISSUER, "BENCH_JWT_AUDIENCE": AUDIENCE}


def make_jwt() -> BenchJwt:
    """A fresh RSA 2048 key and a token signed with it (joserfc, asgigate's `auth` extra)."""
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, parameters={"kid": KID, "alg": "RS256", "use": "sig"})
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench-user", "client_id": "bench", "scope": "bench",
              "iat": now, "exp": now + TTL_S}  # fmt: skip
    token = jwt.encode({"alg": "RS256", "kid": KID, "typ": "JWT"}, claims, key, algorithms=["RS256"])
    return BenchJwt(token=token, public_jwk=json.dumps(key.as_dict(private=False)))


def verify_cost_us(bench: BenchJwt, rounds: int = 300) -> dict[str, float]:
    """Median µs of one `BearerAuth.verify` in this process: a signature check (cache off), and a cache hit."""
    from asgigate import BearerAuth

    async def median_us(auth: BearerAuth) -> float:
        await auth.verify(bench.token)  # warm (and fill the cache when it is on)
        samples = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            await auth.verify(bench.token)
            samples.append((time.perf_counter() - t0) * 1e6)
        return statistics.median(samples)

    def bearer(cache_size: int) -> BearerAuth:
        keys = json.loads(bench.public_jwk)
        return BearerAuth(issuer=ISSUER, audience=AUDIENCE, algorithms=["RS256"], keys=keys, cache_size=cache_size)

    return {
        "uncached_us": asyncio.run(median_us(bearer(0))),
        "cached_us": asyncio.run(median_us(bearer(10_000))),
    }
