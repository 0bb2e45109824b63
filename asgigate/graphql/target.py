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
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import orjson
from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSyntaxError,
    NoSchemaIntrospectionCustomRule,
    OperationDefinitionNode,
    OperationType,
    OverlappingFieldsCanBeMergedRule,
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
from .._frozen import Frozen
from ..errors import (
    BadRequest,
    ConfigurationError,
    InvalidBody,
    MethodNotAllowed,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from ..pipeline import ResponseHead
from ..targets.base import Target
from ..upstreams import BaseUpstream
from ._cache import BoundedCache
from ._merging import bounded_rule, fields_may_conflict
from .backends import BackendCallError
from .context import GraphQLContext
from .persisted import RequestError
from .protection import GraphQLCost, GraphQLLimits, cost_limit_error
from .remote import Extend, RemoteSchema, compose

if TYPE_CHECKING:
    from strawberry.dataloader import DataLoader

    from ..exchange import Exchange
    from ..gateway import Gateway
    from ..routing import Route
    from ..types import Receive, Send

__all__ = ["GraphQL"]

logger = logging.getLogger("asgigate.graphql")

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
_CONTENT_TYPES = {GRAPHQL_RESPONSE: b"application/graphql-response+json; charset=utf-8", JSON: b"application/json"}
# What a parsed document costs in memory, per token (comments included): 150 to 560 bytes measured with
# graphql-core 3.3 (a document keeps every token, linked, besides its nodes); without a token count, per
# character of the query, which is at most 350 bytes.
_BYTES_PER_TOKEN = 600
_BYTES_PER_CHARACTER = 350
_NESTED_TOO_DEEPLY = "The document is nested too deeply."
# Each validation error is located by scanning the query text, and a client chooses how many there are: graphql-core
# stops at 100; a client fixing its query needs the first few.
_MAX_ERRORS = 10
# The gateway's check that fields can be merged gives up after this much work per token of the document (Relay-style
# documents take 5 to 9 units per token), so it stays linear; a document it gives up on goes to graphql-core's rule.
_MERGE_CHECK_UNITS_PER_TOKEN = 16


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
    """Errors are logged by who caused them, which is what their type says.

    - A `GraphQLError` (raised on purpose by a resolver, by strawberry, or by graphql-core for an argument it
      could not use) answers the client's request: one INFO line, no traceback, and the client sees its message.
    - A `BackendCallError` is a backend's failure: one WARNING line.
    - Any other exception is a bug in the resolver: ERROR, and the schema's own `process_errors` (strawberry logs
      it with its traceback); the client sees "Internal server error" unless `mask_errors=False`.
    """

    def __init__(self, process: Any) -> None:
        self.process = process

    def __call__(self, errors: list[GraphQLError], execution_context: Any = None) -> None:
        context = getattr(execution_context, "context", None)
        request_id = context.request_id if isinstance(context, GraphQLContext) else None
        unexpected = []
        for error in errors:
            original = error.original_error
            if isinstance(original, BackendCallError):
                logger.warning("request %s: %s at %s (%s)", request_id, original.code, error.path, error.message)
            elif original is None or isinstance(original, GraphQLError):
                code = (error.extensions or {}).get("code")
                logger.info("request %s: GraphQL error%s at %s: %r", request_id, f" {code}" if code else "",
                            error.path, error.message)
            else:
                unexpected.append(error)
        if unexpected:
            logger.error("request %s: %d resolver error(s)", request_id, len(unexpected))
            self.process(unexpected, execution_context)


class _Composition:
    """Whether the remote schemas and extensions were merged into the schema yet (once, at the first build)."""

    __slots__ = ("done",)

    def __init__(self, *, done: bool) -> None:
        self.done = done


class _ByName:
    """The upstreams resolvers reach by name, found at the first request."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: dict[str, BaseUpstream] | None = None


class _Request(NamedTuple):
    """A well-formed GraphQL-over-HTTP request, its query resolved (persisted queries)."""

    query: str
    variables: Mapping[str, Any] | None
    operation_name: str | None
    extensions: Mapping[str, Any] | None


# The parameters of a GraphQL-over-HTTP request and the JSON type each must have when present (null is absence).
_PARAMETERS = (("query", str, "a string"), ("operationName", str, "a string"),
               ("variables", Mapping, "an object"), ("extensions", Mapping, "an object"))


class GraphQL(Frozen, Target):
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
    - `cache_bytes`: memory for parsed and validated documents, by query text (an estimate that errs high;
      a document is kept the second time it is seen; 0 turns the cache off).
    """

    def __init__(
        self,
        schema: Schema,
        *,
        upstreams: Sequence[BaseUpstream] = (),
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
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        if not isinstance(schema, Schema):
            raise ConfigurationError(f"GraphQL needs a strawberry Schema, got {schema!r}.")
        if graphiql and not introspection:
            raise ConfigurationError("GraphQL(graphiql=True) needs introspection=True: GraphiQL reads the schema.")
        for upstream in upstreams:
            if not isinstance(upstream, BaseUpstream):
                raise ConfigurationError(f"GraphQL upstreams= takes Upstream or GrpcBackend objects, got {upstream!r}.")
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
        if isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int) or cache_bytes < 0:
            raise ConfigurationError(f"GraphQL cache_bytes={cache_bytes!r} must be a number of bytes (0: no cache).")
        # A copy: the gateway's extension and a composed graphql-core schema stay off the caller's object.
        self.schema = copy.copy(schema)
        self.remotes = tuple(remotes)
        self.extend = tuple(extend)
        self._composition = _Composition(done=not remotes and not extend)  # shared by the bound copies
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
        self._by_name = _ByName()
        self._gateway: Gateway | None = None  # set on the copy `bind` makes for a route
        # The spec rules but OverlappingFieldsCanBeMerged, which is quadratic: it runs (with its own budget) only
        # on documents the gateway's linear check cannot clear.
        self._rules = [rule for rule in specified_rules if rule is not OverlappingFieldsCanBeMergedRule]
        if not introspection:
            self._rules.append(NoSchemaIntrospectionCustomRule)
        merge_work = self.limits.max_merge_work
        self._merge_rule = OverlappingFieldsCanBeMergedRule if merge_work is None else bounded_rule(merge_work)
        # Query text -> its document, or the errors it fails with. Clients choose the keys and each entry's size,
        # so the bound is in bytes, and one-off queries are not kept at all.
        self.cache_bytes = cache_bytes
        self._documents: BoundedCache[str, DocumentNode | list[dict[str, Any]]] = BoundedCache(
            cache_bytes, admit_on_second_sight=True)
        self.schema.extensions = (*schema.extensions, _Prepared)
        setattr(self.schema, "process_errors", _ErrorLog(self.schema.process_errors))  # noqa: B010

    def compose(self) -> None:
        """Merge the remote schemas and extension fields in (reads remote schemas: done once, at build time)."""
        if not self._composition.done:
            self.schema._schema = compose(self.schema._schema, self.remotes, self.extend)
            self._composition.done = True

    def bind(self, route: Route, gateway: Gateway) -> GraphQL:
        """The target as it serves `route` in `gateway`: it reaches that gateway's upstreams and body limit."""
        self.compose()
        return self._replace(_gateway=gateway, _by_name=_ByName())

    def upstreams(self) -> list[BaseUpstream]:
        return list(self._upstreams)

    @property
    def upstreams_by_name(self) -> dict[str, BaseUpstream]:
        found = self._by_name.value
        if found is None:
            # Looked up at the first request: the gateway knows all its upstreams only once its build is over.
            found = {}
            if self._gateway is not None:
                found.update((u.name, u) for u in self._gateway.upstreams)
            found.update((u.name, u) for u in self._upstreams)
            self._by_name.value = found
        return found

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
        # A request that is not a well-formed GraphQL-over-HTTP request (wrong parameter types, no query) is a 400
        # problem reply under either media type, before anything runs: GET parameters are `bad_request`, a POST
        # body that is not a GraphQL request `invalid_body` (like one that is not JSON).
        invalid: type[BadRequest]
        if method == "GET":
            payload: Any = self._get_payload(exchange)
            invalid = BadRequest
        else:
            payload = await self._post_payload(exchange, receive)
            invalid = InvalidBody
        loaders: dict[Any, DataLoader[Any, Any]] = {}
        if isinstance(payload, list):
            if not self.batching:
                raise BadRequest("This endpoint does not accept batched operations.")
            if not payload:
                raise BadRequest("An empty batch has no operation to run.")
            if self.limits.max_batch is not None and len(payload) > self.limits.max_batch:
                raise BadRequest(f"A batch may hold at most {self.limits.max_batch} operations.")
            # Every operation is checked before any runs: a malformed one refuses the batch as a whole.
            requests = [self._request(item, invalid, f"Operation {index} of the batch")
                        for index, item in enumerate(payload)]
            results = await asyncio.gather(*(self._run(exchange, request, method, loaders) for request in requests))
            await self._send(exchange, send, 200, _CONTENT_TYPES[media], orjson.dumps([body for body, _ in results]))
            return
        body, status = await self._run(exchange, self._request(payload, invalid), method, loaders)
        await self._send(exchange, send, status if media == GRAPHQL_RESPONSE else 200, _CONTENT_TYPES[media],
                         orjson.dumps(body))

    async def _send(self, exchange: Exchange, send: Send, status: int, content_type: bytes, body: bytes) -> None:
        start: dict[str, Any] = {"type": "http.response.start", "status": status,
                                 "headers": [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]}
        if self.cost is not None and self.cost.rate_limit is not None:
            # The cost-charged limit's RateLimit headers (a RateLimit on the chain then finds them sent).
            await self.cost.rate_limit.add_headers(exchange, ResponseHead(start))
        await send(start)
        await send({"type": "http.response.body", "body": body})

    def _get_payload(self, exchange: Exchange) -> dict[str, Any]:
        params = exchange.query_params
        # An empty operationName is no operationName (GraphQL-over-HTTP, GET).
        payload: dict[str, Any] = {"query": params.get("query"), "operationName": params.get("operationName") or None}
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
        application/graphql-response+json (400 for request errors, 200 once execution started). A payload that
        is not a well-formed GraphQL request raises `BadRequest`."""
        return await self._run(exchange, self._request(payload, BadRequest), method, loaders)

    def _request(self, payload: Any, invalid: type[BadRequest], what: str | None = None) -> _Request | RequestError:
        """The request's parameters, checked as GraphQL-over-HTTP defines them, and its query resolved; raises
        `invalid` for a request that is not well-formed, returns the persisted-query protocol's own errors.
        `what` names the operation of a batch in the messages."""
        if not isinstance(payload, Mapping):
            raise invalid(f"{what or 'The request'} is not a JSON object.")
        for name, kind, described in _PARAMETERS:
            value = payload.get(name)
            if value is not None and not isinstance(value, kind):
                raise invalid(f"{what}: {name} must be {described}." if what else f"{name} must be {described}.")
        query: str | None = payload.get("query")
        extensions: Mapping[str, Any] | None = payload.get("extensions")
        longest = self.limits.max_query_length
        if longest is not None and query is not None and len(query) > longest:
            # Before anything reads the text (a safelist parses it to compare): one string token of a long text
            # costs the lexer as much as thousands of short tokens.
            return RequestError(f"The query is {len(query)} characters long; at most {longest} are allowed.",
                                "QUERY_LENGTH_LIMIT_EXCEEDED")
        if self.persisted is not None:
            try:
                query = self.persisted.resolve(query, extensions, payload)
            except RequestError as error:
                return error
        if not isinstance(query, str):
            raise invalid(f"{what or 'The request'} has no query.")
        return _Request(query, payload.get("variables"), payload.get("operationName") or None, extensions)

    async def _run(self, exchange: Exchange, request: _Request | RequestError, method: str,
                   loaders: dict[Any, DataLoader[Any, Any]] | None) -> tuple[dict[str, Any], int]:
        try:
            if isinstance(request, RequestError):
                raise request
            return await self._execute(exchange, self.context(exchange, loaders), request, method)
        except RequestError as error:
            return {"errors": [{"message": error.message, "extensions": {"code": error.code}}]}, error.status
        except RecursionError:
            # A last guard: documents and variables are bounded in depth before anything recursive runs.
            return {"errors": [{"message": _NESTED_TOO_DEEPLY,
                                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}]}, 400

    def _document(self, query: str) -> DocumentNode | list[dict[str, Any]]:
        """The query's document, or the formatted errors it fails parsing, validation or the limits with."""
        found = self._documents.get(query)
        if found is not None:
            return found
        checked, size = self._check(query)
        self._documents.put(query, checked, size)
        return checked

    def _check(self, query: str) -> tuple[DocumentNode | list[dict[str, Any]], int]:
        # The query text is held by the cache key and the document's source, and string values copy from it.
        size = 2 * sys.getsizeof(query)
        errors: list[GraphQLError]
        try:
            try:
                document = parse(query, max_tokens=self.limits.max_tokens)
            except GraphQLSyntaxError as error:
                return [{"message": error.message, "extensions": {"code": "GRAPHQL_PARSE_FAILED"}}], size + 256
            # The gateway's limits first: they are cheap, and hold for any parsed document.
            errors = self.limits.check(document) or self._validate(document, len(query))
        except RecursionError:
            errors = [GraphQLError(_NESTED_TOO_DEEPLY)]
        if errors:
            formatted = [_formatted(error, "GRAPHQL_VALIDATION_FAILED") for error in errors]
            # Formatted errors keep no nodes, so the document is not held; dicts take about 8x their JSON.
            return formatted, size + 8 * len(orjson.dumps(formatted))
        tokens = getattr(document, "token_count", None)  # graphql-core >= 3.3
        return document, size + (_BYTES_PER_TOKEN * tokens if isinstance(tokens, int)
                                 else _BYTES_PER_CHARACTER * len(query))

    def _validate(self, document: DocumentNode, length: int) -> list[GraphQLError]:
        """The specification's validation rules; OverlappingFieldsCanBeMerged only on a document that passes the
        others and that the linear check cannot clear of conflicting fields."""
        schema = self.schema._schema
        errors = validate(schema, document, self._rules, max_errors=_MAX_ERRORS)
        if errors:
            return errors
        tokens = getattr(document, "token_count", None)  # graphql-core >= 3.3; else the text's length, larger
        budget = _MERGE_CHECK_UNITS_PER_TOKEN * max(64, tokens if isinstance(tokens, int) else length)
        if fields_may_conflict(schema, document, budget):
            return validate(schema, document, [self._merge_rule], max_errors=_MAX_ERRORS)
        return []

    async def _execute(
        self, exchange: Exchange, context: GraphQLContext, request: _Request, method: str
    ) -> tuple[dict[str, Any], int]:
        query, variables, operation_name = request.query, request.variables, request.operation_name
        checked = self._document(query)
        if not isinstance(checked, DocumentNode):
            return {"errors": checked}, 400
        document = checked
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            detail = f"Unknown operation named {operation_name!r}." if operation_name else \
                "The document has several operations: name the one to run with operationName."
            raise RequestError(detail, "OPERATION_RESOLUTION_FAILURE")
        if operation.operation == OperationType.SUBSCRIPTION:
            raise RequestError("Subscriptions are not served over plain HTTP.", "OPERATION_NOT_SUPPORTED")
        if method == "GET" and operation.operation != OperationType.QUERY:
            raise MethodNotAllowed(["POST"], f"A {operation.operation.value} must be sent with POST.")
        too_many = self.limits.check_variables(self.schema._schema, operation.variable_definitions or (),
                                               variables or {})
        if too_many is not None:
            return {"errors": [too_many.formatted]}, 400
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
