"""Edge layers shared by the asgigate benchmark apps, configured from the harness's environment.

- ``UPSTREAM_URL``: the nginx upstream.
- ``BENCH_JWT_KEY`` (a public JWK, JSON), ``BENCH_JWT_ISSUER``, ``BENCH_JWT_AUDIENCE``: made once per run by
  ``benchmarks/tokens.py``, which also gives wrk the matching token. Without ``BENCH_JWT_KEY`` (an app started
  by hand), a key is made at start-up and a token valid for a day is printed to stderr.
- ``RATELIMIT_REDIS_URL``: the redis-server the harness started (default ``redis://127.0.0.1:6379``).
- ``RATELIMIT_REDIS_TIMEOUT``: the Redis store's timeout in seconds (default 0.5; instructions.py gives more,
  since a server under callgrind runs about 50 times slower).

The rate limits never refuse during a run (10^9 requests per hour per client address): what is measured is
the decision and the rate limit headers on every reply, not 429 replies.
"""

import json
import os
import sys
import time
from typing import Any

from asgigate import AccessLog, BearerAuth, Gateway, Metrics, RateLimit, Upstream
from asgigate.policies.ratelimit import RateLimitStore, by_client_ip
from asgigate.policies.ratelimit.policy import HeaderSet

NEVER_REFUSES = "1000000000/hour"


class Edge(Gateway):
    """A gateway with the benchmark's upstream as ``self.backend``; request ids and access log on by default."""

    def __init__(self, *, request_id: bool = True, access_log: bool = True, metrics: Metrics | None = None) -> None:
        # The access log as docs/observability.md recommends for busy gateways: the buffered JSON-lines sink,
        # written to a real file (/dev/null unless ACCESS_LOG_PATH is set) so formatting and writes are paid for.
        sink = AccessLog(os.environ.get("ACCESS_LOG_PATH", os.devnull)) if access_log else False
        super().__init__(request_id=request_id, access_log=sink, metrics=metrics)
        self.backend = Upstream(os.environ["UPSTREAM_URL"])  # e.g. "http://127.0.0.1:8081"


def _demo_key() -> dict[str, Any]:
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    key = RSAKey.generate_key(2048, parameters={"kid": "bench-1", "alg": "RS256", "use": "sig"})
    now = int(time.time())
    claims = {"iss": os.environ.get("BENCH_JWT_ISSUER", "https://bench.asgigate.invalid"),
              "aud": os.environ.get("BENCH_JWT_AUDIENCE", "asgigate-bench"), "sub": "bench-user",
              "iat": now, "exp": now + 86400}  # fmt: skip
    token = jwt.encode({"alg": "RS256", "kid": "bench-1"}, claims, key, algorithms=["RS256"])
    print(f"BENCH_JWT_KEY not set: made a key; send  Authorization: Bearer {token}", file=sys.stderr, flush=True)
    public: dict[str, Any] = key.as_dict(private=False)
    return public


def bearer_auth() -> BearerAuth:
    """RS256 with the harness's static public key (no discovery); verified tokens are cached (the default)."""
    raw = os.environ.get("BENCH_JWT_KEY")
    key = json.loads(raw) if raw else _demo_key()
    return BearerAuth(
        issuer=os.environ.get("BENCH_JWT_ISSUER", "https://bench.asgigate.invalid"),
        audience=os.environ.get("BENCH_JWT_AUDIENCE", "asgigate-bench"),
        algorithms=["RS256"],
        keys=key,
    )


def memory_rate_limit(*, headers: HeaderSet = "all") -> RateLimit:
    """One limit per client address, counted in this process's memory (the default store)."""
    return RateLimit(NEVER_REFUSES, key=by_client_ip, headers=headers)


def redis_rate_limit(options: dict[str, Any] | None = None) -> RateLimit:
    """One limit per client address, counted in Redis (one atomic store call per request).

    ``on_failure="closed"``: a store failure answers 503, which wrk counts as an error, instead of quietly
    counting in memory and reporting the memory store's speed as Redis's.
    """
    timeout = float(os.environ.get("RATELIMIT_REDIS_TIMEOUT", "0.5"))
    store = RateLimitStore(
        os.environ.get("RATELIMIT_REDIS_URL", "redis://127.0.0.1:6379"), timeout=timeout,
        connect_timeout=max(2.0, timeout), on_failure="closed", options=options,
    )
    return RateLimit(NEVER_REFUSES, key=by_client_ip, store=store, name="bench")
