"""GrpcService: every HTTP binding of one or more gRPC services as ordinary gateway routes.

    GrpcService.from_descriptor_set("api.binpb", upstream="grpc://127.0.0.1:50051")

is a Group holding one Route per binding (a method's HttpRule and each of its additional_bindings), each ending
in a `GrpcMethod` target. Being ordinary routes, they get the gateway's, the group's and their own policies,
404/405 from the route table and `describe()`; each route claims the table's 405 for its path and the 404 under
the paths the service owns (`not_found_under`), so that those answer in the service's error format. The routes
are ordered by specificity (a literal segment beats a variable, which beats `**`; a template with a verb beats
one without), so declaration order in the .proto does not matter. A Route can only hold a plain path, so each
route is created with a stand-in path, and `GrpcMethod.bind` puts the real HttpRule template (behind whatever
prefix the route ended up with) in its place on the route the gateway made when it flattened the groups: the
service's own routes keep their stand-ins, so one service can be mounted in several gateways.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import unquote_to_bytes

import grpc
import grpc.aio
from google.protobuf.message import Message

from .._frozen import Frozen
from ..errors import (
    BadRequest,
    ConfigurationError,
    GatewayError,
    GrpcStatusError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ..routing import Group, Route
from ..targets.base import Target
from ..upstreams.base import BaseUpstream, require_kind
from ..upstreams.grpc import GrpcUpstream
from .descriptors import Descriptors, Method
from .httprule import LITERAL, Binding, RuleTemplate, Template, bindings_from_rule, coarse_path, parse_template
from .mapping import JsonOptions, RequestMapper, ResponseMapper
from .status import STATUS_DETAILS_KEY, decode_details, http_status, status_body, status_reply
from .streaming import FORMATS, Framing, StreamFormat, body_chunks, json_lines, read_body

if TYPE_CHECKING:
    import os

    from ..exchange import Exchange
    from ..gateway import Gateway
    from ..pipeline import PolicyLike
    from ..replies import ErrorsLike
    from ..types import Receive, Send

__all__ = ["GrpcService", "MethodSettings"]

ErrorFormat = Literal["grpc", "gateway"]

_TIMEOUT = re.compile(r"([0-9]{1,8})([HMSmun])")
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_METADATA_KEY = re.compile(r"[0-9a-z_.\-]+")
_METADATA_PREFIX = "grpc-metadata-"
_CONNECT_FAILURE = re.compile(
    r"failed to connect|connection refused|connect failed|socket closed|connection reset|dns resolution failed"
    r"|no route to host|connection timed out|handshake",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class MethodSettings:
    """Settings for some methods of a GrpcService (`methods={"GetShelf": MethodSettings(timeout=1.0)}`).

    Unset fields keep the service's. `policies` and `skip` are added to the method's routes.
    """

    json: JsonOptions | None = None
    timeout: float | None = None
    stream_format: StreamFormat | None = None
    error_format: ErrorFormat | None = None
    policies: Sequence[PolicyLike] = ()
    skip: Iterable[type] = ()
    errors: ErrorsLike | None = None


@dataclass(frozen=True)
class _Settings:
    json: JsonOptions
    timeout: float | None
    stream_format: StreamFormat
    error_format: ErrorFormat
    forward_headers: frozenset[str]
    max_body_size: int | None
    errors: ErrorsLike | None
    query_plus_as_space: bool = False
    policies: tuple[PolicyLike, ...] = ()
    skip: frozenset[type] = field(default_factory=frozenset)


class Bindings:
    """Where a GrpcService's methods ended up, per gateway: the routes its OpenAPI document lists.

    The one mutable part of a service, written at build time: a service mounted in two gateways (under different
    prefixes, say) describes each gateway's routes in that gateway. Weak keys: a gateway that is gone is forgotten.
    """

    def __init__(self) -> None:
        self._by_gateway: weakref.WeakKeyDictionary[Gateway, dict[GrpcMethod, str]] = weakref.WeakKeyDictionary()
        self._latest: weakref.ref[Gateway] | None = None

    def add(self, gateway: Gateway, path: str, method: GrpcMethod) -> None:
        self._by_gateway.setdefault(gateway, {})[method] = path
        self._latest = weakref.ref(gateway)

    def routes(self, gateway: Gateway | None = None) -> list[tuple[str, GrpcMethod]]:
        """(full route path, method) as built in `gateway` (by default the gateway built last)."""
        if gateway is None:
            gateway = self._latest() if self._latest is not None else None
            if gateway is None:
                return []
        return [(path, method) for method, path in self._by_gateway.get(gateway, {}).items()]


class GrpcMethod(Frozen, Target):
    """Transcodes one HTTP binding of one gRPC method."""

    def __init__(self, method: Method, binding: Binding, upstream: BaseUpstream, descriptors: Descriptors,
                 settings: _Settings, registry: Bindings, not_found_under: tuple[str, ...] = ()) -> None:
        self.method = method
        self.binding = binding
        self.upstream = upstream
        self.descriptors = descriptors
        self.settings = settings
        self.request_mapper = RequestMapper(method.input, binding, settings.json)
        self.response_mapper = ResponseMapper(method.output, binding, settings.json)
        self.coarse = coarse_path(binding.template)
        self.framing = Framing(settings.stream_format)
        self.route_path: str | None = None  # the full path template, on the method bound to a route
        self.not_found_under = not_found_under  # relative to the mount point
        self._registry = registry
        self._callables: dict[Any, Any] = {}  # by channel: a cache the bound copies share
        if method.client_streaming and binding.body not in ("*",) and not self.request_mapper.raw_body:
            raise ConfigurationError(f"{method.full_name}: a client-streaming method needs body: \"*\".")

    # --- build ----------------------------------------------------------------------------------------------

    def bind(self, route: Route, gateway: Gateway) -> GrpcMethod:
        """The method as it serves `route`, in the gateway being built (this one stays as it is).

        `route` is the gateway's own, made when it flattened the groups (never the Route the GrpcService
        holds): its stand-in template is replaced by the HttpRule's, behind the prefix it ended up with.
        """
        require_kind(self.upstream, GrpcUpstream, f"{self!r}", route, hint=" An HTTP Upstream goes with Proxy.")
        if not route.path.endswith(self.coarse):
            raise ConfigurationError(f"{self!r}: its route path {route.path!r} was changed; mount it as given.")
        prefix = route.path[: len(route.path) - len(self.coarse)]
        if "{" in prefix:
            raise ConfigurationError(f"{self!r}: a GrpcService cannot be mounted under a prefix with parameters.")
        route.template = RuleTemplate(prefix, self.binding.template)
        # the route table's misses in this service's paths answer in its error format, not the gateway's
        route.claims_405 = True
        route.claims_404 = tuple(prefix + under if under != "/" else prefix or "/" for under in self.not_found_under)
        full = prefix + self.binding.template.source
        first = full[1:].split("/", 1)[0]
        if "{" in first or "*" not in first:
            # The route table indexes routes by their path's first segment, taking one without "{" as literal:
            # a template starting with a bare wildcard keeps its stand-in path (which has a "{").
            route.path = full
        settings = self.settings
        if settings.max_body_size is None and gateway.max_body_size is not None:
            settings = replace(settings, max_body_size=gateway.max_body_size)
        self._registry.add(gateway, full, self)
        return self._replace(settings=settings, route_path=full)

    def upstreams(self) -> list[BaseUpstream]:
        return [self.upstream]

    # --- requests -------------------------------------------------------------------------------------------

    def _callable(self, kind: str) -> Any:
        channel = cast("GrpcUpstream", self.upstream).channel()  # bind() checked the kind
        found = self._callables.get(channel)
        if found is None:
            if len(self._callables) > 64:
                self._callables.clear()
            factory = getattr(channel, kind)
            found = factory(
                self.method.path,
                request_serializer=self.method.input.SerializeToString,
                response_deserializer=self.method.output.FromString,
            )
            self._callables[channel] = found
        return found

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        exchange.upstream = self.upstream.name
        metadata, timeout = self._metadata(exchange)
        path = self.binding.template.values(dict(exchange.raw_params))
        query = _query(exchange.scope.get("query_string", b""), self.settings.query_plus_as_space)
        content_type = exchange.headers.get("content-type") if self.binding.body else None
        method = self.method
        started = time.perf_counter()
        deadline_at = started + timeout - 0.005 if timeout is not None else None
        try:
            if method.client_streaming:
                await self._client_stream(exchange, receive, send, path, query, content_type, metadata, timeout,
                                          deadline_at)
                return
            body = await read_body(receive, self.settings.max_body_size) if self.binding.body else b""
            request = self.request_mapper.message(path, query, body, content_type)
            if method.server_streaming:
                call = self._callable("unary_stream")(request, timeout=timeout, metadata=metadata)
                watcher = asyncio.ensure_future(_cancel_on_disconnect(receive, call))
                try:
                    await self._stream_out(exchange, send, call, deadline_at)
                finally:
                    watcher.cancel()
                return
            call = self._callable("unary_unary")(request, timeout=timeout, metadata=metadata)
            try:
                response = await call
                headers = _metadata_headers(await call.initial_metadata(), await call.trailing_metadata())
            except grpc.aio.AioRpcError as exc:
                raise self._error(exc, deadline_at) from None
            await self._reply(send, response, headers)
        except _ClientGone:
            exchange.reason = "client_disconnected"
        finally:
            exchange.upstream_ms = (time.perf_counter() - started) * 1000.0

    async def _reply(self, send: Send, response: Message, headers: list[tuple[bytes, bytes]]) -> None:
        mapper = self.response_mapper
        if mapper.http_body:
            content_type, payload = mapper.raw(response)
        else:
            content_type, payload = "application/json", mapper.to_json(response)
        headers += [(b"content-type", content_type.encode("latin-1")), (b"content-length", b"%d" % len(payload))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _client_stream(
        self, exchange: Exchange, receive: Receive, send: Send, path: dict[tuple[str, ...], str],
        query: list[tuple[str, str]], content_type: str | None, metadata: list[tuple[str, Any]],
        deadline: float | None, deadline_at: float | None,
    ) -> None:
        kind = "stream_stream" if self.method.server_streaming else "stream_unary"
        call = self._callable(kind)(timeout=deadline, metadata=metadata)
        mapper = self.request_mapper
        limit = self.settings.max_body_size

        async def write_all() -> None:
            try:
                frames = body_chunks(receive, limit) if mapper.raw_body else json_lines(receive, limit)
                async for frame in frames:
                    await call.write(mapper.message(path, query, frame, content_type))
                await call.done_writing()
            except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
                return  # the call is over; its status tells why
            except BaseException:
                call.cancel()
                raise

        if not self.method.server_streaming:
            try:
                await write_all()
                response = await call
                headers = _metadata_headers(await call.initial_metadata(), await call.trailing_metadata())
            except grpc.aio.AioRpcError as exc:
                raise self._error(exc, deadline_at) from None
            await self._reply(send, response, headers)
            return
        writer = asyncio.ensure_future(write_all())
        try:
            await self._stream_out(exchange, send, call, deadline_at, writer)
        finally:
            if not writer.done():
                writer.cancel()
            elif not writer.cancelled():
                writer.exception()  # seen: `_stream_out` already answered with it (as a reply or an error frame)

    async def _stream_out(self, exchange: Exchange, send: Send, call: Any, deadline_at: float | None,
                          writer: asyncio.Future[None] | None = None) -> None:
        iterator = call.__aiter__()
        try:
            first: Message | None = await iterator.__anext__()
        except StopAsyncIteration:
            first = None
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            raise self._stream_failure(exc, writer, deadline_at) from None
        mapper = self.response_mapper
        raw = mapper.http_body
        headers = _metadata_headers(await call.initial_metadata(), ())
        if raw:
            content_type = mapper.raw(first)[0] if first is not None else "application/octet-stream"
        else:
            content_type = self.framing.content_type
        headers.append((b"content-type", content_type.encode("latin-1")))
        if self.framing.kind == "sse":
            headers.append((b"cache-control", b"no-cache"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        framing = self.framing
        try:
            if first is not None:
                payload = mapper.raw(first)[1] if raw else framing.first(mapper.to_json(first))
                await send({"type": "http.response.body", "body": payload, "more_body": True})
            try:
                async for message in iterator:
                    payload = mapper.raw(message)[1] if raw else framing.item(mapper.to_json(message))
                    await send({"type": "http.response.body", "body": payload, "more_body": True})
            except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
                error = self._stream_failure(exc, writer, deadline_at)
                if raw:
                    raise error from None  # raw bytes have no framing for an error: abort the connection
                exchange.reason = error.reason
                tail = framing.error(status_body(exchange, error), first is not None)
                await send({"type": "http.response.body", "body": tail})
                return
            await send({"type": "http.response.body", "body": b"" if raw else framing.end(first is not None)})
        finally:
            if not call.done():
                call.cancel()

    def _stream_failure(self, exc: BaseException, writer: asyncio.Future[None] | None,
                        deadline_at: float | None) -> GatewayError:
        """Why a response stream ended early: a bad request line (the writer cancelled the call), or the status."""
        if writer is not None and writer.done() and not writer.cancelled():
            inner = writer.exception()
            if isinstance(inner, GatewayError):
                return inner
        if isinstance(exc, grpc.aio.AioRpcError):
            return self._error(exc, deadline_at)
        raise _ClientGone() if _call_cancelled(exc) else exc

    # --- metadata and errors --------------------------------------------------------------------------------

    def _metadata(self, exchange: Exchange) -> tuple[list[tuple[str, Any]], float | None]:
        metadata: list[tuple[str, Any]] = []
        timeout = self.settings.timeout
        allowed = self.settings.forward_headers
        for raw_name, raw_value in exchange.scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            if name == "grpc-timeout":
                client = _parse_timeout(raw_value.decode("latin-1"))
                timeout = client if timeout is None else min(timeout, client)
                continue
            if name.startswith(_METADATA_PREFIX):
                key = name[len(_METADATA_PREFIX) :]
            elif name in allowed:
                key = name
            else:
                continue
            if not _METADATA_KEY.fullmatch(key) or key.startswith("grpc-"):
                raise BadRequest(f"Header {name!r} cannot be sent as gRPC metadata.")
            if key.endswith("-bin"):
                padded = raw_value + b"=" * (-len(raw_value) % 4)
                try:
                    metadata.append((key, base64.b64decode(padded.replace(b"-", b"+").replace(b"_", b"/"),
                                                           validate=True)))
                except (binascii.Error, ValueError):
                    raise BadRequest(f"Header {name!r} must be base64.") from None
                continue
            value = raw_value.decode("latin-1")
            if not value.isascii() or not value.isprintable():
                raise BadRequest(f"Header {name!r} has a value gRPC metadata cannot carry.")
            metadata.append((key, value))
        if exchange.request_id:  # the gateway's id, never one the client chose
            metadata = [item for item in metadata if item[0] != "x-request-id"]
            metadata.append(("x-request-id", exchange.request_id))
        return metadata, timeout

    def _error(self, exc: grpc.aio.AioRpcError, deadline_at: float | None) -> GatewayError:
        code = exc.code()
        number = code.value[0]
        message = exc.details() or ""
        trailing = exc.trailing_metadata() or ()
        if code == grpc.StatusCode.UNAVAILABLE and not trailing and _CONNECT_FAILURE.search(message):
            return UpstreamUnavailable("The gRPC backend cannot be reached.", stage="connect",
                                       upstream=self.upstream.name, internal=message)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline_at is not None and time.perf_counter() >= deadline_at:
            # our own deadline ran out (the backend answering DEADLINE_EXCEEDED itself is a status like any other)
            return UpstreamTimeout("The gRPC backend did not answer in time.", stage="deadline",
                                   upstream=self.upstream.name, internal=message)
        details: list[dict[str, object]] = []
        for key, value in trailing:
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                details, _ = decode_details(value, self.descriptors.pool)
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in _metadata_headers(exc.initial_metadata() or (), trailing)
        }
        return GrpcStatusError(number, message, status=http_status(number), code_name=code.name, details=details,
                               response_headers=headers, upstream=self.upstream.name)

    def __repr__(self) -> str:
        return f"GrpcMethod({self.method.full_name}, {self.upstream.name})"


class _ClientGone(Exception):
    """The client disconnected during a server stream, which cancelled the call: nothing more to send."""


def _call_cancelled(exc: BaseException) -> bool:
    # grpc.aio raises CancelledError from a call cancelled locally (by `_cancel_on_disconnect`); a cancellation
    # of the request's own task would have raised out of the await before reaching here
    task = asyncio.current_task()
    return isinstance(exc, asyncio.CancelledError) and (task is None or not task.cancelling())


async def _cancel_on_disconnect(receive: Receive, call: Any) -> None:
    """Watch for the client going away while a response streams, and cancel the gRPC call then."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            call.cancel()
            return


def _query(raw: bytes, plus_as_space: bool) -> list[tuple[str, str]]:
    """The query parameters, percent-decoded as UTF-8.

    http.proto maps query parameters by URL percent-decoding, where "+" is a plus (as Envoy reads them); the HTML
    form rule, "+" as a space, is what grpc-gateway (Go's url.ParseQuery) does, and is an option.
    """
    if not raw:
        return []
    if plus_as_space:
        raw = raw.replace(b"+", b" ")  # before decoding, so that %2B stays a plus
    out = []
    try:
        for part in raw.split(b"&"):
            if part:
                name, _, value = part.partition(b"=")
                out.append((unquote_to_bytes(name).decode("utf-8"), unquote_to_bytes(value).decode("utf-8")))
    except UnicodeDecodeError:
        raise BadRequest("The query string is not valid UTF-8.") from None
    return out


def _parse_timeout(value: str) -> float:
    m = _TIMEOUT.fullmatch(value.strip())
    if m is None:
        raise BadRequest(f"Grpc-Timeout {value!r} is not a gRPC timeout (1-8 digits and one of H M S m u n).")
    return int(m.group(1)) * _TIMEOUT_UNITS[m.group(2)]


def _metadata_headers(*groups: Iterable[Any]) -> list[tuple[bytes, bytes]]:
    out = []
    for group in groups:
        for key, value in group or ():
            if key.startswith("grpc-") or key in (":status", "content-type"):
                continue
            text = base64.b64encode(value).decode() if isinstance(value, bytes) else value
            out.append(((_METADATA_PREFIX + key).encode("latin-1"), text.encode("latin-1")))
    return out


class GrpcService(Group):
    """The HTTP bindings of gRPC services, as a group of routes (see the module doc).

    `services` picks services by full name (all in the descriptors by default). Methods without a
    google.api.http rule are skipped, or bound to ``POST /package.Service/Method`` with `default_bindings`.
    `json` sets proto3 JSON options, `timeout` a deadline (the client's Grpc-Timeout can only shorten it),
    `stream_format` how server streams are framed, `forward_headers` which request headers become metadata (on
    top of `Grpc-Metadata-*`), `error_format` "grpc" (google.rpc.Status bodies) or "gateway" (the gateway's own
    error replies), `query_plus_as_space` the HTML form rule for "+" in the query (a literal plus by default, as
    http.proto and Envoy read it), `not_found_under` the paths below the mount point whose unknown paths get the
    service's 404 (by default its prefix if it has one, else the first literal segment of each template),
    `methods` per-method settings by method name or full name. Routes are named after their
    method (`package.Service.Method`, `#n` for the n-th additional binding), prefixed with `name:` when a name
    is given (needed to serve one method twice). The rest is as for `Group`.
    """

    def __init__(
        self,
        descriptors: Descriptors,
        upstream: GrpcUpstream | str,
        *,
        services: Sequence[str] | None = None,
        prefix: str = "",
        default_bindings: bool = False,
        json: JsonOptions | None = None,
        timeout: float | None = None,
        stream_format: StreamFormat = "ndjson",
        forward_headers: Iterable[str] = ("authorization",),
        max_body_size: int | None = 4 * 1024 * 1024,
        error_format: ErrorFormat = "grpc",
        query_plus_as_space: bool = False,
        not_found_under: Sequence[str] | None = None,
        methods: Mapping[str, MethodSettings] | None = None,
        policies: Sequence[PolicyLike] = (),
        skip: Iterable[type] = (),
        errors: ErrorsLike | None = None,
        host: str | None = None,
        name: str | None = None,
    ) -> None:
        self.descriptors = descriptors
        if isinstance(upstream, str):
            upstream = GrpcUpstream(upstream)
        elif not isinstance(upstream, BaseUpstream):
            raise ConfigurationError(f"GrpcService needs a GrpcUpstream or a grpc:// URL, got {upstream!r}.")
        # Another kind of upstream (HTTP) is refused at build, where each method's bind() names its route.
        self.upstream: BaseUpstream = upstream
        if stream_format not in FORMATS:
            raise ConfigurationError(f"stream_format must be one of {', '.join(FORMATS)}, not {stream_format!r}.")
        if error_format not in ("grpc", "gateway"):
            raise ConfigurationError(f"error_format must be 'grpc' or 'gateway', not {error_format!r}.")
        base = _Settings(json or JsonOptions(), timeout, stream_format, error_format,
                         frozenset(h.lower() for h in forward_headers), max_body_size, None, query_plus_as_space)
        chosen = list(services) if services is not None else descriptors.service_names()
        if not chosen:
            raise ConfigurationError(f"{descriptors!r} has no services.")
        overrides = dict(methods or {})
        self.methods: list[Method] = []
        self._bindings = Bindings()  # per gateway: (full route path, method) of every route built
        chosen_bindings: list[tuple[Method, Binding, _Settings]] = []
        for service in chosen:
            for method in descriptors.methods(service):
                settings = _merge(base, overrides.pop(method.name, None), overrides.pop(method.full_name, None))
                if method.rule is not None:
                    bindings = bindings_from_rule(method.rule)
                elif default_bindings:
                    bindings = [Binding("POST", parse_template(method.path), "*", "")]
                else:
                    continue
                self.methods.append(method)
                chosen_bindings.extend((method, binding, settings) for binding in bindings)
        if overrides:
            raise ConfigurationError(f"methods= names methods that are not served: {', '.join(sorted(overrides))}.")
        claimed = _not_found_under(not_found_under, prefix, [binding.template for _, binding, _ in chosen_bindings])
        entries: list[tuple[tuple[Any, ...], Route]] = []
        for method, binding, settings in chosen_bindings:
            # only routes in the service's own error format answer its 404s (one with its own `errors=` or
            # error_format in MethodSettings speaks for that method alone), so which route answers does not matter
            owns_404 = settings.errors is None and settings.error_format == error_format
            target = GrpcMethod(method, binding, self.upstream, descriptors, settings, self._bindings,
                                claimed if owns_404 else ())
            errors_setting = settings.errors
            if errors_setting is None and settings.error_format == "grpc":
                errors_setting = status_reply
            route = Route(
                target.coarse,
                target,
                methods=[binding.method],
                policies=settings.policies,
                skip=settings.skip,
                name=(f"{name}:" if name else "") + method.full_name + (f"#{binding.index}" if binding.index else ""),
                errors=errors_setting,
            )
            entries.append((binding.template.specificity(), route))
        entries.sort(key=lambda item: item[0])  # stable: equally specific bindings keep their order
        self._check_duplicates([route for _, route in entries])
        super().__init__(prefix, [route for _, route in entries], host=host, policies=policies, skip=skip,
                         errors=errors, name=name or prefix or "grpc:" + ",".join(chosen))

    @property
    def bound(self) -> list[tuple[str, GrpcMethod]]:
        """(full route path, method) of the routes built for this service, in the gateway built last."""
        return self._bindings.routes()

    @staticmethod
    def _check_duplicates(routes: Sequence[Route]) -> None:
        seen: dict[tuple[str, str], str] = {}
        for route in routes:
            target: GrpcMethod = route.target  # type: ignore[assignment]
            key = (target.binding.method, target.binding.template.source)
            if key in seen:
                raise ConfigurationError(
                    f"{key[0]} {key[1]} is bound twice: by {seen[key]} and by {target.method.full_name}."
                )
            seen[key] = target.method.full_name

    # --- sources --------------------------------------------------------------------------------------------

    @classmethod
    def from_descriptor_set(cls, source: str | os.PathLike[str] | bytes, upstream: GrpcUpstream | str,
                            **options: Any) -> GrpcService:
        """Services from a FileDescriptorSet file (`protoc --descriptor_set_out=api.binpb --include_imports`)."""
        return cls(Descriptors.from_file_descriptor_set(source), upstream, **options)

    @classmethod
    def from_modules(cls, modules: Sequence[Any], upstream: GrpcUpstream | str, **options: Any) -> GrpcService:
        """Services from already-imported generated `_pb2` modules."""
        return cls(Descriptors.from_modules(*modules), upstream, **options)

    @classmethod
    def from_reflection(cls, upstream: GrpcUpstream | str, *, reflection_timeout: float = 10.0,
                        **options: Any) -> GrpcService:
        """Services discovered from the upstream's gRPC server reflection, once, when the routes are declared.

        The reflection service itself and the health service are left out unless named in `services`.
        """
        grpc_upstream = (GrpcUpstream(upstream) if isinstance(upstream, str)
                         else require_kind(upstream, GrpcUpstream, "GrpcService.from_reflection"))
        credentials = grpc_upstream._credentials
        descriptors = Descriptors.from_reflection(grpc_upstream.authority, timeout=reflection_timeout,
                                                  credentials=credentials)
        if options.get("services") is None:
            options["services"] = [
                name for name in descriptors.service_names()
                if not name.startswith(("grpc.reflection.", "grpc.health."))
            ]
        return cls(descriptors, grpc_upstream, **options)

    def openapi(self, *, title: str = "API", version: str = "1.0.0", description: str | None = None) -> Target:
        """A target serving the OpenAPI 3.1 document of these routes: ``Route("/openapi.json", svc.openapi())``."""
        from .openapi import OpenAPITarget

        return OpenAPITarget(self, title=title, version=version, description=description)

    def __repr__(self) -> str:
        return f"GrpcService({self.name!r}, {len(self.routes)} routes, {self.upstream!r})"


def _not_found_under(setting: Sequence[str] | None, prefix: str, templates: Sequence[Template]) -> tuple[str, ...]:
    """Where a path that no route matches gets this service's 404, relative to where its routes are mounted.

    By default: everything under the service's own prefix when it has one, else the first segment of each
    template that starts with a literal one ("/v1"): the namespace of the API, without taking over the
    gateway's 404 for every other path.
    """
    if setting is None:
        if prefix:
            return ("/",)
        return tuple(sorted({"/" + t.segments[0][1] for t in templates if t.segments[0][0] == LITERAL}))
    if isinstance(setting, str):
        raise ConfigurationError(f"not_found_under takes a list of paths, not the string {setting!r}.")
    out = []
    for path in setting:
        if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "{}*"):
            raise ConfigurationError(f"not_found_under: {path!r} is not a literal path starting with '/'.")
        out.append(path.rstrip("/") or "/")
    return tuple(out)


def _merge(base: _Settings, *items: MethodSettings | None) -> _Settings:
    out = base
    for item in items:
        if item is None:
            continue
        out = replace(
            out,
            json=item.json or out.json,
            timeout=item.timeout if item.timeout is not None else out.timeout,
            stream_format=item.stream_format or out.stream_format,
            error_format=item.error_format or out.error_format,
            policies=out.policies + tuple(item.policies),
            skip=out.skip | frozenset(item.skip),
            errors=item.errors if item.errors is not None else out.errors,
        )
        if out.stream_format not in FORMATS:
            raise ConfigurationError(f"stream_format must be one of {', '.join(FORMATS)}.")
    return out

