"""Rate limit counters in this process's memory, bounded by bytes: the memory store, and a Redis store's fallback.

A counter's key holds what the limit counts by (an address, a header value, a subject), so a client that sends
new values makes new counters. Each counter is charged its size and, once the total passes `max_bytes`, the
least recently used counters are dropped, as nginx's `limit_req` zone and Kong's local policy do. Dropping
rather than refusing new keys: a full store that refused new counters would lock every new client out, while
dropping the least recently used resets only counters idle for longer than a flood takes to fill the store; a
client that floods with made-up values could have escaped its limit by choosing a new value anyway.

All strategies are answered without an await (one event loop runs one request at a time between awaits, so a
read-modify-write without an await is atomic) and without a scan: expired counters are dropped as they reach
the least recently used end, one or two per new counter.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from limits.aio.storage import MovingWindowSupport, SlidingWindowCounterSupport, Storage
from limits.storage.base import TimestampedSlidingWindow

__all__ = ["MemoryCounters"]

# What a counter costs beyond its key's characters: the key's str header, the [count, end, size] list with its
# float and int, and its OrderedDict slot and link (measured with tracemalloc: 308 bytes; charged high).
COUNTER_BYTES = 320
# A moving window keeps one timestamp per hit within the window (a float, and its slot in a deque).
HIT_BYTES = 40
_MOVING = "\0moving\0"  # moving windows' keys: apart from the counters, as `limits` keeps them


class MemoryCounters(Storage, MovingWindowSupport, SlidingWindowCounterSupport, TimestampedSlidingWindow):
    """Fixed-window counters (`hit`, the memory store's hot path) and `limits`' async storage API on one budget.

    `bytes` is the charged size of what is kept, `evictions` the counters dropped to stay within `max_bytes`.
    `clock` gives the time (Unix seconds) of the async API's calls (`hit` is given it by the caller).
    """

    STORAGE_SCHEME = None  # made by RateLimitStore, not by a `limits` URI

    def __init__(self, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.max_bytes = max_bytes
        self.clock = clock
        self.bytes = 0
        self.evictions = 0
        # Least recently used first. An entry is [count, end, charged size]: a counter and its window's end, or
        # for a moving window [its hits' times (a deque, oldest first), the end of its newest hit, size].
        self._entries: OrderedDict[str, list[Any]] = OrderedDict()

    @property
    def base_exceptions(self) -> type[Exception]:
        return ValueError

    def __len__(self) -> int:
        return len(self._entries)

    # --- fixed windows ------------------------------------------------------------------------------------

    def hit(self, key: str, expiry: float, cost: int, now: float) -> tuple[int, float]:
        """Add `cost` to the key's counter; (the count, the window's end as a Unix time)."""
        entry = self._entries.get(key)
        if entry is None or entry[1] <= now:
            return self._open(key, expiry, cost, now)
        self._entries.move_to_end(key)
        entry[0] += cost
        return entry[0], entry[1]

    def _open(self, key: str, expiry: float, cost: int, now: float) -> tuple[int, float]:
        """A new window: the key's expired counter restarts, or a new counter is charged (and room made)."""
        entries = self._entries
        end = now + expiry
        entry = entries.get(key)
        if entry is not None:
            entry[0], entry[1] = cost, end
            entries.move_to_end(key)
            return cost, end
        size = COUNTER_BYTES + len(key)
        entries[key] = [cost, end, size]
        self.bytes += size
        self._make_room(now)
        return cost, end

    def _make_room(self, now: float) -> None:
        entries = self._entries
        # Expired entries at the least recently used end go first (a cheap, steady clean-up: no scans)...
        for _ in range(2):
            key, oldest = next(iter(entries.items()))
            if oldest[1] > now or len(entries) == 1:
                break
            del entries[key]
            self.bytes -= oldest[2]
        # ...then, past the budget, the least recently used, expired or not (the newest is always kept).
        while self.bytes > self.max_bytes and len(entries) > 1:
            self.bytes -= entries.popitem(last=False)[1][2]
            self.evictions += 1

    def _count(self, key: str, now: float) -> int:
        entry = self._entries.get(key)
        return entry[0] if entry is not None and entry[1] > now else 0

    async def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        return self.hit(key, expiry, amount, self.clock())[0]

    async def get(self, key: str) -> int:
        return self._count(key, self.clock())

    async def get_expiry(self, key: str) -> float:
        now = self.clock()
        entry = self._entries.get(key)
        return entry[1] if entry is not None and entry[1] > now else now

    async def clear(self, key: str) -> None:
        for name in (key, _MOVING + key):
            dropped = self._entries.pop(name, None)
            if dropped is not None:
                self.bytes -= dropped[2]

    async def reset(self) -> int | None:
        count = len(self._entries)
        self._entries.clear()
        self.bytes = 0
        return count

    async def check(self) -> bool:
        return True

    # --- moving windows: a timestamp per hit ------------------------------------------------------------------

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = self.clock()
        name = _MOVING + key
        entry = self._entries.get(name)
        if entry is None:
            entry = self._entries[name] = [deque(), now, 0]
        else:
            self._entries.move_to_end(name)
        times: deque[float] = entry[0]
        while times and times[0] <= now - expiry:
            times.popleft()
        admitted = len(times) + amount <= limit
        if admitted:
            times.extend([now] * amount)
            entry[1] = now + expiry
        size = COUNTER_BYTES + len(name) + HIT_BYTES * len(times)
        self.bytes += size - entry[2]
        entry[2] = size
        self._make_room(now)
        return admitted

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        now = self.clock()
        entry = self._entries.get(_MOVING + key)
        if entry is None:
            return now, 0
        times: deque[float] = entry[0]
        while times and times[0] <= now - expiry:  # the size charged is recomputed at the next hit
            times.popleft()
        return (times[0], len(times)) if times else (now, 0)

    # --- sliding windows: two fixed windows, the previous one weighted ----------------------------------------

    async def acquire_sliding_window_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        now = self.clock()
        previous, previous_ttl, current, _ = self._sliding(key, expiry, now)
        if math.floor(previous * previous_ttl / expiry + current) + amount > limit:
            return False
        # a window's counter lives two windows: it is the previous one during the second
        self.hit(self.sliding_window_keys(key, expiry, now)[1], 2 * expiry, amount, now)
        return True

    async def get_sliding_window(self, key: str, expiry: int) -> tuple[int, float, int, float]:
        return self._sliding(key, expiry, self.clock())

    async def clear_sliding_window(self, key: str, expiry: int) -> None:
        for name in self.sliding_window_keys(key, expiry, self.clock()):
            await self.clear(name)

    def _sliding(self, key: str, expiry: int, now: float) -> tuple[int, float, int, float]:
        """As `limits`' memory storage: (previous count, its weight in seconds, current count, current TTL)."""
        previous_key, current_key = self.sliding_window_keys(key, expiry, now)
        previous, current = self._count(previous_key, now), self._count(current_key, now)
        previous_ttl = 0.0 if previous == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous, previous_ttl, current, current_ttl

    def __repr__(self) -> str:
        return f"MemoryCounters(max_bytes={self.max_bytes}, counters={len(self._entries)}, bytes={self.bytes})"
