"""A fast check that the fields of a document can be merged, run instead of graphql-core's rule when it can tell.

graphql-core's OverlappingFieldsCanBeMerged compares fields pair by pair: a document with many fields of one
response name, or many fragments spread side by side, makes it do quadratic work (seconds for 10,000 tokens of
repeated fields; for a Relay-style document of 7,000 tokens, 250 ms, more than all the other rules). This module
answers, in time about linear in the document, whether any selection set could hold two fields that cannot be
merged. It checks the specification's FieldsInSetCanMerge and SameResponseShape on sets of fields of one response
name rather than on pairs: the fields of a set that must agree are each compared with one of them, and each set is
checked once.

It is a filter in front of the rule, not a replacement: "no" lets the gateway skip the rule, "maybe" makes the
rule run (with its work budget) and report the conflicts with its own messages. So it must never miss a conflict
the rule finds, while it may suspect some the rule does not (it compares argument values a little more strictly,
and some pairs the rule leaves out). It answers "maybe" for what it does not model (``@stream``, fragment
arguments, repeated names) and once its work passes its budget.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Any

from graphql import (
    BooleanValueNode,
    DocumentNode,
    EnumValueNode,
    FieldNode,
    FloatValueNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    NullValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OverlappingFieldsCanBeMergedRule,
    SchemaMetaFieldDef,
    SelectionSetNode,
    StringValueNode,
    TypeMetaFieldDef,
    TypeNameMetaFieldDef,
    ValidationContext,
    ValueNode,
    VariableNode,
    get_named_type,
    is_composite_type,
    is_leaf_type,
)
from graphql.validation import ASTValidationRule
from graphql.validation.rules import overlapping_fields_can_be_merged
from graphql.validation.validate import ValidationAbortedError

from ..errors import ConfigurationError

__all__ = ["bounded_rule", "fields_may_conflict"]

_UNSET: Any = object()
# graphql-core 3.3.2 bounds the rule's work (in a module global); earlier versions can take minutes on one document.
_BUDGETED = "remaining_complexity_budget" in getattr(
    getattr(overlapping_fields_can_be_merged, "RuleContext", None), "__slots__", ())


class _Maybe(Exception):
    """The check cannot rule out a conflict (something it does not model, or its budget is spent)."""


def fields_may_conflict(schema: GraphQLSchema, document: DocumentNode, budget: int) -> bool:
    """False when no selection set of `document` holds two fields that OverlappingFieldsCanBeMerged would
    report; True when some may, or when finding out takes more than `budget` units of work (a unit is a field
    or selection visited once: well under a microsecond)."""
    try:
        _Check(schema, document, budget).run()
    except (_Maybe, RecursionError):
        return True
    return False


class _Field:
    """A field node selected on a parent type (None where unknown), as the rule sees it; one object per pair,
    so that sets of fields can be keyed by identity (nodes hash their whole subtree)."""

    __slots__ = ("call", "definition", "name", "node", "parent", "shape")

    def __init__(self, node: FieldNode, parent: GraphQLNamedType | None) -> None:
        self.node = node
        self.parent = parent
        self.name = node.alias.value if node.alias else node.name.value
        # The definition the rule finds: none for meta fields (__typename) or on a type without fields.
        self.definition: GraphQLField | None = (
            parent.fields.get(node.name.value) if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType)
            else None)
        self.call: Hashable = _UNSET
        self.shape: Hashable = _UNSET


# A selection set at one level: its fields (through inline fragments) and the names of the fragments it spreads.
_Level = tuple[list[_Field], list[str]]


class _Check:
    def __init__(self, schema: GraphQLSchema, document: DocumentNode, budget: int) -> None:
        self.schema = schema
        self.document = document
        self.budget = budget
        self.fragments: dict[str, FragmentDefinitionNode] = {}
        for definition in document.definitions:
            if isinstance(definition, FragmentDefinitionNode):
                name = definition.name.value
                # Fragment arguments bring variable scopes the check does not model; a repeated name is an error
                # of its own, and which definition the rule would use is not worth modelling.
                if definition.variable_definitions or name in self.fragments:
                    raise _Maybe
                self.fragments[name] = definition
        self.fields: dict[tuple[int, int], _Field] = {}
        self.levels: dict[tuple[int, int], _Level] = {}
        self.expanded: dict[tuple[int, int], list[_Field]] = {}
        self.checked: set[Hashable] = set()
        # Sets of fields of one response name to check: (fields, merge, the merge check covers their children).
        self.pending: list[tuple[list[_Field], bool, bool]] = []

    def spend(self, units: int) -> None:
        self.budget -= units
        if self.budget < 0:
            raise _Maybe

    def run(self) -> None:
        for selection_set, parent in self._selection_sets():
            fields, spreads = self._level(selection_set, parent)
            if not fields and len({name for name in spreads if name in self.fragments}) < 2:
                continue  # all its fields come from one fragment, checked where that fragment is defined
            self._queue(self._expand(selection_set, parent), merge=True)
            while self.pending:
                group, merge, covered = self.pending.pop()
                if merge:
                    self._can_merge(group)
                else:
                    self._same_shape(group, covered)

    def _selection_sets(self) -> Iterator[tuple[SelectionSetNode, GraphQLNamedType | None]]:
        """Every selection set the rule checks on its own, with the parent type graphql-core's TypeInfo gives
        it: those of operations, fragment definitions and fields (an inline fragment's belongs to its parent)."""
        stack: list[tuple[SelectionSetNode, GraphQLNamedType | None, bool]] = []
        for node in self.document.definitions:
            if isinstance(node, OperationDefinitionNode):
                stack.append((node.selection_set, self.schema.get_root_type(node.operation), True))
            elif isinstance(node, FragmentDefinitionNode):
                stack.append((node.selection_set, self._composite(node.type_condition.name.value), True))
        while stack:
            selection_set, parent, own = stack.pop()
            if own:
                yield selection_set, parent
            self.spend(len(selection_set.selections))
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    if selection.selection_set is not None:
                        definition = _type_info_field(self.schema, parent, selection.name.value)
                        named = get_named_type(definition.type) if definition is not None else None
                        stack.append((selection.selection_set, named if is_composite_type(named) else None, True))
                elif isinstance(selection, InlineFragmentNode):
                    condition = selection.type_condition
                    stack.append((selection.selection_set,
                                  self._composite(condition.name.value) if condition else parent, False))

    def _composite(self, name: str) -> GraphQLNamedType | None:
        found = self.schema.get_type(name)
        return found if is_composite_type(found) else None

    def _field(self, node: FieldNode, parent: GraphQLNamedType | None) -> _Field:
        key = (id(node), id(parent))
        found = self.fields.get(key)
        if found is None:
            found = self.fields[key] = _Field(node, parent)
        return found

    def _level(self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None) -> _Level:
        """The fields of a selection set through its inline fragments, and the fragments it spreads, as the rule
        collects them (an inline fragment's type condition is looked up as it is, valid or not)."""
        key = (id(selection_set), id(parent))
        found = self.levels.get(key)
        if found is not None:
            return found
        fields: list[_Field] = []
        spreads: list[str] = []
        stack = [(selection_set, parent)]
        while stack:
            current, current_parent = stack.pop()
            self.spend(len(current.selections))
            for selection in current.selections:
                if isinstance(selection, FieldNode):
                    if selection.directives and any(d.name.value == "stream" for d in selection.directives):
                        raise _Maybe  # the rule compares overlapping @stream fields by their own arguments
                    fields.append(self._field(selection, current_parent))
                elif isinstance(selection, InlineFragmentNode):
                    condition = selection.type_condition
                    stack.append((selection.selection_set,
                                  self.schema.get_type(condition.name.value) if condition else current_parent))
                elif isinstance(selection, FragmentSpreadNode):
                    if selection.arguments:
                        raise _Maybe
                    spreads.append(selection.name.value)
        self.levels[key] = fields, spreads
        return fields, spreads

    def _expand(self, selection_set: SelectionSetNode, parent: GraphQLNamedType | None) -> list[_Field]:
        """The fields of a selection set with those of every fragment it spreads, directly or through other
        fragments at the same level (each fragment once)."""
        key = (id(selection_set), id(parent))
        found = self.expanded.get(key)
        if found is not None:
            return found
        fields, spreads = self._level(selection_set, parent)
        result = list(fields)
        seen: set[str] = set()
        pending = list(spreads)
        while pending:
            name = pending.pop()
            fragment = self.fragments.get(name)
            if fragment is None or name in seen:
                continue
            seen.add(name)
            more, nested = self._level(fragment.selection_set, self.schema.get_type(fragment.type_condition.name.value))
            self.spend(len(more) + len(nested))
            result += more
            pending += nested
        self.expanded[key] = result
        return result

    def _children(self, group: list[_Field]) -> list[_Field]:
        """The fields of the selections of a set of fields, together."""
        children: list[_Field] = []
        for field in group:
            if field.node.selection_set is not None:
                definition = field.definition
                children += self._expand(field.node.selection_set,
                                         get_named_type(definition.type) if definition is not None else None)
        self.spend(len(children))
        return children

    def _queue(self, fields: list[_Field], *, merge: bool) -> None:
        """Queue the checks of every response name more than one of `fields` gives: SameResponseShape, and
        FieldsInSetCanMerge too when `merge` (the fields' parents were not known to be mutually exclusive)."""
        self.spend(len(fields))
        by_name: dict[str, dict[int, _Field]] = {}
        for field in fields:
            by_name.setdefault(field.name, {})[id(field)] = field
        for unique in by_name.values():
            if len(unique) > 1:
                group = list(unique.values())
                if merge:
                    self.pending.append((group, True, False))
                self.pending.append((group, False, merge))

    def _first_time(self, merge: bool, group: list[_Field]) -> bool:
        key = (merge, frozenset(map(id, group)))
        if key in self.checked:
            return False
        self.checked.add(key)
        return True

    def _can_merge(self, group: list[_Field]) -> None:
        """FieldsInSetCanMerge for fields of one response name: fields whose parent types may overlap (the same
        type, or either not an object type) must call the same field with the same arguments, and their
        selections together must merge."""
        if not self._first_time(True, group):
            return
        abstract: list[_Field] = []
        by_object: dict[int, list[_Field]] = {}
        for field in group:
            if isinstance(field.parent, GraphQLObjectType):
                by_object.setdefault(id(field.parent), []).append(field)
            else:
                abstract.append(field)
        # Fields on different object types never apply together; fields on an interface, a union or an unknown
        # type may apply with any other.
        for together in [abstract + fields for fields in by_object.values()] if by_object else [abstract]:
            # (a subset as long as the group is the group itself, being checked now)
            if len(together) < 2 or (len(together) < len(group) and not self._first_time(True, together)):
                continue
            self.spend(len(together))
            first = _call(together[0])
            for field in together[1:]:
                if _call(field) != first:
                    raise _Maybe
            self._queue(self._children(together), merge=True)

    def _same_shape(self, group: list[_Field], covered: bool) -> None:
        """SameResponseShape for fields of one response name, whatever their parent types: the same list and
        non-null wrapping, the same leaf type or composite types, and their selections the same shape.
        `covered`: the group's merge check queues the same checks for the children when it takes the group as
        a whole (its fields' parents are not on two object types)."""
        if not self._first_time(False, group):
            return
        self.spend(len(group))
        shape: Hashable = None
        objects: set[int] = set()
        for field in group:
            if isinstance(field.parent, GraphQLObjectType):
                objects.add(id(field.parent))
            found = _shape(field)
            if found is None:
                continue  # the rule does not compare the type of a field it does not know
            if shape is None:
                shape = found
            elif found != shape:
                raise _Maybe
        if not (covered and len(objects) < 2):
            self._queue(self._children(group), merge=False)


def _type_info_field(schema: GraphQLSchema, parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
    """The field definition graphql-core's TypeInfo finds (meta fields included)."""
    if name == "__typename" and is_composite_type(parent):
        return TypeNameMetaFieldDef
    if parent is not None and parent is schema.query_type:
        if name == "__schema":
            return SchemaMetaFieldDef
        if name == "__type":
            return TypeMetaFieldDef
    if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
        found: GraphQLField | None = parent.fields.get(name)
        return found
    return None


def _shape(field: _Field) -> Hashable:
    """What the types of two fields must share not to conflict: the list and non-null wrapping, and the leaf
    type itself (two composite types agree: their fields are compared a level down); None for no definition."""
    if field.shape is _UNSET:
        if field.definition is None:
            field.shape = None
        else:
            type_: Any = field.definition.type
            wrapping: list[str] = []
            while isinstance(type_, GraphQLList | GraphQLNonNull):
                wrapping.append("[" if isinstance(type_, GraphQLList) else "!")
                type_ = type_.of_type
            field.shape = tuple(wrapping), id(type_) if is_leaf_type(type_) else None
    return field.shape


def _call(field: _Field) -> Hashable:
    """The field name and its arguments, in a form equal for two fields only if the rule finds them equal."""
    if field.call is _UNSET:
        arguments = field.node.arguments or ()
        names = [argument.name.value for argument in arguments]
        if len(set(names)) != len(names):
            raise _Maybe  # the rule compares repeated argument names in a way not worth modelling
        field.call = field.node.name.value, tuple(sorted((argument.name.value, _value(argument.value))
                                                          for argument in arguments))
    return field.call


def _value(node: ValueNode) -> Hashable:
    """A value as a hashable structure; never equal where the rule's comparison is not (object fields keep
    their order, where the rule sorts them)."""
    if isinstance(node, VariableNode):
        return "$", node.name.value
    if isinstance(node, ListValueNode):
        return "[", tuple(_value(value) for value in node.values)
    if isinstance(node, ObjectValueNode):
        return "{", tuple((field.name.value, _value(field.value)) for field in node.fields)
    if isinstance(node, StringValueNode):
        return "s", node.value, bool(node.block)
    if isinstance(node, NullValueNode):
        return ("null",)
    if isinstance(node, IntValueNode | FloatValueNode | BooleanValueNode | EnumValueNode):
        return type(node).__name__, node.value
    raise _Maybe


def bounded_rule(budget: int) -> type[ASTValidationRule]:
    """graphql-core's OverlappingFieldsCanBeMerged with a work budget of its own (graphql-core's is a module
    global, 500,000 units in 3.3.2: about a second), refusing a document past it with MERGE_WORK_LIMIT_EXCEEDED."""
    if not _BUDGETED:
        raise ConfigurationError("GraphQLLimits(max_merge_work=) needs graphql-core 3.3.2 or later, whose "
                                 "OverlappingFieldsCanBeMerged rule has a work budget; or max_merge_work=None.")

    class BoundedOverlappingFieldsCanBeMergedRule(OverlappingFieldsCanBeMergedRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            self.rule_context.remaining_complexity_budget = budget

        def enter_selection_set(self, *args: Any) -> None:
            try:
                super().enter_selection_set(*args)
            except ValidationAbortedError:
                if self.rule_context.remaining_complexity_budget >= 0:
                    raise  # too many errors, not the budget
                raise ValidationAbortedError(
                    f"Checking that the fields of this document can be merged takes more than {budget} units of "
                    "work.", extensions={"code": "MERGE_WORK_LIMIT_EXCEEDED"}) from None

    return BoundedOverlappingFieldsCanBeMergedRule
