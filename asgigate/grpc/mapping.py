"""HTTP request -> gRPC request message, and gRPC response message -> HTTP body, through protobuf's json_format.

Path variables and query parameters are turned into the proto3 JSON form of their field (a string, a number, a
bool, a list) and parsed by json_format together, so every field type follows exactly the proto3 JSON rules: 64-bit
integers and well-known types (Timestamp, Duration, FieldMask, wrappers) as strings, enums by name or number.
Anything json_format refuses is a 400; nothing is silently dropped unless the route is lenient.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from ..errors import BadRequest, ConfigurationError, InvalidBody
from .httprule import Binding

__all__ = ["JsonOptions"]

# Descriptors are typed loosely: the C (upb) and Python implementations differ in the stubs.
DescriptorT = Any

HTTP_BODY = "google.api.HttpBody"
_STRING_WKT = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"})
_WRAPPERS = frozenset(
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
)
# An enum given by number: an int32, in ASCII digits (str.isdigit also takes "²", which int() refuses).
_ENUM_NUMBER = re.compile(r"-?[0-9]{1,10}")
_TRUE = frozenset({"true", "1", "t"})
_FALSE = frozenset({"false", "0", "f"})


@dataclass(frozen=True)
class JsonOptions:
    """proto3 JSON settings of a route.

    Output: `proto_names` (field names as in the .proto instead of lowerCamelCase), `emit_unpopulated` (fields
    with no presence are printed at their default), `enums_as_ints`. Input: `lenient` ignores unknown JSON fields
    and enum names instead of answering 400; `ignore_unknown_query` ignores query parameters that name no field.
    """

    proto_names: bool = False
    emit_unpopulated: bool = False
    enums_as_ints: bool = False
    lenient: bool = False
    ignore_unknown_query: bool = False


def find_field(message: DescriptorT, name: str) -> Any:
    field: Any = message.fields_by_name.get(name)
    if field is None:
        for candidate in message.fields:
            if candidate.json_name == name:
                return candidate
    return field


def resolve(message: DescriptorT, path: Iterable[str], what: str) -> list[DescriptorT]:
    """The fields along a dotted field path; ConfigurationError when one does not exist (build time)."""
    fields = []
    current: Any = message
    for part in path:
        if current is None:
            raise ConfigurationError(f"{what}: {part!r} is inside a field that is not a message.")
        field = find_field(current, part)
        if field is None:
            raise ConfigurationError(f"{what}: {current.full_name} has no field {part!r}.")
        fields.append(field)
        current = field.message_type if field.type == FieldDescriptor.TYPE_MESSAGE else None
    return fields


def is_repeated(field: DescriptorT) -> bool:
    # `label` is gone in protobuf 7; `is_repeated` is there since 5.29
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return bool(flag)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _is_map(field: DescriptorT) -> bool:
    return bool(field.message_type is not None and field.message_type.GetOptions().map_entry)


def scalar_json(field: DescriptorT, text: str, where: str) -> Any:
    """The proto3 JSON value for a field given as text (a path segment or a query parameter)."""
    if field.type == FieldDescriptor.TYPE_BOOL:
        lowered = text.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise BadRequest(f"{where}: {text!r} is not a bool (true or false).")
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name in _STRING_WKT:
            return text
        if name in _WRAPPERS:
            return scalar_json(field.message_type.fields_by_name["value"], text, where)
        raise BadRequest(f"{where}: {field.name} is a message; give its fields as {field.name}.<field>=...")
    if field.type == FieldDescriptor.TYPE_ENUM:
        if _ENUM_NUMBER.fullmatch(text):
            number = int(text)
            if field.enum_type.values_by_number.get(number) is None:
                raise BadRequest(f"{where}: {number} is not a value of {field.enum_type.full_name}.")
            return number
        if text not in field.enum_type.values_by_name:
            raise BadRequest(f"{where}: {text!r} is not a value of {field.enum_type.full_name}.")
        return text
    return text  # strings, bytes (base64) and numbers: json_format accepts (and checks) numbers given as strings


class EnumCheck:
    """Refuses enum numbers that name no value (json_format keeps them, proto3 enums being open).

    Built once per message type: only the fields that are, or lead to, enums are walked per request.
    """

    def __init__(self, descriptor: DescriptorT) -> None:
        self.plans: dict[str, list[tuple[Any, int, frozenset[int]]]] = {}
        self._build(descriptor, set())

    @property
    def empty(self) -> bool:
        return not any(self.plans.values())

    def _build(self, descriptor: DescriptorT, visiting: set[str]) -> bool:
        name = descriptor.full_name
        if name in self.plans:
            return bool(self.plans[name]) or name in visiting
        if name.startswith("google.protobuf."):
            return False
        visiting.add(name)
        self.plans[name] = []
        plan: list[tuple[Any, int, frozenset[int]]] = []
        for field in descriptor.fields:
            repeated = is_repeated(field)
            if field.type == FieldDescriptor.TYPE_ENUM:
                values = frozenset(v.number for v in field.enum_type.values)
                plan.append((field, 1 if repeated else 0, values))
            elif field.type == FieldDescriptor.TYPE_MESSAGE:
                target = field.message_type
                if _is_map(field):
                    target = target.fields_by_name["value"]
                    if target.type == FieldDescriptor.TYPE_ENUM:
                        values = frozenset(v.number for v in target.enum_type.values)
                        plan.append((field, 4, values))
                        continue
                    if target.type != FieldDescriptor.TYPE_MESSAGE:
                        continue
                    if self._build(target.message_type, visiting):
                        plan.append((field, 5, frozenset()))
                    continue
                if self._build(target, visiting):
                    plan.append((field, 3 if repeated else 2, frozenset()))
        self.plans[name] = plan
        visiting.discard(name)
        return bool(plan)

    def check(self, message: Message, where: str = "") -> None:
        for field, kind, values in self.plans.get(message.DESCRIPTOR.full_name, ()):
            value = getattr(message, field.name)
            path = where + field.name
            if kind == 0:
                items: Iterable[Any] = (value,)
            elif kind == 1:
                items = value
            elif kind == 4:
                items = value.values()
            else:
                if kind == 2:
                    if message.HasField(field.name):
                        self.check(value, path + ".")
                elif kind == 3:
                    for item in value:
                        self.check(item, path + ".")
                else:
                    for item in value.values():
                        self.check(item, path + ".")
                continue
            for item in items:
                if item not in values:
                    raise InvalidBody(f"{path}: {item} is not a value of its enum.")


class RequestMapper:
    """Builds the request message of one binding. Checked against the descriptors at build time."""

    def __init__(self, input_type: type[Message], binding: Binding, options: JsonOptions) -> None:
        self.input_type = input_type
        self.binding = binding
        self.options = options
        descriptor: DescriptorT = input_type.DESCRIPTOR
        where = f"HttpRule {binding.method} {binding.template.source}"
        self.path_fields: dict[tuple[str, ...], list[DescriptorT]] = {}
        for var in binding.template.variables:
            fields = resolve(descriptor, var.field_path, where)
            if any(is_repeated(f) for f in fields) or (fields[-1].type == FieldDescriptor.TYPE_MESSAGE and (
                fields[-1].message_type.full_name not in _STRING_WKT | _WRAPPERS
            )):
                raise ConfigurationError(f"{where}: path variable {'.'.join(var.field_path)} must be a scalar field.")
            self.path_fields[var.field_path] = fields
        self.body_field: Any = None
        self.raw_body = False  # the body is a google.api.HttpBody's data
        if binding.body == "*":
            self.raw_body = descriptor.full_name == HTTP_BODY
        elif binding.body:
            if "." in binding.body:
                raise ConfigurationError(f"{where}: body must name a top-level field, not {binding.body!r}.")
            field = find_field(descriptor, binding.body)
            if field is None:
                raise ConfigurationError(f"{where}: body field {binding.body!r} is not in {descriptor.full_name}.")
            self.body_field = field
            self.raw_body = field.message_type is not None and field.message_type.full_name == HTTP_BODY
        self.query_allowed = binding.body != "*"
        check = EnumCheck(descriptor)
        self.enum_check = None if check.empty or options.lenient else check
        bound = {fields[0].name for fields in self.path_fields.values() if len(fields) == 1}
        self.blocked = bound | ({self.body_field.name} if self.body_field is not None else set())

    @property
    def streams_raw(self) -> bool:
        return self.raw_body

    def message(self, path: dict[tuple[str, ...], str], query: list[tuple[str, str]], body: bytes,
                content_type: str | None) -> Message:
        message = self.input_type()
        if self.binding.body:
            self._body(message, body, content_type)
        extra: dict[str, Any] = {}
        for field_path, value in path.items():
            fields = self.path_fields[field_path]
            self._put(extra, fields, scalar_json(fields[-1], value, f"path {'.'.join(field_path)}"), "path")
        if query:
            self._query(extra, query)
        if extra:
            if not self.binding.body:
                self._parse_dict(extra, message, "query or path")  # nothing to merge with: parse in place
            else:
                other = self.input_type()
                self._parse_dict(extra, other, "query or path")
                message.MergeFrom(other)
        if self.enum_check is not None:
            self.enum_check.check(message)
        return message

    def _body(self, message: Message, body: bytes, content_type: str | None) -> None:
        if self.raw_body:
            target: Any = message if self.body_field is None else getattr(message, self.body_field.name)
            target.content_type = content_type or ""
            target.data = body
            return
        if not body.strip():
            return
        try:
            value = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise InvalidBody(f"The request body is not valid JSON: {exc}.") from None
        if self.body_field is not None:
            value = {self.body_field.name: value}
        elif not isinstance(value, dict):
            raise InvalidBody(f"The request body must be a JSON object ({self.input_type.DESCRIPTOR.full_name}).")
        self._parse_dict(value, message, "body")

    def _parse_dict(self, value: Any, message: Message, what: str) -> None:
        try:
            json_format.ParseDict(value, message, ignore_unknown_fields=self.options.lenient)
        except json_format.ParseError as exc:
            raise InvalidBody(f"Invalid {what}: {exc}") from None
        except (ValueError, TypeError, RecursionError) as exc:
            raise InvalidBody(f"Invalid {what}: {exc}") from None

    def _query(self, extra: dict[str, Any], query: list[tuple[str, str]]) -> None:
        descriptor: DescriptorT = self.input_type.DESCRIPTOR
        for key, value in query:
            if not self.query_allowed:
                if self.options.ignore_unknown_query:
                    continue
                raise BadRequest(f"Query parameter {key!r}: this route takes every field from the body.")
            fields = self._query_fields(descriptor, key)
            if fields is None:
                continue
            last = fields[-1]
            json_value = scalar_json(last, value, f"query parameter {key!r}")
            self._put(extra, fields, json_value, "query", repeated=is_repeated(last))

    def _query_fields(self, descriptor: DescriptorT, key: str) -> list[DescriptorT] | None:
        fields = []
        current: Any = descriptor
        parts = key.split(".")
        for i, part in enumerate(parts):
            field = find_field(current, part) if current is not None and part else None
            if field is None:
                if self.options.ignore_unknown_query:
                    return None
                raise BadRequest(f"Query parameter {key!r} names no field of {descriptor.full_name}.")
            fields.append(field)
            last = i == len(parts) - 1
            if _is_map(field) or (is_repeated(field) and not last):
                raise BadRequest(f"Query parameter {key!r}: {field.name} cannot be set from the query.")
            if not last:
                if field.type != FieldDescriptor.TYPE_MESSAGE:
                    raise BadRequest(f"Query parameter {key!r}: {field.name} has no fields.")
                current = field.message_type
        if (fields[0].name in self.blocked and len(fields) == 1) or (
            self.body_field is not None and fields[0].name == self.body_field.name
        ):
            raise BadRequest(f"Query parameter {key!r} is bound by the path or the body.")
        return fields

    @staticmethod
    def _put(out: dict[str, Any], fields: list[DescriptorT], value: Any, what: str, repeated: bool = False) -> None:
        node = out
        for field in fields[:-1]:
            child = node.setdefault(field.name, {})
            if not isinstance(child, dict):
                raise BadRequest(f"{what}: {field.name} is given both as a value and with sub-fields.")
            node = child
        name = fields[-1].name
        if repeated:
            node.setdefault(name, []).append(value)
        elif name in node:
            raise BadRequest(f"{what}: {'.'.join(f.name for f in fields)} is given more than once.")
        else:
            node[name] = value


class ResponseMapper:
    """Renders a response message (or its `response_body` field) as JSON, or as raw google.api.HttpBody data."""

    def __init__(self, output_type: type[Message], binding: Binding, options: JsonOptions) -> None:
        self.options = options
        descriptor: DescriptorT = output_type.DESCRIPTOR
        self.field: Any = None
        if binding.response_body:
            field = find_field(descriptor, binding.response_body)
            if field is None or "." in binding.response_body:
                raise ConfigurationError(
                    f"HttpRule {binding.method} {binding.template.source}: response_body {binding.response_body!r} "
                    f"is not a top-level field of {descriptor.full_name}."
                )
            self.field = field
        body_type = self.field.message_type if self.field is not None else descriptor
        self.http_body = (
            body_type is not None
            and body_type.full_name == HTTP_BODY
            and (self.field is None or not is_repeated(self.field))
        )

    def to_dict(self, message: Message) -> Any:
        options = self.options
        if self.field is not None:
            field = self.field
            if field.type == FieldDescriptor.TYPE_MESSAGE and not is_repeated(field):
                if not message.HasField(field.name):
                    return None if not options.emit_unpopulated else {}
                message = getattr(message, field.name)
            elif field.type == FieldDescriptor.TYPE_MESSAGE and not _is_map(field):
                return [self._dict(item) for item in getattr(message, field.name)]
            else:
                whole = json_format.MessageToDict(
                    message,
                    always_print_fields_with_no_presence=True,
                    preserving_proto_field_name=options.proto_names,
                    use_integers_for_enums=options.enums_as_ints,
                )
                return whole.get(field.name if options.proto_names else field.json_name)
        return self._dict(message)

    def _dict(self, message: Message) -> Any:
        options = self.options
        return json_format.MessageToDict(
            message,
            always_print_fields_with_no_presence=options.emit_unpopulated,
            preserving_proto_field_name=options.proto_names,
            use_integers_for_enums=options.enums_as_ints,
        )

    def to_json(self, message: Message) -> bytes:
        return orjson.dumps(self.to_dict(message))

    def raw(self, message: Message) -> tuple[str, bytes]:
        """(content type, data) of a google.api.HttpBody response."""
        body: Any = getattr(message, self.field.name) if self.field is not None else message
        return body.content_type or "application/octet-stream", body.data
