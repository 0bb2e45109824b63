"""Declarative batch loaders: one backend call per relation and request, keys deduplicated and cached.

A loader spec is configuration (immutable, shared); `GraphQLContext.loader(spec)` makes the per-request
strawberry DataLoader from it on first use, and it is thrown away with the request.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from .backends import BackendCallError

if TYPE_CHECKING:
    from .context import GraphQLContext

__all__ = ["BatchLoader", "GrpcBatch", "RestBatch", "batch_loader"]

BatchFunction = Callable[["GraphQLContext", list[Any]], Awaitable[Sequence[Any]]]


def _dig(value: Any, path: str | None) -> Any:
    for part in (path.split(".") if path else ()):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class BatchLoader(ABC):
    """Base of loader specs: `load(ctx, keys)` returns one value (or exception) per key, in the keys' order.

    `max_batch_size` splits larger batches; `cache_key` maps a key to what deduplicates it (default: itself).
    """

    max_batch_size: int | None = None
    cache_key: Callable[[Any], Hashable] | None = None

    @abstractmethod
    async def load(self, ctx: GraphQLContext, keys: list[Any]) -> Sequence[Any]:
        """One value (or an exception) per key, in the keys' order."""


class _FunctionLoader(BatchLoader):
    def __init__(self, function: BatchFunction, max_batch_size: int | None) -> None:
        self.function = function
        self.max_batch_size = max_batch_size

    async def load(self, ctx: GraphQLContext, keys: list[Any]) -> Sequence[Any]:
        return await self.function(ctx, keys)

    def __repr__(self) -> str:
        return f"batch_loader({getattr(self.function, '__qualname__', self.function)})"


def batch_loader(
    function: BatchFunction | None = None, *, max_batch_size: int | None = None
) -> Any:
    """Decorate ``async def users(ctx, ids) -> list`` to use it as a loader spec: ``ctx.load(users, 7)``."""
    if function is None:
        return lambda f: _FunctionLoader(f, max_batch_size)
    return _FunctionLoader(function, max_batch_size)


def _match(keys: list[Any], items: Any, key: str, many: bool, owner: str) -> list[Any]:
    if not isinstance(items, list):
        raise BackendCallError(f"{owner}: the backend sent no list.", code="UPSTREAM_PROTOCOL_ERROR", upstream=owner)
    found: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        value = str(item.get(key))
        if many:
            found.setdefault(value, []).append(item)
        else:
            found[value] = item
    return [found.get(str(k), [] if many else None) for k in keys]


class RestBatch(BatchLoader):
    """Load many keys with one REST call: ``RestBatch("users", "/users", param="ids", key="id")`` sends
    ``GET /users?ids=1,2,3`` and matches the returned items to the keys by their `key` field.

    `items`: a dotted path to the list in the response (``"data.users"``; default: the body is the list).
    `join`: how ids go in the query (``","`` one parameter; None repeats it ``ids=1&ids=2``). `many`: each key
    gets the list of items whose `key` field equals it (one-to-many, e.g. orders by ``user_id``). Missing keys
    resolve to None (or []).
    """

    def __init__(
        self,
        upstream: str | Any,
        path: str,
        *,
        param: str = "ids",
        key: str = "id",
        items: str | None = None,
        join: str | None = ",",
        many: bool = False,
        max_batch_size: int | None = 100,
        timeout: float | None = None,
    ) -> None:
        self.upstream, self.path, self.param, self.key = upstream, path, param, key
        self.items, self.join, self.many = items, join, many
        self.max_batch_size, self.timeout = max_batch_size, timeout

    async def load(self, ctx: GraphQLContext, keys: list[Any]) -> Sequence[Any]:
        value: Any = self.join.join(str(k) for k in keys) if self.join is not None else list(keys)
        body = await ctx.rest(self.upstream, self.path, query={self.param: value}, timeout=self.timeout)
        return _match(keys, _dig(body, self.items), self.key, self.many, repr(self))

    def __repr__(self) -> str:
        return f"RestBatch({getattr(self.upstream, 'name', self.upstream)!r}, {self.path!r}, key={self.key!r})"


class GrpcBatch(BatchLoader):
    """Load many keys with one gRPC call: ``GrpcBatch("orders", "orders.Orders/ListByUsers",
    keys_field="user_ids", items="orders", key="user_id", many=True)``: the request carries the keys in
    `keys_field`, the response's `items` list is matched to them by `key`."""

    def __init__(
        self,
        backend: str | Any,
        method: str,
        *,
        keys_field: str = "ids",
        items: str = "items",
        key: str = "id",
        many: bool = False,
        max_batch_size: int | None = 100,
        timeout: float | None = None,
    ) -> None:
        if not items:
            raise ConfigurationError("GrpcBatch needs items=, the response field holding the list.")
        self.backend, self.method, self.keys_field = backend, method, keys_field
        self.items, self.key, self.many = items, key, many
        self.max_batch_size, self.timeout = max_batch_size, timeout

    async def load(self, ctx: GraphQLContext, keys: list[Any]) -> Sequence[Any]:
        response = await ctx.grpc(self.backend, self.method, {self.keys_field: list(keys)}, timeout=self.timeout)
        return _match(keys, _dig(response, self.items), self.key, self.many, repr(self))

    def __repr__(self) -> str:
        return f"GrpcBatch({getattr(self.backend, 'name', self.backend)!r}, {self.method!r})"
