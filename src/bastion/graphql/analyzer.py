"""Measure one operation of a document: depth, aliases, root fields, cost, introspection,
duplicate fields.

Fragments are measured once per (fragment, parent type) and combined, so a "fragment bomb"
(each fragment spreading the next twice) costs linear time, and a spread cycle is an error.

Duplicate fields: in each selection set, after its fragment spreads and inline fragments are
merged into it (as an executor's CollectFields does), the number of times each response key
(alias, else name) is asked; the analysis reports the largest. A fragment's key counts are
computed once and added where it is spread, so a spread three times adds its `title` three
times, and a bomb stays linear (the counts grow, not the work).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bastion.graphql.document import Document, Field, GraphQLSyntaxError, Inline, Operation, Spread, Var

INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


@dataclass(frozen=True, slots=True)
class CostModel:
    """Per-field costs and list multipliers. Keys are `Type.field` (with a schema) or `field`."""

    default_field_cost: float = 1.0
    field_costs: dict[str, float] = field(default_factory=dict)
    list_size_args: tuple[str, ...] = ("first", "last", "limit")
    default_list_size: int = 10
    max_list_size: int = 1000
    list_fields: frozenset[str] = frozenset()  # Type.field whose result is a list (from a schema)
    field_types: dict[str, str] = field(default_factory=dict)  # Type.field -> named type of its result
    root_types: dict[str, str] = field(
        default_factory=lambda: {"query": "Query", "mutation": "Mutation", "subscription": "Subscription"}
    )
    # Type.field -> (slicing arguments or None, assumed size or None), from `@listSize`
    list_sizes: dict[str, tuple[tuple[str, ...] | None, int | None]] = field(default_factory=dict)
    type_costs: dict[str, float] = field(default_factory=dict)  # object type -> cost per object (`@cost`)


@dataclass(slots=True)
class Analysis:
    operation_type: str
    operation_name: str | None
    depth: int
    aliases: int
    fields: int
    root_fields: int
    directives: int
    tokens: int
    cost: float
    introspection: bool
    uses_variables: bool
    duplicate_fields: int = 0  # most times one response key is asked in one selection set


class AnalysisError(ValueError):
    """The document is well-formed but cannot be executed as asked (unknown fragment, cycle,
    no such operation)."""


@dataclass(slots=True)
class _Measure:
    depth: int = 0
    aliases: int = 0
    fields: int = 0
    cost: float = 0.0
    introspection: bool = False
    uses_variables: bool = False
    duplicates: int = 0  # the most repeated response key in any selection set below
    keys: dict[str, int] = field(default_factory=dict)  # response key -> times, this set


def select_operation(doc: Document, name: str | None) -> Operation:
    if name:
        for op in doc.operations:
            if op.name == name:
                return op
        raise AnalysisError(f"no operation named {name!r}")
    if len(doc.operations) != 1:
        raise AnalysisError(
            "the document has several operations: operationName is required"
            if doc.operations
            else "the document has no operation"
        )
    return doc.operations[0]


def analyze(
    doc: Document,
    operation_name: str | None = None,
    variables: dict[str, Any] | None = None,
    costs: CostModel | None = None,
) -> Analysis:
    """Measure the selected operation. Long because `measure`, its hot loop, is a closure over
    the memo, cost model and variables (see its docstring for why it is one function)."""
    costs = costs or CostModel()
    op = select_operation(doc, operation_name)
    values = dict(op.variable_defaults)
    if variables:
        values.update(variables)
    memo: dict[tuple[str, str], _Measure] = {}
    visiting: set[str] = set()

    field_costs, field_types, list_fields = costs.field_costs, costs.field_types, costs.list_fields
    size_args, default_cost = costs.list_size_args, costs.default_field_cost
    keyed = bool(field_costs or field_types or list_fields or costs.list_sizes)

    list_sizes, type_costs = costs.list_sizes, costs.type_costs
    max_list = costs.max_list_size

    def size_of(f: Field, key: str) -> int:
        args, default = size_args, costs.default_list_size
        spec = list_sizes.get(key) if list_sizes else None
        if spec is not None:
            args = spec[0] if spec[0] is not None else size_args
            default = spec[1] if spec[1] is not None else default
        if f.args:
            for arg in args:
                if arg in f.args:
                    v = f.args[arg]
                    if type(v) is Var:
                        v = values.get(v.name)
                    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                        return min(v, max_list)
                    return min(default, max_list)
        return min(default, max_list) if key in list_fields else 1

    def measure(selections: list, parent: str, want_keys: bool = False) -> _Measure:
        """The hot loop (every field of every unique query): counters are locals, and a
        selection set's response keys are a list, turned into counts only when one repeats or
        when the set is a fragment's (whose counts join the set it is spread into). Long on
        purpose: one call per selection set, none per field — a helper call per field costs
        more than the field's measuring (issue 18's target, bench/graphql_guard.py)."""
        depth = aliases = fields = duplicates = 0
        cost = 0.0
        intro = uses = False
        names: list[str] = []
        merged: dict[str, int] | None = None  # key counts from spreads and inline fragments
        for s in selections:
            if type(s) is Field:
                fields += 1
                name = s.name
                if s.alias is not None:
                    aliases += 1
                    names.append(s.alias)
                else:
                    names.append(name)
                if name in INTROSPECTION_FIELDS:
                    intro = True
                args = s.args
                if args:
                    for v in args.values():
                        if type(v) is Var:
                            uses = True
                            break
                if keyed:
                    key = f"{parent}.{name}"
                    own = field_costs.get(key, field_costs.get(name, default_cost))
                    child_type = field_types.get(key, "")
                else:
                    key, own, child_type = "", default_cost, ""
                if s.selections:
                    sub = measure(s.selections, child_type)
                    multiplier = size_of(s, key) if (args or keyed) else 1
                    if sub.depth >= depth:
                        depth = sub.depth + 1
                    aliases += sub.aliases
                    fields += sub.fields
                    per_object = sub.cost + type_costs.get(child_type, 0.0) if type_costs else sub.cost
                    cost += own + multiplier * per_object
                    if sub.duplicates > duplicates:
                        duplicates = sub.duplicates
                    if sub.introspection:
                        intro = True
                    if sub.uses_variables:
                        uses = True
                else:
                    if depth < 1:
                        depth = 1
                    cost += own
                continue
            if type(s) is Spread:
                frag = doc.fragments.get(s.name)
                if frag is None:
                    raise AnalysisError(f"unknown fragment {s.name!r}")
                key2 = (s.name, parent)
                cached = memo.get(key2)
                if cached is None:
                    if s.name in visiting:
                        raise AnalysisError(f"fragment cycle through {s.name!r}")
                    visiting.add(s.name)
                    cached = measure(frag.selections, frag.type_condition or parent, True)
                    visiting.discard(s.name)
                    memo[key2] = cached
                sub = cached
            else:
                assert isinstance(s, Inline)
                sub = measure(s.selections, s.type_condition or parent, True)
            if sub.depth > depth:
                depth = sub.depth
            aliases += sub.aliases
            fields += sub.fields
            cost += sub.cost
            intro = intro or sub.introspection
            uses = uses or sub.uses_variables
            if sub.duplicates > duplicates:
                duplicates = sub.duplicates
            if merged is None:
                merged = dict(sub.keys)
            else:
                for k, n in sub.keys.items():  # a fragment's fields join this selection set
                    merged[k] = merged.get(k, 0) + n
        keys: dict[str, int] = {}
        if merged is not None or want_keys:
            keys = merged if merged is not None else {}
            for k in names:
                keys[k] = keys.get(k, 0) + 1
            most = max(keys.values()) if keys else 0
        elif len(names) > 1 and len(set(names)) < len(names):
            counts: dict[str, int] = {}
            for k in names:
                counts[k] = counts.get(k, 0) + 1
            most = max(counts.values())
        else:
            most = 1 if names else 0
        if most > duplicates:
            duplicates = most
        return _Measure(depth, aliases, fields, cost, intro, uses, duplicates, keys if want_keys else {})

    root = costs.root_types.get(op.kind, op.kind.capitalize())
    top = measure(op.selections, root)
    root_fields = _count_root_fields(doc, op.selections, set())
    cost = top.cost if math.isfinite(top.cost) else float("inf")
    return Analysis(
        op.kind,
        op.name,
        top.depth,
        top.aliases,
        top.fields,
        root_fields,
        doc.directives,
        doc.tokens,
        cost,
        top.introspection,
        top.uses_variables,
        top.duplicates,
    )


def _count_root_fields(doc: Document, selections, seen: set[str]) -> int:
    n = 0
    for s in selections:
        if isinstance(s, Field):
            n += 1
        elif isinstance(s, Spread):
            if s.name in seen:
                continue
            frag = doc.fragments.get(s.name)
            if frag is not None:
                n += _count_root_fields(doc, frag.selections, seen | {s.name})
        else:
            n += _count_root_fields(doc, s.selections, seen)
    return n


def from_graphql_core(source: str) -> Document:
    """The same light document, built from graphql-core's parser (the reference in tests)."""
    from graphql import parse as core_parse
    from graphql.error import GraphQLError
    from graphql.language import ast

    try:
        tree = core_parse(source, no_location=True)
    except GraphQLError as exc:
        raise GraphQLSyntaxError(exc.message) from None
    directives = 0

    def value(v: Any) -> Any:
        if isinstance(v, ast.VariableNode):
            return Var(v.name.value)
        if isinstance(v, ast.IntValueNode):
            return int(v.value)
        if isinstance(v, ast.FloatValueNode):
            return float(v.value)
        if isinstance(v, ast.StringValueNode):
            return v.value
        if isinstance(v, ast.BooleanValueNode):
            return v.value
        if isinstance(v, ast.NullValueNode):
            return None
        if isinstance(v, ast.EnumValueNode):
            return v.value
        if isinstance(v, ast.ListValueNode):
            return [value(x) for x in v.values]
        if isinstance(v, ast.ObjectValueNode):
            return {f.name.value: value(f.value) for f in v.fields}
        raise GraphQLSyntaxError("unknown value")

    def dirs(node: Any) -> int:
        nonlocal directives
        n = len(node.directives or ())
        directives += n
        return n

    def sels(ss: Any) -> list:
        out: list[Field | Spread | Inline] = []
        for s in ss.selections:
            if isinstance(s, ast.FieldNode):
                out.append(
                    Field(
                        s.name.value,
                        s.alias.value if s.alias else None,
                        {a.name.value: value(a.value) for a in s.arguments or ()},
                        dirs(s),
                        sels(s.selection_set) if s.selection_set else [],
                    )
                )
            elif isinstance(s, ast.FragmentSpreadNode):
                out.append(Spread(s.name.value, dirs(s)))
            else:
                out.append(
                    Inline(s.type_condition.name.value if s.type_condition else None, dirs(s), sels(s.selection_set))
                )
        return out

    ops, frags = [], {}
    from bastion.graphql.document import Fragment, Operation

    for d in tree.definitions:
        if isinstance(d, ast.OperationDefinitionNode):
            defaults = {}
            for vd in d.variable_definitions or ():
                dirs(vd)
                if vd.default_value is not None:
                    defaults[vd.variable.name.value] = value(vd.default_value)
            ops.append(
                Operation(d.operation.value, d.name.value if d.name else None, defaults, dirs(d), sels(d.selection_set))
            )
        elif isinstance(d, ast.FragmentDefinitionNode):
            frags[d.name.value] = Fragment(d.name.value, d.type_condition.name.value, dirs(d), sels(d.selection_set))
        else:
            raise GraphQLSyntaxError("only operations and fragments may be sent")
    return Document(ops, frags, 0, directives)
