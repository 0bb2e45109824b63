"""Rate limits, quotas and concurrency limits: `RateLimit`, `ConcurrencyLimit` and their building blocks.

    policy.py        RateLimit: limits and quotas per key, the RateLimit headers
    concurrency.py   ConcurrencyLimit: requests in flight per key
    limits.py        Limit and Plan: what a RateLimit counts against
    keys.py          Key and the by_* keys: what a limit counts by
    store.py         RateLimitStore: where counters live, behind a timeout, a failure setting and a fallback
    _memory.py       counters in this process's memory, bounded by bytes (the memory store, a Redis store's fallback)
    _redis_wire.py   the minimal Redis client for the one call on a Redis rate limit's hot path
"""

from .concurrency import ConcurrencyLimit
from .keys import Key, by_client_ip, by_client_network, by_header, by_route, by_subject
from .limits import Limit, Plan
from .policy import LimitUsage, RateLimit
from .store import RateLimitStore

__all__ = [
    "ConcurrencyLimit",
    "Key",
    "Limit",
    "LimitUsage",
    "Plan",
    "RateLimit",
    "RateLimitStore",
    "by_client_ip",
    "by_client_network",
    "by_header",
    "by_route",
    "by_subject",
]
