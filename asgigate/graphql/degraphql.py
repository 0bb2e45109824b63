"""DeGraphQL: a REST endpoint backed by a fixed GraphQL operation, answering the operation's data as plain JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import orjson
from graphql import (
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    OperationDefinitionNode,
    get_operation_ast,
    parse,
    specified_rules,
    type_from_ast,
    validate,
)
from graphql.error import GraphQLSyntaxError

from .._frozen import Frozen
from ..errors import (
    BadGateway,
    BadRequest,
    ConfigurationError,
    GatewayError,
    UpstreamErrorResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ..targets.base import Target
from .target import GraphQL

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..gateway import Gateway
    from ..routing import Route
    from ..types import Receive, Send
    from ..upstreams import BaseUpstream

__all__ = ["DeGraphQL"]

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class DeGraphQL(Frozen, Target):
    """``Route("/v1/users/{id}", DeGraphQL(api, "query($id: ID!) { user(id: $id) { id name } }"))``.

    Each variable of the operation is filled from the route parameter of the same name, else the query parameter
    of the same name, or as `variables` says (``{"id": "path:user_id", "n": "query:limit",
    "lang": "header:accept-language"}``). Strings are converted to the variable's type (lists from repeated
    query parameters or one comma-separated value, input objects from JSON). The reply is the operation's
    ``data`` as JSON, or with `unwrap=True` the value of its single root field. Any GraphQL error fails the
    request: bad input is a 400, a backend failure 502/503/504 (or the backend's own status, such as 404),
    unless `partial=True` accepts data with errors. The `api` route's protections (limits, cost) apply.
    """

    def __init__(
        self,
        api: GraphQL,
        query: str,
        *,
        operation_name: str | None = None,
        variables: Mapping[str, str] | None = None,
        unwrap: bool = False,
        partial: bool = False,
        methods: tuple[str, ...] | None = None,
    ) -> None:
        if not isinstance(api, GraphQL):
            raise ConfigurationError(f"DeGraphQL needs a GraphQL target, got {api!r}.")
        # The route checks its fixed query as it checks a client's, on every request: a query past its limits
        # would fail every time, so it fails now.
        limits = api.limits
        if limits.max_query_length is not None and len(query) > limits.max_query_length:
            raise ConfigurationError(f"DeGraphQL query is longer than its GraphQL route's max_query_length "
                                     f"({limits.max_query_length}).")
        try:
            document = parse(query, max_tokens=limits.max_tokens)
        except GraphQLSyntaxError as exc:
            raise ConfigurationError(f"DeGraphQL query does not parse: {exc.message}") from None
        for error in limits.check(document):
            raise ConfigurationError(f"DeGraphQL query breaks its GraphQL route's limits: {error.message}")
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            raise ConfigurationError("DeGraphQL query must hold one operation, or name it with operation_name.")
        if unwrap and len(operation.selection_set.selections) != 1:
            raise ConfigurationError("DeGraphQL(unwrap=True) needs an operation with exactly one root field.")
        self.api, self.query, self.operation_name = api, query, operation_name
        self.unwrap, self.partial = unwrap, partial
        self.document = document
        self.operation: OperationDefinitionNode = operation
        self.variables = dict(variables or {})
        # Resolved against the schema: the types of the variables, the required ones, where each is read from
        # (the ones `variables=` names; the others depend on the route, see `bind`).
        self.types: dict[str, Any] = {}
        self.required: frozenset[str] = frozenset()
        self.sources: dict[str, tuple[str, str]] = {}
        if not api.remotes and not api.extend:
            self.types, self.required, self.sources = self._resolve()  # the schema is known already: check now
        self.methods = methods or (("GET",) if operation.operation.value == "query" else ("POST",))

    def _resolve(self) -> tuple[dict[str, Any], frozenset[str], dict[str, tuple[str, str]]]:
        self.api.compose()
        schema = self.api.schema._schema
        errors = validate(schema, self.document, specified_rules)
        if errors:
            raise ConfigurationError(f"DeGraphQL query is not valid for the schema: {errors[0].message}")
        types: dict[str, Any] = {}
        required = set()
        for definition in self.operation.variable_definitions or ():
            name = definition.variable.name.value
            types[name] = type_from_ast(schema, definition.type)
            if isinstance(types[name], GraphQLNonNull) and definition.default_value is None:
                required.add(name)
        sources: dict[str, tuple[str, str]] = {}
        for name, spec in self.variables.items():
            if name not in types:
                raise ConfigurationError(f"DeGraphQL variables= names ${name}, which the query does not declare.")
            kind, _, source = spec.partition(":")
            if kind not in ("path", "query", "header") or not source:
                raise ConfigurationError(f"DeGraphQL variable {name}: {spec!r} is not path:, query: or header:.")
            sources[name] = (kind, source)
        return types, frozenset(required), sources

    def upstreams(self) -> list[BaseUpstream]:
        return self.api.upstreams()

    def bind(self, route: Route, gateway: Gateway) -> DeGraphQL:
        """The endpoint as it serves `route`: variables not named in `variables=` are read from the route's
        parameter of the same name if it has one, else from the query."""
        types, required, sources = self._resolve()
        captured = set(route.template.names)
        for name in types:
            if name not in sources:
                sources[name] = ("path", name) if name in captured else ("query", name)
            kind, source = sources[name]
            if kind == "path" and source not in captured:
                raise ConfigurationError(f"DeGraphQL variable ${name} reads path parameter {source!r}, which route "
                                         f"{route.path!r} does not capture.")
        # the operation runs in the api as bound in this gateway (its upstreams, its limits)
        return self._replace(api=self.api.bind(route, gateway), types=types, required=required, sources=sources)

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        if exchange.method not in self.methods:
            from ..errors import MethodNotAllowed

            raise MethodNotAllowed(list(self.methods))
        values: dict[str, Any] = {}
        for name, (kind, source) in self.sources.items():
            value = self._read(exchange, kind, source, self.types[name])
            if value is None:
                if name in self.required:
                    raise BadRequest(f"The {kind} parameter {source!r} is required.")
                continue
            values[name] = value
        payload = {"query": self.query, "variables": values, "operationName": self.operation_name}
        body, status = await self.api.execute(exchange, payload, method="POST")
        errors = body.get("errors")
        if errors and not (self.partial and body.get("data") is not None):
            raise _error(errors, request_error=status >= 400)
        data = body.get("data")
        if self.unwrap and isinstance(data, dict):
            data = next(iter(data.values()), None)
        content = orjson.dumps(data)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(content))]})
        await send({"type": "http.response.body", "body": b"" if exchange.method == "HEAD" else content})

    def _read(self, exchange: Exchange, kind: str, source: str, type_: Any) -> Any:
        inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
        if kind == "path":
            raw: Any = exchange.params.get(source)
        elif kind == "header":
            raw = exchange.headers.get(source)
        elif isinstance(inner, GraphQLList):
            raw = exchange.query_params.getlist(source) or None
        else:
            raw = exchange.query_params.get(source)
        if raw is None:
            return None
        if isinstance(inner, GraphQLList):
            items = raw if isinstance(raw, list) else [raw]
            if len(items) == 1 and isinstance(items[0], str):
                items = items[0].split(",")  # ``?ids=1,2,3`` as well as ``?ids=1&ids=2&ids=3``
            return [_convert(source, item, inner.of_type) for item in items]
        return _convert(source, raw, inner)

    def __repr__(self) -> str:
        name = self.operation.name.value if self.operation.name else "anonymous"
        return f"DeGraphQL({name})"


def _convert(source: str, raw: Any, type_: Any) -> Any:
    inner = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    if not isinstance(raw, str):
        return raw
    try:
        if isinstance(inner, GraphQLScalarType) and inner.name == "Int":
            return int(raw)
        if isinstance(inner, GraphQLScalarType) and inner.name == "Float":
            return float(raw)
        if isinstance(inner, GraphQLScalarType) and inner.name == "Boolean":
            if raw.lower() in _TRUE | _FALSE:
                return raw.lower() in _TRUE
            raise ValueError(raw)
        if isinstance(inner, GraphQLInputObjectType | GraphQLList):
            return orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError):
        raise BadRequest(f"Parameter {source!r} is not a valid {inner}.") from None
    return raw  # String, ID and enums take the text as it is


def _error(errors: list[dict[str, Any]], *, request_error: bool) -> GatewayError:
    first = errors[0]
    extensions = first.get("extensions") or {}
    code = extensions.get("code")
    message = first.get("message", "GraphQL error")
    if request_error or code in ("BAD_USER_INPUT", "BAD_REQUEST"):
        return BadRequest(message)
    upstream = extensions.get("upstream")
    if code == "UPSTREAM_TIMEOUT":
        return UpstreamTimeout(stage="graphql", upstream=upstream, internal=message)
    if code == "UPSTREAM_UNAVAILABLE":
        return UpstreamUnavailable(stage="graphql", upstream=upstream, internal=message)
    status = extensions.get("status")
    if isinstance(status, int) and 400 <= status <= 599 and status != 500:
        return UpstreamErrorResponse(upstream_status=status, upstream=upstream)
    return BadGateway(stage="graphql", upstream=upstream, internal=message)
