"""Protection against expensive operations: document limits and cost analysis.

Depth and alias limits count as strawberry's `QueryDepthLimiter` and `MaxAliasesLimiter` do, but measure each
fragment once and without recursion (strawberry's walk every path through the fragments, recursively: a fragment
spread twice at each of 25 levels takes minutes, a chain of 300 spreads exhausts the stack). The token limit is
graphql-core's parser limit, introspection is refused by graphql-core's `NoSchemaIntrospectionCustomRule`. Cost
analysis estimates what an operation will make the backends do before anything runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableDefinitionNode,
    VariableNode,
    get_named_type,
    is_composite_type,
    type_from_ast,
)

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..policies.ratelimit import RateLimit

__all__ = ["GraphQLCost", "GraphQLLimits"]

EMPTY: Mapping[str, int] = MappingProxyType({})
# Costs stop here: list sizes multiply (a client's `first: 2147483647` three levels deep is 2**93), and the cost
# goes into JSON responses (where larger integers are not exact for many clients) and to rate limit stores.
MAX_COST = 2**53 - 1


def _positive(owner: str, **values: int | None) -> None:
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigurationError(f"{owner} {name}={value!r} must be a positive integer or None.")


@dataclass(frozen=True)
class GraphQLLimits:
    """Document limits checked before execution; None turns one off.

    `max_depth` (nesting of selections), `max_aliases`, `max_root_fields` (fields of the operation's root
    selection), `max_tokens` (lexer tokens; bounds parsing and validation work), `max_query_length` (characters
    of the query text a client sends; bounds the work on long strings and names), `max_merge_work` (units of
    work graphql-core's OverlappingFieldsCanBeMerged rule may spend on a document the gateway's own linear check
    cannot clear), `max_variable_values` (values in the variables, as their types walk them: list items, input
    object fields), `max_body_size` (bytes of an HTTP request body, 413 beyond), `max_batch` (operations in one
    batched request).
    """

    max_depth: int | None = 15
    max_aliases: int | None = 30
    max_root_fields: int | None = 20
    max_tokens: int | None = 1_000
    max_query_length: int | None = 16 * 1024
    max_merge_work: int | None = 5_000
    max_variable_values: int | None = 2_000
    max_body_size: int | None = 256 * 1024
    max_batch: int | None = 10

    def __post_init__(self) -> None:
        _positive("GraphQLLimits", max_depth=self.max_depth, max_aliases=self.max_aliases,
                  max_root_fields=self.max_root_fields, max_tokens=self.max_tokens,
                  max_query_length=self.max_query_length, max_merge_work=self.max_merge_work,
                  max_variable_values=self.max_variable_values,
                  max_body_size=self.max_body_size, max_batch=self.max_batch)

    def check(self, document: DocumentNode) -> list[GraphQLError]:
        """The depth, alias and root-field limits a document breaks. Run before the specification's rules, to
        refuse cheaply what they would spend time on, so they hold for any parsed document: an unknown fragment
        counts nothing, a spread closing a cycle is left out (the rules report both).

        Each fragment is measured once, in an order where the fragments it spreads come first, without
        recursion: a chain of hundreds of spreads or a fragment spread twice at every level costs time linear in
        the document, not its stack depth or an exponential walk.
        """
        if self.max_depth is None and self.max_aliases is None and self.max_root_fields is None:
            return []
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        measured: dict[str, tuple[int, int]] = {}
        for name in _fragment_order(fragments):
            measured[name] = _measure(fragments[name].selection_set, measured)
        errors: list[GraphQLError] = []
        aliases = 0
        for operation in document.definitions:
            if not isinstance(operation, OperationDefinitionNode):
                continue
            depth, found = _measure(operation.selection_set, measured)
            aliases += found
            name = operation.name.value if operation.name else "anonymous"
            if self.max_depth is not None and depth > self.max_depth:
                errors.append(GraphQLError(f"'{name}' exceeds maximum operation depth of {self.max_depth}",
                                           operation, extensions={"code": "DEPTH_LIMIT_EXCEEDED"}))
            if self.max_root_fields is not None:
                count = _count_root_fields(operation.selection_set, fragments)
                if count > self.max_root_fields:
                    errors.append(GraphQLError(
                        f"'{name}' selects {count} root fields; at most {self.max_root_fields} are allowed.",
                        operation, extensions={"code": "ROOT_FIELDS_LIMIT_EXCEEDED"}))
        if self.max_aliases is not None and aliases > self.max_aliases:
            errors.append(GraphQLError(f"{aliases} aliases found. Allowed: {self.max_aliases}",
                                       extensions={"code": "ALIAS_LIMIT_EXCEEDED"}))
        return errors


    def check_variables(self, schema: GraphQLSchema, definitions: Iterable[VariableDefinitionNode],
                        variables: Mapping[str, Any]) -> GraphQLError | None:
        """The error if the variables hold more than `max_variable_values` values, counted as coercing them
        walks them: a list and each of its items, an input object and each of its fields (known or not); a
        custom scalar is one value whatever its JSON. Coercion costs 2 to 4 microseconds a value; counting
        stops at the limit."""
        limit = self.max_variable_values
        if limit is None or not variables:
            return None
        count = 0
        stack: list[tuple[Any, Any]] = []
        for definition in definitions:
            name = definition.variable.name.value
            if name in variables:
                stack.append((type_from_ast(schema, definition.type), variables[name]))
        while stack:
            type_, value = stack.pop()
            count += 1
            if isinstance(type_, GraphQLNonNull):
                type_ = type_.of_type
            listed = isinstance(type_, GraphQLList) and isinstance(value, list)
            fields = isinstance(type_, GraphQLInputObjectType) and isinstance(value, dict)
            # what it holds counts now, so that a list of a million items is refused before it is walked
            if count + (len(value) if listed or fields else 0) > limit:
                return GraphQLError(f"The variables hold more than {limit} values.",
                                    extensions={"code": "VARIABLE_VALUES_LIMIT_EXCEEDED"})
            if listed:
                stack.extend((type_.of_type, item) for item in value)
            elif isinstance(type_, GraphQLList):
                stack.append((type_.of_type, value))  # coerced as a list of one
            elif fields:
                known = type_.fields
                for key, item in value.items():
                    field = known.get(key)
                    stack.append((field.type if field is not None else None, item))
        return None


def _spreads(selection_set: SelectionSetNode) -> Iterator[str]:
    """The names of the fragments spread anywhere inside a selection set."""
    stack = [selection_set]
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                yield selection.name.value
            elif isinstance(selection, FieldNode | InlineFragmentNode) and selection.selection_set is not None:
                stack.append(selection.selection_set)


def _fragment_order(fragments: Mapping[str, FragmentDefinitionNode]) -> list[str]:
    """Fragment names, each after the fragments it spreads (a spread closing a cycle is left out)."""
    order: list[str] = []
    done: set[str] = set()
    for root in fragments:
        if root in done:
            continue
        path = [(root, _spreads(fragments[root].selection_set))]
        on_path = {root}
        while path:
            name, pending = path[-1]
            for spread in pending:
                if spread in fragments and spread not in done and spread not in on_path:
                    path.append((spread, _spreads(fragments[spread].selection_set)))
                    on_path.add(spread)
                    break
            else:
                path.pop()
                on_path.discard(name)
                done.add(name)
                order.append(name)
    return order


def _measure(selection_set: SelectionSetNode, fragments: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
    """(depth, aliases) of a selection set, counted as strawberry's `QueryDepthLimiter` and `MaxAliasesLimiter`
    count them: depth is that of the deepest field (its own fields at 0; nothing below an introspection field),
    aliases are counted as often as they would run (once per spread of their fragment). `fragments` holds the
    measures of the fragments it spreads; unknown ones count nothing."""
    depth = aliases = 0
    stack: list[tuple[SelectionSetNode, int, bool]] = [(selection_set, 0, True)]
    while stack:
        current, level, counted = stack.pop()
        for selection in current.selections:
            if isinstance(selection, FieldNode):
                if counted:
                    depth = max(depth, level)
                if selection.alias is not None:
                    aliases += 1
                if selection.selection_set is not None:
                    stack.append((selection.selection_set, level + 1,
                                  counted and not selection.name.value.startswith("__")))
            elif isinstance(selection, InlineFragmentNode):
                stack.append((selection.selection_set, level, counted))
            elif isinstance(selection, FragmentSpreadNode) and selection.name.value in fragments:
                inner_depth, inner_aliases = fragments[selection.name.value]
                if counted:
                    depth = max(depth, level + inner_depth)
                aliases += inner_aliases
    return depth, aliases


def _count_root_fields(selection_set: SelectionSetNode, fragments: Mapping[str, FragmentDefinitionNode]) -> int:
    """Fields of an operation's root selection (through inline fragments and spreads, each fragment once)."""
    count = 0
    seen: set[str] = set()
    stack = [selection_set]
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FieldNode):
                count += 0 if selection.name.value == "__typename" else 1
            elif isinstance(selection, InlineFragmentNode):
                stack.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in fragments and name not in seen:
                    seen.add(name)
                    stack.append(fragments[name].selection_set)
    return count


@dataclass(frozen=True)
class GraphQLCost:
    """Static cost analysis of an operation, before it runs.

    Each field returning an object costs `object_cost` (scalars `scalar_cost`), or what `field_costs` says for
    its coordinate (``{"Query.search": 10}``). A list field multiplies what is below it by its size: its size
    argument (`size_arguments`, ``first: 50``, literal or variable), else `list_sizes` (``{"User.orders": 20}``),
    else the size argument's default in the schema, else `list_size`. `maximum` is the per-request budget:
    `mode="enforce"` refuses costlier operations (``COST_LIMIT_EXCEEDED``), ``"measure"`` only reports. The cost
    is put on ``exchange.state["graphql.cost"]``, in the response's ``extensions.cost`` when `expose`, and, with
    `rate_limit`, charged to that `RateLimit` (a request counts as many hits as its cost). A cost is at most
    ``MAX_COST`` (2**53 - 1).
    """

    maximum: int | None = None
    mode: Literal["enforce", "measure"] = "enforce"
    object_cost: int = 1
    scalar_cost: int = 0
    field_costs: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    list_size: int = 10
    list_sizes: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    size_arguments: tuple[str, ...] = ("first", "last", "limit", "pageSize", "size")
    rate_limit: RateLimit | None = None
    expose: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("enforce", "measure"):
            raise ConfigurationError(f"GraphQLCost mode={self.mode!r}: use 'enforce' or 'measure'.")
        _positive("GraphQLCost", maximum=self.maximum)
        object.__setattr__(self, "field_costs", MappingProxyType(dict(self.field_costs)))
        object.__setattr__(self, "list_sizes", MappingProxyType(dict(self.list_sizes)))

    def measure(self, schema: GraphQLSchema, operation: OperationDefinitionNode,
                fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any]) -> int:
        root = schema.get_root_type(operation.operation)
        if root is None:
            return 0
        # A fragment's cost does not depend on where it is spread (its type condition is its parent): measured
        # once, so a fragment spread twice at each of n levels costs n measures, not 2**n.
        measured: dict[str, int] = {}
        return self._selection(schema, root, operation.selection_set, fragments, variables, (), measured)

    def _selection(self, schema: GraphQLSchema, parent: Any, selection_set: SelectionSetNode | None,
                   fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any],
                   spread: tuple[str, ...], measured: dict[str, int]) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self._field(schema, parent, selection, fragments, variables, spread, measured)
            elif isinstance(selection, InlineFragmentNode):
                target = parent
                if selection.type_condition is not None:
                    target = schema.get_type(selection.type_condition.name.value)
                total += self._selection(schema, target, selection.selection_set, fragments, variables, spread,
                                         measured)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if name in measured:
                    total += measured[name]
                elif fragment is not None and name not in spread:
                    target = schema.get_type(fragment.type_condition.name.value)
                    cost = self._selection(schema, target, fragment.selection_set, fragments, variables,
                                           (*spread, name), measured)
                    measured[name] = cost
                    total += cost
        return min(MAX_COST, total)

    def _field(self, schema: GraphQLSchema, parent: Any, node: FieldNode,
               fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any],
               spread: tuple[str, ...], measured: dict[str, int]) -> int:
        name = node.name.value
        if name.startswith("__") or not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 0
        definition = parent.fields.get(name)
        if definition is None:
            return 0
        coordinate = f"{parent.name}.{name}"
        named = get_named_type(definition.type)
        composite = is_composite_type(named)
        own = self.field_costs.get(coordinate, self.object_cost if composite else self.scalar_cost)
        field_type = definition.type.of_type if isinstance(definition.type, GraphQLNonNull) else definition.type
        size = self._size(node, definition, coordinate, variables) if isinstance(field_type, GraphQLList) else 1
        children = (self._selection(schema, named, node.selection_set, fragments, variables, spread, measured)
                    if composite else 0)
        return min(MAX_COST, (own * size if composite else own) + size * children)

    def _size(self, node: FieldNode, definition: GraphQLField, coordinate: str, variables: Mapping[str, Any]) -> int:
        for argument in node.arguments or ():
            if argument.name.value in self.size_arguments:
                value = argument.value
                if isinstance(value, IntValueNode):
                    return max(0, int(value.value))
                if isinstance(value, VariableNode):
                    found = variables.get(value.name.value)
                    if isinstance(found, int) and not isinstance(found, bool):
                        return max(0, found)
        if coordinate in self.list_sizes:
            return self.list_sizes[coordinate]
        for name, declared in definition.args.items():
            default = declared.default_value
            if name in self.size_arguments and isinstance(default, int) and not isinstance(default, bool):
                return max(0, default)
        return self.list_size

    async def charge(self, exchange: Exchange, cost: int) -> None:
        """Charge `rate_limit` with this request's cost (at least 1); raises `RateLimited` past the limit."""
        if self.rate_limit is None:
            return
        await self.rate_limit.charge(exchange, max(1, cost))


def cost_limit_error(cost: int, maximum: int) -> GraphQLError:
    return GraphQLError(f"The operation costs {cost}, more than the maximum of {maximum}.",
                        extensions={"code": "COST_LIMIT_EXCEEDED", "cost": cost, "maximum": maximum})

