"""OpenAPI 3.1 for transcoded routes, generated from the descriptors and the HttpRules (comments as descriptions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from google.protobuf.descriptor import FieldDescriptor

from .._frozen import Frozen
from ..targets.base import Target
from .mapping import HTTP_BODY, find_field, is_repeated

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..gateway import Gateway
    from ..routing import Route
    from ..types import Receive, Send
    from .target import GrpcMethod, GrpcService

__all__: list[str] = []  # internal: served by `GrpcService.openapi()`

# Descriptors are typed loosely: the C (upb) and Python implementations differ in the stubs.
DescriptorT = Any

_F = FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    _F.TYPE_DOUBLE: {"type": "number", "format": "double"},
    _F.TYPE_FLOAT: {"type": "number", "format": "float"},
    _F.TYPE_INT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _F.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    _F.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    _F.TYPE_INT64: {"type": "string", "format": "int64"},
    _F.TYPE_SINT64: {"type": "string", "format": "int64"},
    _F.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    _F.TYPE_UINT64: {"type": "string", "format": "uint64"},
    _F.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    _F.TYPE_BOOL: {"type": "boolean"},
    _F.TYPE_STRING: {"type": "string"},
    _F.TYPE_BYTES: {"type": "string", "format": "byte"},
}
_WKT: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?s$"},
    "google.protobuf.FieldMask": {"type": "string", "description": "Comma-separated field paths."},
    "google.protobuf.Empty": {"type": "object"},
    "google.protobuf.Struct": {"type": "object", "additionalProperties": True},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array", "items": {}},
    "google.protobuf.Any": {
        "type": "object", "properties": {"@type": {"type": "string"}}, "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": {"type": ["number", "null"]},
    "google.protobuf.FloatValue": {"type": ["number", "null"]},
    "google.protobuf.Int64Value": {"type": ["string", "null"], "format": "int64"},
    "google.protobuf.UInt64Value": {"type": ["string", "null"], "format": "uint64"},
    "google.protobuf.Int32Value": {"type": ["integer", "null"], "format": "int32"},
    "google.protobuf.UInt32Value": {"type": ["integer", "null"]},
    "google.protobuf.BoolValue": {"type": ["boolean", "null"]},
    "google.protobuf.StringValue": {"type": ["string", "null"]},
    "google.protobuf.BytesValue": {"type": ["string", "null"], "format": "byte"},
}
_STATUS_SCHEMA = {
    "type": "object",
    "description": "google.rpc.Status: the error body of transcoded routes.",
    "properties": {
        "code": {"type": "integer", "format": "int32", "description": "The google.rpc.Code."},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"$ref": "#/components/schemas/google.protobuf.Any"}},
    },
}
_OPERATIONS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
_STREAM_TYPES = {"ndjson": "application/x-ndjson", "json-array": "application/json", "sse": "text/event-stream"}


class _Builder:
    def __init__(self, service: GrpcService) -> None:
        self.service = service
        self.descriptors = service.descriptors
        self.schemas: dict[str, Any] = {"google.rpc.Status": _STATUS_SCHEMA,
                                        "google.protobuf.Any": _WKT["google.protobuf.Any"]}

    def comment(self, name: str) -> dict[str, str]:
        text = self.descriptors.comment(name)
        return {"description": text} if text else {}

    def field_schema(self, field: DescriptorT, proto_names: bool, enums_as_ints: bool) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value = field.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.single(value, proto_names, enums_as_ints)}
        schema = self.single(field, proto_names, enums_as_ints)
        if is_repeated(field):
            schema = {"type": "array", "items": schema}
        return schema

    def single(self, field: DescriptorT, proto_names: bool, enums_as_ints: bool) -> dict[str, Any]:
        if field.type == _F.TYPE_ENUM:
            values = [v.number if enums_as_ints else v.name for v in field.enum_type.values]
            return {"type": "integer" if enums_as_ints else "string", "enum": values,
                    **self.comment(field.enum_type.full_name)}
        if field.type in (_F.TYPE_MESSAGE, _F.TYPE_GROUP):
            return self.ref(field.message_type, proto_names, enums_as_ints)
        return dict(_SCALARS[field.type])

    def ref(self, message: DescriptorT, proto_names: bool, enums_as_ints: bool) -> dict[str, Any]:
        name = message.full_name
        if name in _WKT:
            return dict(_WKT[name])
        if name not in self.schemas:
            self.schemas[name] = {}  # placeholder first: messages may refer to themselves
            properties = {}
            for field in message.fields:
                key = field.name if proto_names else field.json_name
                schema = self.field_schema(field, proto_names, enums_as_ints)
                described = self.comment(f"{name}.{field.name}")
                properties[key] = {**schema, **described} if "$ref" not in schema else (
                    {"allOf": [schema], **described} if described else schema
                )
            self.schemas[name] = {"type": "object", "properties": properties, **self.comment(name)}
        return {"$ref": f"#/components/schemas/{name}"}

    def operation(self, path: str, target: GrpcMethod) -> tuple[str, str, dict[str, Any]]:
        method, binding = target.method, target.binding
        options = target.settings.json
        proto_names, ints = options.proto_names, options.enums_as_ints
        descriptor: DescriptorT = method.input.DESCRIPTOR
        op: dict[str, Any] = {
            "operationId": method.full_name.replace(".", "_") + (f"_{binding.index}" if binding.index else ""),
            "tags": [method.service],
            **self.comment(method.full_name),
        }
        parameters: list[dict[str, Any]] = []
        bound = set()
        for var in binding.template.variables:
            fields = target.request_mapper.path_fields[var.field_path]
            bound.add(var.field_path)
            name = ".".join(var.field_path)
            template = binding.template.source
            start = template.index("{" + name)
            pattern = template[start + 1 : template.index("}", start)].partition("=")[2]
            param: dict[str, Any] = {"name": name, "in": "path", "required": True,
                                     "schema": self.single(fields[-1], proto_names, ints)}
            if pattern:
                param["description"] = f"Matches the pattern `{pattern}`."
            parameters.append(param)
        if binding.body != "*":
            skip = {binding.body} if binding.body else set()
            self.query(descriptor, (), bound, skip, parameters, proto_names, ints, depth=0)
        if parameters:
            op["parameters"] = parameters
        if binding.body:
            if target.request_mapper.raw_body:
                content = {"*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}
            else:
                schema = (
                    self.ref(descriptor, proto_names, ints) if binding.body == "*"
                    else self.field_schema(find_field(descriptor, binding.body), proto_names, ints)
                )
                media = "application/x-ndjson" if method.client_streaming else "application/json"
                content = {media: {"schema": schema}}
            op["requestBody"] = {"required": binding.body == "*", "content": content}
        op["responses"] = {"200": self.response(target), "default": {
            "description": "An error, as google.rpc.Status.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/google.rpc.Status"}}},
        }}
        return path, binding.method.lower(), op

    def query(self, message: DescriptorT, prefix: tuple[str, ...], bound: set[tuple[str, ...]], skip: set[str],
              out: list[dict[str, Any]], proto_names: bool, ints: bool, depth: int) -> None:
        for field in message.fields:
            path = (*prefix, field.name)
            if path in bound or (not prefix and field.name in skip):
                continue
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                continue
            if field.type == _F.TYPE_MESSAGE and field.message_type.full_name not in _WKT:
                if not is_repeated(field) and depth < 3 and field.message_type.full_name != HTTP_BODY:
                    self.query(field.message_type, path, bound, skip, out, proto_names, ints, depth + 1)
                continue
            schema = self.field_schema(field, proto_names, ints)
            param: dict[str, Any] = {"name": ".".join(path), "in": "query", "schema": schema,
                     **self.comment(f"{message.full_name}.{field.name}")}
            if is_repeated(field):
                param["explode"] = True
            out.append(param)

    def response(self, target: GrpcMethod) -> dict[str, Any]:
        mapper = target.response_mapper
        options = target.settings.json
        if mapper.http_body:
            return {"description": "Raw bytes (google.api.HttpBody).",
                    "content": {"*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}
        output: DescriptorT = target.method.output.DESCRIPTOR
        if mapper.field is not None:
            schema = self.field_schema(mapper.field, options.proto_names, options.enums_as_ints)
        else:
            schema = self.ref(output, options.proto_names, options.enums_as_ints)
        if target.method.server_streaming:
            kind = target.settings.stream_format
            stream = {"type": "array", "items": schema} if kind == "json-array" else schema
            # OpenAPI 3.1 has no item schema for streams: the schema is one message's (an array's, for json-array)
            return {"description": f"A stream of {output.full_name} ({kind}), one JSON value per message.",
                    "content": {_STREAM_TYPES[kind]: {"schema": stream}}}
        return {"description": output.full_name, "content": {"application/json": {"schema": schema}}}


def openapi_document(service: GrpcService, *, title: str, version: str, description: str | None,
                     gateway: Gateway | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the service's routes as built in `gateway` (by default the one built last)."""
    builder = _Builder(service)
    paths: dict[str, dict[str, Any]] = {}
    bound = service._bindings.routes(gateway)
    for route_path, target in sorted(bound, key=lambda item: item[0]):
        _path, verb, op = builder.operation(route_path, target)
        template = target.binding.template
        openapi_path = route_path[: len(route_path) - len(template.source)] + template.openapi_path()
        item = paths.setdefault(openapi_path, {})
        if verb in _OPERATIONS:
            item[verb] = op
        else:
            # custom HttpRule methods (REPORT, ...): OpenAPI 3.1 has no slot for them, 3.2's name, as an extension
            item.setdefault("x-additionalOperations", {})[verb.upper()] = op
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    tags = [{"name": m, **builder.comment(m)} for m in sorted({t.method.service for _, t in bound})]
    return {"openapi": "3.1.0", "info": info, "tags": tags, "paths": paths,
            "components": {"schemas": dict(sorted(builder.schemas.items()))}}


class OpenAPITarget(Frozen, Target):
    """Serves the OpenAPI document of a GrpcService (built on first request, after the gateway is built)."""

    def __init__(self, service: GrpcService, *, title: str, version: str, description: str | None) -> None:
        self.service = service
        self.title = title
        self.version = version
        self.description = description
        self._gateway: Gateway | None = None
        self._body = _Body()

    def bind(self, route: Route, gateway: Gateway) -> OpenAPITarget:
        # the document of this gateway's routes (the service may be mounted elsewhere too), made once per route
        return self._replace(_gateway=gateway, _body=_Body())

    def document(self) -> dict[str, Any]:
        return openapi_document(self.service, title=self.title, version=self.version, description=self.description,
                                gateway=self._gateway)

    async def handle(self, exchange: Exchange, receive: Receive, send: Send) -> None:
        body = self._body.value
        if body is None:
            body = self._body.value = orjson.dumps(self.document())
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": b"" if exchange.method == "HEAD" else body})

    def __repr__(self) -> str:
        return f"OpenAPI({self.service.name!r})"


class _Body:
    """The document's bytes, made at the first request: the routes are all known only once the build is over."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: bytes | None = None
