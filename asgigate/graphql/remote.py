"""Remote schema composition: expose the root fields of other GraphQL services in the gateway's schema.

A `RemoteSchema` is read once at build time (introspection, or an SDL file or text), its types renamed when asked
(`prefix`, `rename_types`), and merged into the strawberry schema's graphql-core schema: its root fields (renamed
or grouped under a `namespace` field) forward the client's selection to the service in one request each, with
the request's credentials relayed. `Extend` adds a field to any type of the composed schema, resolved by gateway
code: a remote type gains fields from another backend (`requires` names the remote fields its resolver reads),
and a local type can reach a remote service with `RemoteSchema.forward`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from copy import copy
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from graphql import (
    BooleanValueNode,
    DocumentNode,
    EnumValueNode,
    FieldNode,
    FloatValueNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLArgument,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    GraphQLUnionType,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NameNode,
    NullValueNode,
    ObjectValueNode,
    SchemaDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    TypeDefinitionNode,
    ValueNode,
    VariableNode,
    Visitor,
    build_ast_schema,
    build_client_schema,
    get_introspection_query,
    get_named_type,
    is_composite_type,
    parse,
    parse_type,
    print_ast,
    print_schema,
    type_from_ast,
    validate_schema,
    visit,
)
from graphql.error import GraphQLSyntaxError

from ..errors import ConfigurationError
from ..upstreams import Upstream
from .backends import BackendCallError

if TYPE_CHECKING:
    from .context import GraphQLContext

__all__ = ["Extend", "RemoteSchema"]

BUILT_IN = frozenset({"String", "Int", "Float", "Boolean", "ID"})
Resolver = Callable[..., Awaitable[Any] | Any]


def _named(node: Any, name: str) -> Any:
    new_name = NameNode(value=name)
    if dataclasses.is_dataclass(node):
        return dataclasses.replace(node, name=new_name)  # type: ignore[type-var]  # graphql-core 3.3: frozen
    clone = copy(node)
    clone.name = new_name
    return clone


class _Rename(Visitor):
    def __init__(self, names: Mapping[str, str]) -> None:
        super().__init__()
        self.names = names

    def _leave(self, node: Any, *_: Any) -> Any:
        new = self.names.get(node.name.value)
        return _named(node, new) if new else None

    leave_named_type = leave_object_type_definition = leave_interface_type_definition = _leave
    leave_union_type_definition = leave_enum_type_definition = leave_input_object_type_definition = _leave
    leave_scalar_type_definition = _leave


def _by_key(source: Any, info: GraphQLResolveInfo[Any], **_: Any) -> Any:
    """Remote values are the service's JSON, keyed by response name (the alias when there is one)."""
    if isinstance(source, Mapping):
        return source.get(info.path.key)
    return None


@dataclasses.dataclass(frozen=True)
class Extend:
    """A field added to a type of the composed schema: ``Extend("CatalogProduct", "owner", "User", owner_of,
    requires="ownerId")``. `type` is a type reference (``"[User!]!"``); `resolve(parent, info, **args)` gets
    the parent value (the remote JSON for a remote type, the object for a local one); `requires` is a selection
    the gateway adds when forwarding a remote parent so the resolver can read it; `args` declares arguments
    as ``{"first": "Int"}``. A field added to a local type is added to that graphql-core type object, which the
    strawberry schema given to `GraphQL` shares."""

    type_name: str
    field_name: str
    type: str
    resolve: Resolver
    requires: str = ""
    args: Mapping[str, str] = dataclasses.field(default_factory=dict)
    description: str | None = None


class RemoteSchema:
    """Another GraphQL service composed into the gateway's schema: ``RemoteSchema(catalog, prefix="Catalog")``.

    `upstream` is its endpoint (``Upstream("http://catalog:4000/graphql")``). Its schema comes from `sdl` (a path
    to an SDL file, or SDL text) or otherwise from introspection at build time. `prefix` renames its types
    (``Product`` → ``CatalogProduct``), `rename_types` chooses names one by one; `include` limits the root
    fields exposed, `rename_fields` renames them (``{"product": "catalogProduct"}``), `field_prefix` prefixes
    them all; `namespace` instead puts them all under one root field (``{ catalog { product(id: 1) { name } } }``,
    one request to the service for the whole namespace). `headers` are sent with every request besides the
    relayed credentials; `timeout` bounds each call.
    """

    def __init__(
        self,
        upstream: Upstream,
        *,
        sdl: str | os.PathLike[str] | None = None,
        prefix: str = "",
        rename_types: Mapping[str, str] | None = None,
        include: Sequence[str] | None = None,
        rename_fields: Mapping[str, str] | None = None,
        field_prefix: str = "",
        namespace: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> None:
        if not isinstance(upstream, Upstream):
            raise ConfigurationError(f"RemoteSchema needs an Upstream, got {upstream!r}.")
        if namespace is not None and (field_prefix or rename_fields):
            raise ConfigurationError("RemoteSchema namespace= keeps the service's root field names; drop "
                                     "field_prefix= and rename_fields=.")
        self.upstream = upstream
        self.sdl = sdl
        self.prefix = prefix
        self.rename_types = dict(rename_types or {})
        self.include = set(include) if include is not None else None
        self.rename_fields = dict(rename_fields or {})
        self.field_prefix = field_prefix
        self.namespace = namespace
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.schema: GraphQLSchema | None = None  # the service's schema, types renamed
        self.original: dict[str, str] = {}  # renamed type name -> the service's name
        self.renamed: dict[str, str] = {}
        self.extensions: dict[str, dict[str, Extend]] = {}  # set by compose(): gateway fields on remote types

    # --- loading --------------------------------------------------------------------------------------------

    def _read_sdl(self) -> str:
        if self.sdl is not None:
            text = os.fspath(self.sdl)
            if isinstance(self.sdl, os.PathLike) or (not text.lstrip().startswith(("type", "schema", '"', "#",
                                                                                    "scalar", "enum", "union",
                                                                                    "interface", "input",
                                                                                    "directive", "extend"))
                                                     and os.path.isfile(text)):
                try:
                    with open(text, encoding="utf-8") as handle:
                        return handle.read()
                except OSError as exc:
                    raise ConfigurationError(f"RemoteSchema SDL file {text!r}: {exc}") from None
            return text
        try:
            response = httpx.post(self.upstream.url, json={"query": get_introspection_query(descriptions=True)},
                                  headers={"accept": "application/json", **self.headers},
                                  timeout=self.timeout or 10.0)
            body = orjson.loads(response.content)
            return print_schema(build_client_schema(body["data"]))
        except (httpx.HTTPError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigurationError(
                f"RemoteSchema {self.upstream.name!r}: introspection of {self.upstream.url} failed "
                f"({type(exc).__name__}: {exc}); give its schema with sdl=.") from None

    def load(self) -> GraphQLSchema:
        """Read the service's schema and rename its types; done once, at build time."""
        if self.schema is not None:
            return self.schema
        text = self._read_sdl()
        try:
            document = parse(text)
        except GraphQLSyntaxError as exc:
            raise ConfigurationError(
                f"RemoteSchema {self.upstream.name!r}: SDL does not parse: {exc.message}") from None
        names = {}
        for definition in document.definitions:
            if isinstance(definition, TypeDefinitionNode) and definition.name.value not in BUILT_IN:
                name = definition.name.value
                names[name] = self.rename_types.get(name, self.prefix + name)
        has_schema = any(isinstance(d, SchemaDefinitionNode) for d in document.definitions)
        if not has_schema:  # roots are found by name ("Query"); renamed, they must be declared
            roots = build_ast_schema(document, assume_valid_sdl=True)
            declared = " ".join(f"{op}: {names.get(t.name, t.name)}" for op, t in (
                ("query", roots.query_type), ("mutation", roots.mutation_type),
                ("subscription", roots.subscription_type)) if t is not None)
            if declared:
                document = DocumentNode(definitions=(*document.definitions,
                                                     *parse(f"schema {{ {declared} }}").definitions))
        document = visit(document, _Rename(names))
        try:
            schema = build_ast_schema(document, assume_valid_sdl=True)
        except (TypeError, GraphQLSyntaxError) as exc:
            raise ConfigurationError(f"RemoteSchema {self.upstream.name!r}: {exc}") from None
        self.renamed = dict(names)
        self.original = {new: old for old, new in names.items()}
        for named in schema.type_map.values():
            if named.name.startswith("__"):
                continue
            if isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
                for field in named.fields.values():
                    field.resolve = _by_key
            if isinstance(named, GraphQLInterfaceType | GraphQLUnionType):
                named.resolve_type = self._resolve_type
        self.schema = schema
        return schema

    def _resolve_type(self, value: Any, info: GraphQLResolveInfo[Any], abstract: Any) -> str | None:
        typename = value.get("__typename") if isinstance(value, Mapping) else None
        return self.renamed.get(typename, typename) if isinstance(typename, str) else None

    # --- forwarding -----------------------------------------------------------------------------------------

    def root_fields(self, operation: str) -> dict[str, tuple[str, GraphQLField]]:
        """Exposed name -> (the service's field name, its field), for one root type."""
        schema = self.load()
        root = schema.query_type if operation == "query" else schema.mutation_type
        if root is None:
            return {}
        found = {}
        for name, field in root.fields.items():
            if self.include is not None and name not in self.include:
                continue
            found[self.rename_fields.get(name, self.field_prefix + name)] = (name, field)
        return found

    def forward(self, field: str, arguments: Callable[[Any], Mapping[str, Any]] | None = None,
                *, operation: str = "query") -> Resolver:
        """A resolver forwarding the selection to the service's root `field`, with arguments made from the
        parent value: ``Extend("User", "favorite", "CatalogProduct", catalog.forward("product", lambda user:
        {"id": user.favorite_id}))``."""

        async def resolve(parent: Any, info: GraphQLResolveInfo[Any], **_: Any) -> Any:
            return await self.call_field(info, field, dict(arguments(parent)) if arguments else {}, operation)

        return resolve

    def _root_resolver(self, remote_name: str, operation: str) -> Resolver:
        async def resolve(parent: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
            return await self.call_field(info, remote_name, args, operation)

        return resolve

    def _namespace_resolver(self, operation: str) -> Resolver:
        async def resolve(parent: Any, info: GraphQLResolveInfo[Any], **_: Any) -> Any:
            text = self.selection_text(info, operation)
            return await self._send(info, f"{operation} {text}", {})

        return resolve

    async def call_field(self, info: GraphQLResolveInfo[Any], remote_name: str, args: Mapping[str, Any],
                         operation: str) -> Any:
        schema = self.load()
        root = schema.query_type if operation == "query" else schema.mutation_type
        if root is None or remote_name not in root.fields:
            raise ConfigurationError(f"RemoteSchema {self.upstream.name!r} has no {operation} field {remote_name!r}.")
        definition = root.fields[remote_name]
        declarations, arguments, variables = [], [], {}
        for index, (name, value) in enumerate(args.items()):
            argument = definition.args.get(name)
            if argument is None:
                continue
            variable = f"a{index}"
            declarations.append(f"${variable}: {self._type_text(argument.type)}")
            arguments.append(f"{name}: ${variable}")
            variables[variable] = value
        selection = ""
        if is_composite_type(get_named_type(definition.type)):
            selection = " " + self.selection_text(info, operation)
        head = f"{operation}({', '.join(declarations)})" if declarations else operation
        call = f"{remote_name}({', '.join(arguments)})" if arguments else remote_name
        data = await self._send(info, f"{head} {{ r: {call}{selection} }}", variables)
        return data.get("r") if isinstance(data, Mapping) else None

    async def _send(self, info: GraphQLResolveInfo[Any], query: str, variables: Mapping[str, Any]) -> Any:
        from .backends import graphql_call

        context: GraphQLContext | None = info.context if hasattr(info.context, "relayed") else None
        headers = {**(context.relayed() if context is not None else {}), **self.headers}
        body = await graphql_call(self.upstream, query, variables, headers=headers, timeout=self.timeout)
        data = body.get("data")
        errors = body.get("errors") or []
        if errors and isinstance(data, Mapping) and all(value is None for value in data.values()):
            message = errors[0].get("message", "error") if isinstance(errors[0], Mapping) else "error"
            raise BackendCallError(f"{self.upstream.name}: {message}", code="UPSTREAM_ERROR",
                                   upstream=self.upstream.name, errors=errors)
        return data

    def _type_text(self, type_: Any) -> str:
        if isinstance(type_, GraphQLNonNull):
            return self._type_text(type_.of_type) + "!"
        if isinstance(type_, GraphQLList):
            return f"[{self._type_text(type_.of_type)}]"
        name: str = type_.name
        return self.original.get(name, name)

    def selection_text(self, info: GraphQLResolveInfo[Any], operation: str) -> str:
        """The selection below the current field, as the service names things."""
        parts: list[str] = []
        for node in info.field_nodes:
            if node.selection_set is not None:
                parts.append(self._selection(node.selection_set, info))
        return "{ __typename " + " ".join(parts) + " }"

    def _selection(self, selection_set: SelectionSetNode, info: GraphQLResolveInfo[Any]) -> str:
        parent_type = get_named_type(info.return_type)
        return self._selections(selection_set, parent_type, info)

    def _selections(self, selection_set: SelectionSetNode, parent: Any, info: GraphQLResolveInfo[Any]) -> str:
        out: list[str] = []
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                out.append(self._field(selection, parent, info))
            elif isinstance(selection, InlineFragmentNode):
                target = parent
                condition = ""
                if selection.type_condition is not None:
                    name = selection.type_condition.name.value
                    target = info.schema.get_type(name)
                    condition = f" on {self.original.get(name, name)}"
                out.append(f"...{condition} {{ __typename {self._selections(selection.selection_set, target, info)} }}")
            elif isinstance(selection, FragmentSpreadNode):
                fragment: FragmentDefinitionNode | None = info.fragments.get(selection.name.value)
                if fragment is None:
                    continue
                name = fragment.type_condition.name.value
                target = info.schema.get_type(name)
                out.append(f"... on {self.original.get(name, name)} "
                           f"{{ __typename {self._selections(fragment.selection_set, target, info)} }}")
        return " ".join(part for part in out if part)

    def _field(self, node: FieldNode, parent: Any, info: GraphQLResolveInfo[Any]) -> str:
        name = node.name.value
        if name.startswith("__"):
            return ""
        parent_name = getattr(parent, "name", "")
        added = self.extensions.get(parent_name, {}).get(name)
        if added is not None:
            return added.requires  # resolved by the gateway: only what its resolver reads goes to the service
        alias = f"{node.alias.value}: " if node.alias else ""
        args = ""
        if node.arguments:
            args = "(" + ", ".join(f"{a.name.value}: {print_ast(_literal(a.value, _variables(info)))}"
                                   for a in node.arguments) + ")"
        sub = ""
        if node.selection_set is not None:
            field_type = None
            if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType) and name in parent.fields:
                field_type = get_named_type(parent.fields[name].type)
            sub = f" {{ __typename {self._selections(node.selection_set, field_type, info)} }}"
        return f"{alias}{name}{args}{sub}"

    def __repr__(self) -> str:
        return f"RemoteSchema({self.upstream.name!r})"


def _variables(info: GraphQLResolveInfo[Any]) -> Mapping[str, Any]:
    values: Any = info.variable_values
    return getattr(values, "coerced", values)  # type: ignore[no-any-return]


def _literal(value: ValueNode, variables: Mapping[str, Any]) -> ValueNode:
    """The argument with the client's variables substituted, so the forwarded query declares none of its own."""
    if isinstance(value, VariableNode):
        return _to_ast(variables.get(value.name.value))
    if isinstance(value, ListValueNode):
        return ListValueNode(values=tuple(_literal(item, variables) for item in value.values))
    if isinstance(value, ObjectValueNode):
        fields = tuple(dataclasses.replace(f, value=_literal(f.value, variables)) if dataclasses.is_dataclass(f)
                       else f for f in value.fields)
        return ObjectValueNode(fields=fields)
    return value


def _to_ast(value: Any) -> ValueNode:
    from graphql import ObjectFieldNode

    if value is None:
        return NullValueNode()
    if isinstance(value, bool):
        return BooleanValueNode(value=value)
    if isinstance(value, int):
        return IntValueNode(value=str(value))
    if isinstance(value, float):
        return FloatValueNode(value=repr(value))
    if isinstance(value, str):
        return StringValueNode(value=value)
    if isinstance(value, list | tuple):
        return ListValueNode(values=tuple(_to_ast(item) for item in value))
    if isinstance(value, Mapping):
        return ObjectValueNode(fields=tuple(ObjectFieldNode(name=NameNode(value=str(k)), value=_to_ast(v))
                                            for k, v in value.items()))
    if hasattr(value, "name"):  # an enum member
        return EnumValueNode(value=str(value.name))
    return StringValueNode(value=str(value))


# --- composition ----------------------------------------------------------------------------------------------

def compose(local: GraphQLSchema, remotes: Sequence[RemoteSchema], extend: Sequence[Extend]) -> GraphQLSchema:
    """The local schema with the remotes' root fields and types, and the extension fields, merged in."""
    types: dict[str, GraphQLNamedType] = {name: t for name, t in local.type_map.items() if not name.startswith("__")}
    roots = {"query": local.query_type, "mutation": local.mutation_type}
    root_names = {t.name for t in roots.values() if t is not None}
    added: dict[str, dict[str, GraphQLField]] = {"query": {}, "mutation": {}}
    for remote in remotes:
        schema = remote.load()
        remote_roots = {schema.query_type.name if schema.query_type else "", schema.mutation_type.name
                        if schema.mutation_type else ""}
        for name, named in schema.type_map.items():
            if name.startswith("__") or name in BUILT_IN:
                continue
            if name in remote_roots and remote.namespace is None:
                continue
            if name in types and types[name] is not named:
                raise ConfigurationError(f"{remote!r}: type {name!r} is already defined; rename it with prefix= or "
                                         "rename_types=.")
            types[name] = named
        for operation in ("query", "mutation"):
            if remote.namespace is not None:
                root = schema.query_type if operation == "query" else schema.mutation_type
                if root is not None:
                    if remote.namespace in added[operation]:
                        raise ConfigurationError(f"The {operation} field {remote.namespace!r} is defined twice.")
                    added[operation][remote.namespace] = GraphQLField(
                        GraphQLNonNull(root), resolve=remote._namespace_resolver(operation),
                        description=f"The {remote.upstream.name} service.")
                continue
            for exposed, (remote_name, field) in remote.root_fields(operation).items():
                if exposed in added[operation]:
                    raise ConfigurationError(f"The {operation} field {exposed!r} is defined twice; use "
                                             "rename_fields=, field_prefix= or namespace=.")
                added[operation][exposed] = GraphQLField(
                    field.type, args=field.args, resolve=remote._root_resolver(remote_name, operation),
                    description=field.description, deprecation_reason=field.deprecation_reason)
    new_roots: dict[str, GraphQLObjectType | None] = {}
    for operation, root in roots.items():
        fields = added[operation]
        if root is None and not fields:
            new_roots[operation] = None
            continue
        current = dict(root.fields) if root is not None else {}
        for name in fields:
            if name in current:
                raise ConfigurationError(f"The {operation} field {name!r} is defined twice; use rename_fields=, "
                                         "field_prefix= or namespace=.")
        merged = {**current, **fields}
        new_roots[operation] = GraphQLObjectType(
            root.name if root is not None else operation.capitalize(), fields=merged,
            description=root.description if root is not None else None,
            extensions=root.extensions if root is not None else None)
    for name in root_names:
        types.pop(name, None)
    remote_types = {name: remote for remote in remotes for name in remote.original}
    for item in extend:
        owner = new_roots["query"] if item.type_name == getattr(new_roots["query"], "name", None) else \
            types.get(item.type_name)
        if not isinstance(owner, GraphQLObjectType):
            raise ConfigurationError(f"Extend: {item.type_name!r} is not an object type of the composed schema.")
        if item.field_name in owner.fields:
            raise ConfigurationError(f"Extend: {item.type_name}.{item.field_name} already exists.")
        probe = GraphQLSchema(query=new_roots["query"], types=list(types.values()), assume_valid=True)
        try:
            field_type: Any = type_from_ast(probe, parse_type(item.type))
            args = {name: GraphQLArgument(type_from_ast(probe, parse_type(text)))  # type: ignore[arg-type]
                    for name, text in item.args.items()}
        except GraphQLSyntaxError as exc:
            raise ConfigurationError(f"Extend {item.type_name}.{item.field_name}: {exc.message}") from None
        if field_type is None or any(arg.type is None for arg in args.values()):
            raise ConfigurationError(f"Extend {item.type_name}.{item.field_name}: unknown type in {item.type!r} "
                                     f"or its args.")
        if item.requires:
            try:
                parse("{ " + item.requires + " }")
            except GraphQLSyntaxError as exc:
                raise ConfigurationError(f"Extend requires={item.requires!r}: {exc.message}") from None
        owner.fields[item.field_name] = GraphQLField(field_type, args=args, resolve=item.resolve,
                                                     description=item.description)
        extended = remote_types.get(item.type_name)
        if extended is not None:
            extended.extensions.setdefault(item.type_name, {})[item.field_name] = item
    composed = GraphQLSchema(query=new_roots["query"], mutation=new_roots["mutation"],
                             subscription=local.subscription_type, types=list(types.values()),
                             directives=local.directives, description=local.description)
    errors = validate_schema(composed)
    if errors:
        raise ConfigurationError("The composed schema is not valid: " + "; ".join(e.message for e in errors[:5]))
    return composed

