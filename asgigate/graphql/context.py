"""GraphQLContext: what a resolver sees as ``info.context``: the request, the backends and its loaders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from graphql import DocumentNode
from strawberry.dataloader import DataLoader

from ..errors import ConfigurationError
from ..upstreams import BaseUpstream, Upstream
from .backends import expand_path, graphql_call, rest_call
from .loaders import BatchLoader

if TYPE_CHECKING:
    from ..exchange import Exchange
    from .grpc import GrpcBackend

__all__ = ["GraphQLContext"]


class GraphQLContext:
    """Per-request resolver context.

    - `exchange`: the gateway's `Exchange` (`identity` from the auth policies, `request_id`, headers, state).
    - `upstreams`: the gateway's upstreams by name; `rest()`, `graphql()` and `grpc()` call them in one line,
      relaying the request's credentials (`relay_headers`, by default ``Authorization``, which `TokenRelay`
      fills from a login session) and the request id.
    - `loader(spec)` / `load(spec, key)`: per-request DataLoaders, created on first use.
    - `cost`: the operation's cost, when the route measures it.
    """

    def __init__(
        self,
        exchange: Exchange,
        upstreams: Mapping[str, BaseUpstream],
        *,
        relay_headers: Sequence[str] = ("authorization",),
        loaders: dict[Any, DataLoader[Any, Any]] | None = None,
    ) -> None:
        self.exchange = exchange
        self.upstreams = upstreams
        self.relay_headers = relay_headers
        self.loaders: dict[Any, DataLoader[Any, Any]] = loaders if loaders is not None else {}
        self.cost: int | None = None
        self._relayed: dict[str, str] | None = None
        self._document: DocumentNode | None = None  # set by the GraphQL target once the operation is validated
        self._executed = False

    @property
    def identity(self) -> Any:
        return self.exchange.identity

    @property
    def request_id(self) -> str:
        return self.exchange.request_id

    # --- backends ---------------------------------------------------------------------------------------

    def upstream(self, upstream: str | BaseUpstream) -> BaseUpstream:
        """The upstream of that name (or the upstream given), of whatever kind."""
        if isinstance(upstream, BaseUpstream):
            return upstream
        found = self.upstreams.get(upstream)
        if found is None:
            raise ConfigurationError(f"No upstream named {upstream!r}; known: {sorted(self.upstreams)}.")
        return found

    def http_upstream(self, upstream: str | BaseUpstream) -> Upstream:
        """The HTTP `Upstream` of that name: REST and remote GraphQL calls cannot go to a gRPC backend."""
        found = self.upstream(upstream)
        if not isinstance(found, Upstream):
            raise ConfigurationError(f"Upstream {found.name!r} is {found.kind}, not an HTTP Upstream: use ctx.grpc().")
        return found

    def relayed(self) -> dict[str, str]:
        """The headers sent to every backend: the relayed credentials and the request id (``X-Request-ID``)."""
        if self._relayed is None:
            wanted = {name.lower().encode("latin-1") for name in self.relay_headers}
            headers = {name.decode("latin-1"): value.decode("latin-1")
                       for name, value in self.exchange.scope.get("headers", ()) if name in wanted}
            if self.exchange.request_id:
                header = self.exchange.context.request_id_header.decode("latin-1") or "x-request-id"
                headers[header] = self.exchange.request_id
            self._relayed = headers
        return self._relayed

    def _headers(self, relay: bool, headers: Mapping[str, str] | None) -> dict[str, str]:
        merged = dict(self.relayed()) if relay else {}
        if headers:
            merged.update(headers)
        return merged

    async def rest(
        self,
        upstream: str | BaseUpstream,
        path: str,
        *,
        method: str = "GET",
        query: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,  # noqa: ASYNC109
        relay: bool = True,
        **params: Any,
    ) -> Any:
        """``await ctx.rest("users", "/users/{id}", id=7)``: the decoded JSON, or a `BackendCallError`."""
        target = self.http_upstream(upstream)
        return await rest_call(target, method, expand_path(path, params), query=query, json=json,
                               headers=self._headers(relay, headers), timeout=timeout)

    async def graphql(
        self,
        upstream: str | BaseUpstream,
        query: str,
        variables: Mapping[str, Any] | None = None,
        *,
        operation_name: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | httpx.Timeout | None = None,  # noqa: ASYNC109
        relay: bool = True,
    ) -> Any:
        """``await ctx.graphql("catalog", "query($id: ID!) { product(id: $id) { name } }", {"id": 1})``:
        the response's ``data``."""
        body = await graphql_call(self.http_upstream(upstream), query, variables, operation_name=operation_name,
                                  headers=self._headers(relay, headers), timeout=timeout)
        return body.get("data")

    async def grpc(
        self,
        backend: str | GrpcBackend,
        method: str,
        request: Mapping[str, Any] | Any = None,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        relay: bool = True,
        as_dict: bool = True,
    ) -> Any:
        """``await ctx.grpc("orders", "orders.Orders/GetOrder", {"id": 7})``: the response as a dict."""
        from .grpc import GrpcBackend

        target = self.upstream(backend)
        if not isinstance(target, GrpcBackend):
            raise ConfigurationError(f"Upstream {target.name!r} is not a GrpcBackend.")
        metadata = list(self.relayed().items()) if relay else []
        return await target.call(method, request if request is not None else {}, timeout=timeout,
                                 metadata=metadata, as_dict=as_dict)

    # --- loaders ----------------------------------------------------------------------------------------

    def loader(self, spec: BatchLoader) -> DataLoader[Any, Any]:
        """This request's DataLoader for `spec`, made on first use."""
        found = self.loaders.get(spec)
        if found is None:
            if not isinstance(spec, BatchLoader):
                raise ConfigurationError(f"{spec!r} is not a loader spec (RestBatch, GrpcBatch, @batch_loader).")

            async def load(keys: list[Any]) -> Sequence[Any]:
                return await spec.load(self, keys)

            found = self.loaders[spec] = DataLoader(load, max_batch_size=spec.max_batch_size,
                                                    cache_key_fn=spec.cache_key)
        return found

    async def load(self, spec: BatchLoader, key: Any) -> Any:
        """``await ctx.load(users, 7)``: one key through the request's loader for `spec`."""
        return await self.loader(spec).load(key)

    async def load_many(self, spec: BatchLoader, keys: Sequence[Any]) -> list[Any]:
        return await self.loader(spec).load_many(keys)
