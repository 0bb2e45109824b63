"""GrpcBackend: call gRPC methods from resolvers, messages as dicts or message objects.

A `GrpcUpstream` (the channels of the transcoding target: per event loop, TLS, keepalive) whose unary methods are
found by name in the generated `_pb2` modules given; dicts converted with google.protobuf.json_format (field
names as in the .proto).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from ..errors import ConfigurationError
from ..upstreams.grpc import GrpcUpstream
from .backends import BackendCallError

__all__ = ["GrpcBackend"]

_STATUS = {
    "DEADLINE_EXCEEDED": "UPSTREAM_TIMEOUT",
    "UNAVAILABLE": "UPSTREAM_UNAVAILABLE",
    "NOT_FOUND": "NOT_FOUND",
    "UNAUTHENTICATED": "UNAUTHENTICATED",
    "PERMISSION_DENIED": "FORBIDDEN",
    "INVALID_ARGUMENT": "BAD_REQUEST",
}


class GrpcBackend(GrpcUpstream):
    """A gRPC service: ``GrpcBackend("127.0.0.1:50051", orders_pb2, name="orders", timeout=2.0)``.

    `target` is ``host:port`` (plaintext) or a ``grpc://`` / ``grpcs://`` URL; `modules` are generated ``_pb2``
    modules whose services' methods can be called by full name (``"orders.Orders/GetOrder"``) or, when unique,
    by ``"Orders/GetOrder"`` or ``"GetOrder"``. `options` are extra grpc channel arguments. The gateway closes
    its channels on shutdown.
    """

    def __init__(
        self,
        target: str,
        *modules: ModuleType,
        name: str | None = None,
        timeout: float | None = 10.0,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        super().__init__(target if "://" in target else f"grpc://{target}", name=name, options=options)
        if not modules:
            raise ConfigurationError(f"GrpcBackend({target!r}) needs the generated _pb2 modules of its services.")
        self.target = target
        self.call_timeout = timeout
        self.methods: dict[str, tuple[str, type[Any], type[Any]]] = {}
        aliases: dict[str, list[str]] = {}
        from google.protobuf import message_factory

        for module in modules:
            descriptor = getattr(module, "DESCRIPTOR", None)
            if descriptor is None or not hasattr(descriptor, "services_by_name"):
                raise ConfigurationError(f"GrpcBackend: {module!r} is not a generated _pb2 module.")
            for service in descriptor.services_by_name.values():
                for method in service.methods:
                    if method.client_streaming or method.server_streaming:
                        continue
                    full = f"{service.full_name}/{method.name}"
                    self.methods[full] = (
                        f"/{full}",
                        message_factory.GetMessageClass(method.input_type),
                        message_factory.GetMessageClass(method.output_type),
                    )
                    for alias in (f"{service.name}/{method.name}", method.name):
                        aliases.setdefault(alias, []).append(full)
        for alias, fulls in aliases.items():
            if len(fulls) == 1 and alias not in self.methods:
                self.methods[alias] = self.methods[fulls[0]]
        self._callables: dict[tuple[Any, str], Any] = {}  # per (channel, method path)

    def method(self, name: str) -> tuple[str, type[Any], type[Any]]:
        found = self.methods.get(name.lstrip("/"))
        if found is None:
            raise ConfigurationError(f"GrpcBackend {self.name!r} has no unary method {name!r}.")
        return found

    def _callable(self, name: str) -> tuple[Any, type[Any]]:
        path, request_class, response_class = self.method(name)
        channel = self.channel()
        call = self._callables.get((channel, path))
        if call is None:
            if len(self._callables) > 256:  # channels of an event loop that is gone
                self._callables.clear()
            call = self._callables[channel, path] = channel.unary_unary(
                path, request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString)
        return call, request_class

    async def call(
        self,
        method: str,
        request: Mapping[str, Any] | Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
        metadata: Sequence[tuple[str, str]] = (),
        as_dict: bool = True,
    ) -> Any:
        """Call a unary method; `request` is a dict or a message. The response as a dict, or the message."""
        import grpc
        from google.protobuf import json_format

        call, request_class = self._callable(method)
        if isinstance(request, Mapping):
            try:
                message = json_format.ParseDict(dict(request), request_class())
            except json_format.ParseError as exc:
                raise BackendCallError(f"bad request for {method}: {exc}", code="BAD_REQUEST",
                                       upstream=self.name) from None
        else:
            message = request
        try:
            response = await call(message, timeout=timeout if timeout is not None else self.call_timeout,
                                  metadata=tuple(metadata) or None)
        except grpc.aio.AioRpcError as exc:
            status = exc.code().name
            raise BackendCallError(f"{self.name} failed {method}: {status} {exc.details() or ''}".rstrip(),
                                   code=_STATUS.get(status, "UPSTREAM_ERROR"), upstream=self.name,
                                   grpcStatus=status) from None
        if not as_dict:
            return response
        return json_format.MessageToDict(response, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)

    async def aclose(self) -> None:
        self._callables = {}
        await super().aclose()

    def __repr__(self) -> str:
        return f"GrpcBackend({self.target!r}, name={self.name!r})"
