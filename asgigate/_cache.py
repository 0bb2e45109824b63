"""A least-recently-used cache bounded by bytes, for what client input fills (documents, persisted queries,
verified tokens, decisions, sessions).

An entry count alone does not bound memory when the client chooses each entry's size: 512 cached documents of
10,000 tokens each are gigabytes. Each entry is charged its size (in bytes, or an estimate that errs high), and
the least recently used entries go once the total passes `max_bytes`.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

__all__ = ["BoundedCache", "json_size"]


class BoundedCache(Generic[K, V]):
    """LRU map bounded by the total size of its entries and, optionally, by their number.

    An entry larger than `max_entry_bytes` (default: an eighth of `max_bytes`) is not kept, so one big entry
    cannot push out everything else. With `admit_on_second_sight`, a key is only kept the second time it is put
    within the last `doorkeeper` distinct keys: a flood of one-off keys (distinct queries sent once each) then
    neither costs memory nor evicts the entries that are actually reused. The doorkeeper remembers hashes, not
    keys (a collision only admits an entry early).
    """

    def __init__(self, max_bytes: int, *, max_entries: int | None = None, max_entry_bytes: int | None = None,
                 admit_on_second_sight: bool = False, doorkeeper: int = 4096) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.max_entry_bytes = max_entry_bytes if max_entry_bytes is not None else max_bytes // 8
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._doorkeeper_size = doorkeeper if admit_on_second_sight else 0
        self._seen: dict[int, None] = {}

    @property
    def bytes(self) -> int:
        """The total charged size of the entries kept."""
        return self._bytes

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, size: int) -> bool:
        """Keep `value` under `key`, charged `size`; False when it was not kept (too big, or first seen)."""
        if self.max_bytes <= 0 or size > self.max_entry_bytes:
            return False
        if self._doorkeeper_size and key not in self._entries:
            digest = hash(key)
            if digest not in self._seen:
                self._seen[digest] = None
                if len(self._seen) > self._doorkeeper_size:
                    del self._seen[next(iter(self._seen))]
                return False
            del self._seen[digest]
        self.pop(key)
        self._entries[key] = (value, size)
        self._bytes += size
        while self._entries and (self._bytes > self.max_bytes
                                 or (self.max_entries is not None and len(self._entries) > self.max_entries)):
            _, (_, dropped) = self._entries.popitem(last=False)
            self._bytes -= dropped
        return key in self._entries

    def pop(self, key: K) -> V | None:
        found = self._entries.pop(key, None)
        if found is None:
            return None
        self._bytes -= found[1]
        return found[0]

    def touch(self, key: K) -> None:
        if key in self._entries:
            self._entries.move_to_end(key)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


def json_size(value: Any) -> int:
    """The memory a JSON-like value takes (dicts, lists, strings, numbers): what parsing a token's claims or an
    answer made of its bytes, which can be twenty times their length (``[{}, {}, ...]``)."""
    total = 0
    pending = [value]
    while pending:
        item = pending.pop()
        total += sys.getsizeof(item)
        if isinstance(item, Mapping):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            pending.extend(item)
    return total
