"""GraphQL: a route target serving a strawberry schema over the GraphQL-over-HTTP protocol.

The gateway parses, limits, costs and validates each operation itself (so it can answer with the status codes
the GraphQL-over-HTTP specification gives for request errors), then hands the prepared document to strawberry's
`Schema.execute`, so the schema's own extensions and error processing still run.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import logging
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSyntaxError,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    OperationType,
    get_operation_ast,
    parse,
    specified_rules,
    validate,
)
from graphql.execution.values import get_variable_values
from strawberry.extensions import SchemaExtension
from strawberry.schema import Schema
from strawberry.types.graphql import OperationType as StrawberryOperationType

from .._accept import parse_accept
from ..errors import (
    BadRequest,
    ConfigurationError,
    InvalidBody,
    MethodNotAllowed,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from ..policy import ResponseHead
from ..targets.base import Target
from ..upstream import Upstream
from .backends import BackendCallError
from .context import GraphQLContext
from .persisted import RequestError
from .protection import GraphQLCost, GraphQLLimits, cost_limit_error
from .remote import Extend, RemoteSchema, compose

if TYPE_CHECKING:
    from strawberry.dataloader import DataLoader

    from ..exchange import Exchange
    from ..gateway import Gateway
    from ..policy import Receive, Send
    from ..routing import Route

__all__ = ["GraphQL"]

logger = logging.getLogger("asgigate.graphql")

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
_CONTENT_TYPES = {GRAPHQL_RESPONSE: b"application/graphql-response+json; charset=utf-8", JSON: b"application/json"}
_CACHE_SIZE = 512


class QueryResolver(Protocol):
    """Persisted query handling (`PersistedQueries`, `Safelist`): the query text to run, or a RequestError."""

    def resolve(self, query: str | None, extensions: Mapping[str, Any] | None,
                payload: Mapping[str, Any]) -> str | None: ...


class _Prepared(SchemaExtension):
    """Hands strawberry the document the gateway already parsed and validated, and notes that execution began."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, GraphQLContext) and context._document is not None:
            self.execution_context.graphql_document = context._document
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, GraphQLContext) and context._document is not None:
            # Only rules the schema's own extensions added remain to be checked.
            extra = [rule for rule in self.execution_context.validation_rules if rule not in specified_rules]
            document = self.execution_context.graphql_document
            errors = validate(self.execution_context.schema._schema, document, extra) if extra and document else []
            self.execution_context.pre_execution_errors = errors
        yield

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, GraphQLContext):
            context._executed = True
        yield


class _ErrorLog:
    """Backend failures are expected: one warning line each. Anything else goes to the schema's own
    `process_errors` (strawberry logs it with its traceback), after a line naming the request."""

    def __init__(self, process: Any) -> None:
        self.process = process

    def __call__(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        context = getattr(execution_context, "context", None)
        request_id = context.request_id if isinstance(context, GraphQLContext) else None
        others = []
        for error in errors:
            original = error.original_error
            if isinstance(original, BackendCallError):
                logger.warning("request %s: %s at %s (%s)", request_id, original.code, error.path, error.message)
            else:
                others.append(error)
        if others:
            logger.error("request %s: %d resolver error(s)", request_id, len(others))
            self.process(others, execution_context)


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse(query: str, max_tokens: int | None) -> DocumentNode:
    return parse(query, max_tokens=max_tokens)


class GraphQL(Target):
    """Serve a strawberry schema: ``Route("/graphql", GraphQL(schema, upstreams=[users, orders]))``.

    - `upstreams`: backends resolvers call by name through ``info.context`` (a `GraphQLContext`); the gateway's
      own `Upstream` attributes are reachable too.
    - `graphiql`: serve GraphiQL to browsers on GET (needs `introspection`). `introspection`: off by default.
    - `batching`: accept a JSON array of operations in one POST (at most `limits.max_batch`).
    - `limits` (`GraphQLLimits`), `cost` (`GraphQLCost`), `persisted` (`PersistedQueries` or `Safelist`).
    - `relay_headers`: request headers sent on to backends (default ``Authorization``).
    - `mask_errors`: replace the message of unexpected resolver exceptions (not GraphQLErrors) by
      ``"Internal server error"``; they are logged.
    - `context_class`: a `GraphQLContext` subclass to give resolvers more.
    - `remotes`: `RemoteSchema`s composed into the schema; `extend`: `Extend` fields added to its types.
    """

    def __init__(
        self,
        schema: Schema,
        *,
        upstreams: Sequence[Upstream] = (),
        graphiql: bool = False,
        introspection: bool = False,
        batching: bool = False,
        limits: GraphQLLimits | None = None,
        cost: GraphQLCost | None = None,
        persisted: QueryResolver | None = None,
        relay_headers: Sequence[str] = ("authorization",),
        allow_get: bool = True,
        mask_errors: bool = True,
        context_class: type[GraphQLContext] = GraphQLContext,
        remotes: Sequence[RemoteSchema] = (),
        extend: Sequence[Extend] = (),
    ) -> None:
        if not isinstance(schema, Schema):
            raise ConfigurationError(f"GraphQL needs a strawberry Schema, got {schema!r}.")
        if graphiql and not introspection:
            raise ConfigurationError("GraphQL(graphiql=True) needs introspection=True: GraphiQL reads the schema.")
        for upstream in upstreams:
            if not isinstance(upstream, Upstream):
                raise ConfigurationError(f"GraphQL upstreams= takes Upstream objects, got {upstream!r}.")
        if limits is not None and not isinstance(limits, GraphQLLimits):
            raise ConfigurationError(f"GraphQL limits= takes GraphQLLimits, got {limits!r}.")
        if cost is not None and not isinstance(cost, GraphQLCost):
            raise ConfigurationError(f"GraphQL cost= takes GraphQLCost, got {cost!r}.")
        if persisted is not None and not callable(getattr(persisted, "resolve", None)):
            raise ConfigurationError(f"GraphQL persisted= takes PersistedQueries or Safelist, got {persisted!r}.")
        if not issubclass(context_class, GraphQLContext):
            raise ConfigurationError("GraphQL context_class must subclass GraphQLContext.")
        for remote in remotes:
            if not isinstance(remote, RemoteSchema):
                raise ConfigurationError(f"GraphQL remotes= takes RemoteSchema objects, got {remote!r}.")
        for item in extend:
            if not isinstance(item, Extend):
                raise ConfigurationError(f"GraphQL extend= takes Extend objects, got {item!r}.")
        # A copy: the gateway's extension and a composed graphql-core schema stay off the caller's object.
        self.schema = copy.copy(schema)
        self.remotes = tuple(remotes)
        self.extend = tuple(extend)
        self._composed = not remotes and not extend
        self.graphiql = graphiql
        self.introspection = introspection
        self.batching = batching
        self.limits = limits if limits is not None else GraphQLLimits()
        self.cost = cost
        self.persisted = persisted
        self.relay_headers = tuple(relay_headers)
        self.allow_get = allow_get
        self.mask_errors = mask_errors
        self.context_class = context_class
        self._upstreams = [*upstreams, *(remote.upstream for remote in remotes)]
        self._by_name: dict[str, Upstream] | None = None
        self._gateway: Gateway | None = None
        self._rules = [*specified_rules, *self.limits.rules()]
        if not introspection:
            self._rules.append(NoSchemaIntrospectionCustomRule)
        self._validated: OrderedDict[str, list[GraphQLError]] = OrderedDict()
        self.schema.extensions = (*schema.extensions, _Prepared)
        setattr(self.schema, "process_errors", _ErrorLog(self.schema.process_errors))  # noqa: B010

    def compose(self) -> None:
        """Merge the remote schemas and extension fields in (reads remote schemas: done once, at build time)."""
        if not self._composed:
            self.schema._schema = compose(self.schema._schema, self.remotes, self.extend)
            self._composed = True

    def bind(self, route: Route, gateway: Gateway) -> None:
        self._gateway = gateway
        self.compose()

    def upstreams(self) -> list[Upstream]:
        return list(self._upstreams)

    @property
    def upstreams_by_name(self) -> dict[str, Upstream]:
        if self._by_name is None:
            found: dict[str, Upstream] = {}
            if self._gateway is not None:
                found.update((u.name, u) for u in self._gateway.upstreams)
            found.update((u.name, u) for u in self._upstreams)
            self._by_name = found
        return self._by_name

    def context(self, exchange: Exchange, loaders: dict[Any, DataLoader[Any, Any]] | None = None) -> GraphQLContext:
        return self.context_class(exchange, self.upstreams_by_name, relay_headers=self.relay_headers,
                                  loaders=loaders)

    # --- HTTP -------------------------------------------------------------------------------------------

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        method = exchange.method
        allowed = ["GET", "POST"] if self.allow_get else ["POST"]
        if method not in allowed:
            raise MethodNotAllowed(allowed)
        if method == "GET" and self.graphiql and "query" not in exchange.query_params and _wants_html(exchange):
            await self._send(exchange, send, 200, b"text/html; charset=utf-8", _graphiql_html())
            return
        media = _negotiate(exchange.headers.get("accept"))
        if method == "GET":
            payload: Any = self._get_payload(exchange)
        else:
            payload = await self._post_payload(exchange, receive)
        loaders: dict[Any, DataLoader[Any, Any]] = {}
        if isinstance(payload, list):
            if not self.batching:
                raise BadRequest("This endpoint does not accept batched operations.")
            if not payload:
                raise BadRequest("An empty batch has no operation to run.")
            if self.limits.max_batch is not None and len(payload) > self.limits.max_batch:
                raise BadRequest(f"A batch may hold at most {self.limits.max_batch} operations.")
            results = await asyncio.gather(*(self.execute(exchange, item, method=method, loaders=loaders)
                                             for item in payload))
            await self._send(exchange, send, 200, _CONTENT_TYPES[media], orjson.dumps([body for body, _ in results]))
            return
        body, status = await self.execute(exchange, payload, method=method, loaders=loaders)
        await self._send(exchange, send, status if media == GRAPHQL_RESPONSE else 200, _CONTENT_TYPES[media],
                         orjson.dumps(body))

    async def _send(self, exchange: Exchange, send: Send, status: int, content_type: bytes, body: bytes) -> None:
        start: dict[str, Any] = {"type": "http.response.start", "status": status,
                                 "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]}
        if self.cost is not None and self.cost.rate_limit is not None and exchange._ratelimit is not None:
            # The cost-charged limit's RateLimit headers, unless a RateLimit on the chain already sends them.
            await self.cost.rate_limit.on_response(exchange, ResponseHead(start))
        await send(start)
        await send({"type": "http.response.body", "body": body})

    def _get_payload(self, exchange: Exchange) -> dict[str, Any]:
        params = exchange.query_params
        payload: dict[str, Any] = {"query": params.get("query"), "operationName": params.get("operationName")}
        for name in ("variables", "extensions"):
            raw = params.get(name)
            if raw:
                try:
                    payload[name] = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    raise BadRequest(f"The {name} parameter is not JSON.") from None
        return payload

    async def _post_payload(self, exchange: Exchange, receive: Receive) -> Any:
        content_type = exchange.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if content_type not in (JSON, GRAPHQL_RESPONSE) and not content_type.endswith("+json"):
            raise UnsupportedMediaType("Send GraphQL requests as application/json.")
        limit = self.limits.max_body_size
        if limit is None and self._gateway is not None:
            limit = self._gateway.max_body_size
        declared = exchange.headers.get("content-length")
        if limit is not None and declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest("The client went away before sending the whole body.")
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit is not None and size > limit:
                raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        exchange.bytes_received = size
        try:
            return orjson.loads(b"".join(chunks))
        except orjson.JSONDecodeError:
            raise InvalidBody("The request body is not JSON.") from None

    # --- one operation ----------------------------------------------------------------------------------

    async def execute(
        self,
        exchange: Exchange,
        payload: Any,
        *,
        method: str = "POST",
        loaders: dict[Any, DataLoader[Any, Any]] | None = None,
    ) -> tuple[dict[str, Any], int]:
        """Run one operation of a request; the GraphQL response and the status it gets as
        application/graphql-response+json (400 for request errors, 200 once execution started)."""
        context = self.context(exchange, loaders)
        try:
            return await self._execute(exchange, context, payload, method)
        except RequestError as error:
            return {"errors": [{"message": error.message, "extensions": {"code": error.code}}]}, error.status

    def _document(self, query: str) -> tuple[DocumentNode, list[GraphQLError]]:
        try:
            document = _parse(query, self.limits.max_tokens)
        except GraphQLSyntaxError as error:
            raise RequestError(error.message, "GRAPHQL_PARSE_FAILED") from None
        errors = self._validated.get(query)
        if errors is None:
            errors = validate(self.schema._schema, document, self._rules)
            self._validated[query] = errors
            if len(self._validated) > _CACHE_SIZE:
                self._validated.popitem(last=False)
        return document, errors

    async def _execute(
        self, exchange: Exchange, context: GraphQLContext, payload: Any, method: str
    ) -> tuple[dict[str, Any], int]:
        if not isinstance(payload, Mapping):
            raise RequestError("A GraphQL request is a JSON object.", "BAD_REQUEST")
        query = payload.get("query")
        extensions = payload.get("extensions")
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        if query is not None and not isinstance(query, str):
            raise RequestError("query must be a string.", "BAD_REQUEST")
        if extensions is not None and not isinstance(extensions, Mapping):
            raise RequestError("extensions must be an object.", "BAD_REQUEST")
        if variables is not None and not isinstance(variables, Mapping):
            raise RequestError("variables must be an object.", "BAD_REQUEST")
        if operation_name is not None and not isinstance(operation_name, str):
            raise RequestError("operationName must be a string.", "BAD_REQUEST")
        if self.persisted is not None:
            query = self.persisted.resolve(query, extensions, payload)
        if not query:
            raise RequestError("The request has no query.", "BAD_REQUEST")
        document, errors = self._document(query)
        if errors:
            return {"errors": [_formatted(error, "GRAPHQL_VALIDATION_FAILED") for error in errors]}, 400
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            detail = f"Unknown operation named {operation_name!r}." if operation_name else \
                "The document has several operations: name the one to run with operationName."
            raise RequestError(detail, "OPERATION_RESOLUTION_FAILURE")
        if operation.operation == OperationType.SUBSCRIPTION:
            raise RequestError("Subscriptions are not served over plain HTTP.", "OPERATION_NOT_SUPPORTED")
        if method == "GET" and operation.operation != OperationType.QUERY:
            raise MethodNotAllowed(["POST"], f"A {operation.operation.value} must be sent with POST.")
        coerced = get_variable_values(self.schema._schema, operation.variable_definitions or (),
                                      dict(variables or {}), max_errors=10)
        if isinstance(coerced, list):
            return {"errors": [_formatted(error, "BAD_USER_INPUT") for error in coerced]}, 400
        response_extensions: dict[str, Any] = {}
        if self.cost is not None:
            values: Mapping[str, Any] = getattr(coerced, "coerced", coerced)  # type: ignore[arg-type]
            cost = self._measure(document, operation, values)
            context.cost = cost
            state = exchange.state
            state["graphql.cost"] = state.get("graphql.cost", 0) + cost
            if self.cost.expose:
                response_extensions["cost"] = {"estimated": cost, "maximum": self.cost.maximum,
                                               "mode": self.cost.mode}
            if self.cost.maximum is not None and cost > self.cost.maximum and self.cost.mode == "enforce":
                body: dict[str, Any] = {"errors": [cost_limit_error(cost, self.cost.maximum).formatted]}
                if response_extensions:
                    body["extensions"] = response_extensions
                return body, 400
            await self.cost.charge(exchange, cost)
        context._document = document
        allowed = {StrawberryOperationType.QUERY}
        if method != "GET":
            allowed.add(StrawberryOperationType.MUTATION)
        result = await self.schema.execute(query, variable_values=dict(variables or {}), context_value=context,
                                           operation_name=operation_name, allowed_operation_types=allowed)
        body = {}
        if context._executed:
            body["data"] = result.data
        if result.errors:
            body["errors"] = [self._format(error, exchange) for error in result.errors]
        if result.extensions:
            response_extensions = {**result.extensions, **response_extensions}
        if response_extensions:
            body["extensions"] = response_extensions
        return body, 200 if context._executed else 400

    def _measure(self, document: DocumentNode, operation: OperationDefinitionNode, variables: Mapping[str, Any]) -> int:
        assert self.cost is not None
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        return self.cost.measure(self.schema._schema, operation, fragments, variables)

    def _format(self, error: GraphQLError, exchange: Exchange) -> dict[str, Any]:
        original = error.original_error
        if self.mask_errors and original is not None and not isinstance(original, GraphQLError):
            masked: dict[str, Any] = {"message": "Internal server error",
                                      "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
            if error.locations:
                masked["locations"] = [location._asdict() for location in error.locations]
            if error.path is not None:
                masked["path"] = error.path
            return masked
        if isinstance(original, BackendCallError):
            formatted = error.formatted
            formatted["extensions"] = dict(original.extensions or {})
            return dict(formatted)
        return dict(error.formatted)

    def __repr__(self) -> str:
        return f"GraphQL({self.schema.query!r})" if hasattr(self.schema, "query") else "GraphQL()"


def _formatted(error: GraphQLError, code: str) -> dict[str, Any]:
    formatted: dict[str, Any] = dict(error.formatted)
    extensions = dict(formatted.get("extensions") or {})
    extensions.setdefault("code", code)
    formatted["extensions"] = extensions
    return formatted


def _negotiate(accept: str | None) -> str:
    if not accept:
        return JSON
    best: tuple[float, int, str] | None = None
    for kind, subtype, q in parse_accept(accept):
        if q <= 0:
            continue
        media = f"{kind}/{subtype}"
        if media == GRAPHQL_RESPONSE:
            candidate = (q, 2, GRAPHQL_RESPONSE)
        elif media in (JSON, "application/*", "*/*"):
            candidate = (q, 1 if media == JSON else 0, JSON)
        else:
            continue
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    if best is None:
        raise NotAcceptable("This endpoint answers application/graphql-response+json or application/json.")
    return best[2]


def _wants_html(exchange: Exchange) -> bool:
    return "text/html" in exchange.headers.get("accept", "")


@functools.cache
def _graphiql_html() -> bytes:
    from strawberry.http.ides import get_graphql_ide_html

    return get_graphql_ide_html("graphiql").encode()
