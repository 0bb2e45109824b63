"""Protection against expensive operations: document limits and cost analysis.

Depth and alias limits are strawberry's own validators (`QueryDepthLimiter`, `MaxAliasesLimiter`), the token
limit is graphql-core's parser limit, introspection is refused by graphql-core's `NoSchemaIntrospectionCustomRule`.
Cost analysis estimates what an operation will make the backends do before anything runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from graphql import (
    ASTValidationRule,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
    VariableNode,
    get_named_type,
    is_composite_type,
)
from strawberry.extensions.max_aliases import create_validator as alias_validator
from strawberry.extensions.query_depth_limiter import create_validator as depth_validator

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..exchange import Exchange
    from ..policies.ratelimit import RateLimit

__all__ = ["GraphQLCost", "GraphQLLimits"]

EMPTY: Mapping[str, int] = MappingProxyType({})


def _positive(owner: str, **values: int | None) -> None:
    for name, value in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigurationError(f"{owner} {name}={value!r} must be a positive integer or None.")


@dataclass(frozen=True)
class GraphQLLimits:
    """Document limits checked before execution; None turns one off.

    `max_depth` (nesting of selections), `max_aliases`, `max_root_fields` (fields of the operation's root
    selection), `max_tokens` (lexer tokens; bounds parsing work), `max_body_size` (bytes of an HTTP request
    body, 413 beyond), `max_batch` (operations in one batched request).
    """

    max_depth: int | None = 15
    max_aliases: int | None = 30
    max_root_fields: int | None = 20
    max_tokens: int | None = 10_000
    max_body_size: int | None = 256 * 1024
    max_batch: int | None = 10

    def __post_init__(self) -> None:
        _positive("GraphQLLimits", max_depth=self.max_depth, max_aliases=self.max_aliases,
                  max_root_fields=self.max_root_fields, max_tokens=self.max_tokens,
                  max_body_size=self.max_body_size, max_batch=self.max_batch)

    def rules(self) -> list[type[ASTValidationRule]]:
        rules: list[type[ASTValidationRule]] = []
        if self.max_depth is not None:
            rules.append(depth_validator(self.max_depth, None))
        if self.max_aliases is not None:
            rules.append(alias_validator(self.max_aliases))
        if self.max_root_fields is not None:
            rules.append(_root_fields_validator(self.max_root_fields))
        return rules


def _root_fields_validator(maximum: int) -> type[ValidationRule]:
    class MaxRootFields(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            fragments = {d.name.value: d for d in self.context.document.definitions
                         if isinstance(d, FragmentDefinitionNode)}
            count = _count_root_fields(node.selection_set, fragments, set())
            if count > maximum:
                name = node.name.value if node.name else "anonymous"
                self.report_error(GraphQLError(
                    f"'{name}' selects {count} root fields; at most {maximum} are allowed.", node,
                    extensions={"code": "ROOT_FIELDS_LIMIT_EXCEEDED"}))

    return MaxRootFields


def _count_root_fields(selection_set: SelectionSetNode, fragments: dict[str, FragmentDefinitionNode],
                       seen: set[str]) -> int:
    count = 0
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            count += 0 if selection.name.value == "__typename" else 1
        elif isinstance(selection, InlineFragmentNode):
            count += _count_root_fields(selection.selection_set, fragments, seen)
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in seen:
                seen.add(name)
                count += _count_root_fields(fragments[name].selection_set, fragments, seen)
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
    `rate_limit`, charged to that `RateLimit` (a request counts as many hits as its cost).
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
        return self._selection(schema, root, operation.selection_set, fragments, variables, ())

    def _selection(self, schema: GraphQLSchema, parent: Any, selection_set: SelectionSetNode | None,
                   fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any],
                   spread: tuple[str, ...]) -> int:
        if selection_set is None:
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                total += self._field(schema, parent, selection, fragments, variables, spread)
            elif isinstance(selection, InlineFragmentNode):
                target = parent
                if selection.type_condition is not None:
                    target = schema.get_type(selection.type_condition.name.value)
                total += self._selection(schema, target, selection.selection_set, fragments, variables, spread)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is not None and name not in spread:
                    target = schema.get_type(fragment.type_condition.name.value)
                    total += self._selection(schema, target, fragment.selection_set, fragments, variables,
                                             (*spread, name))
        return total

    def _field(self, schema: GraphQLSchema, parent: Any, node: FieldNode,
               fragments: Mapping[str, FragmentDefinitionNode], variables: Mapping[str, Any],
               spread: tuple[str, ...]) -> int:
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
        children = self._selection(schema, named, node.selection_set, fragments, variables, spread) if composite else 0
        return (own * size if composite else own) + size * children

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

