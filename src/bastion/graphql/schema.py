"""What the cost model reads from an SDL schema (graphql-core's `build_schema`): which fields
return lists, each field's result type, the root types, and the cost directives of IBM's
GraphQL Cost Directives specification (also used by Apollo, Hot Chocolate, graphql-ruby):

- `@cost(weight: N)` on a field definition: that field's own cost. On an object or interface
  type: added once per object of that type, so inside a list's multiplier (a list of 10
  `Paste @cost(weight: 20)` costs 10 × (20 + its fields)). On a scalar or enum: the cost of
  every field that returns it, unless the field has its own.
  `weight` may be an Int, a Float or a numeric String (the specification's type).
- `@listSize(assumedSize: N, slicingArguments: ["first", ...])` on a field definition: the
  multiplier of its children is the first slicing argument present (capped at `max_list_size`),
  else `assumedSize`, else `default_list_size`. `sizedFields` and
  `requireOneSlicingArgument` are not read.

A schema that does not declare the two directives may still use them: their definitions are
added before the schema is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DIRECTIVES = """
directive @cost(weight: String!) on ARGUMENT_DEFINITION | ENUM | FIELD_DEFINITION | INPUT_FIELD_DEFINITION | OBJECT | SCALAR
directive @listSize(assumedSize: Int, slicingArguments: [String!], sizedFields: [String!], requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION
"""


@dataclass(slots=True)
class SchemaCosts:
    list_fields: frozenset[str] = frozenset()  # Type.field returning a list
    field_types: dict[str, str] = field(default_factory=dict)  # Type.field -> named result type
    root_types: dict[str, str] = field(default_factory=dict)  # query/mutation/subscription -> type
    field_costs: dict[str, float] = field(default_factory=dict)  # Type.field -> @cost weight
    list_sizes: dict[str, tuple[tuple[str, ...] | None, int | None]] = field(default_factory=dict)
    type_costs: dict[str, float] = field(default_factory=dict)  # object/interface type -> @cost weight


def _directive(node: Any, name: str) -> dict[str, Any] | None:
    from graphql import value_from_ast_untyped

    for d in getattr(node, "directives", None) or ():
        if d.name.value == name:
            return {a.name.value: value_from_ast_untyped(a.value) for a in d.arguments or ()}
    return None


def _weight(args: dict[str, Any] | None, where: str) -> float | None:
    if args is None:
        return None
    try:
        w = float(args.get("weight"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"@cost on {where}: weight must be a number") from None
    if not w >= 0 or w == float("inf"):
        raise ValueError(f"@cost on {where}: weight must be a finite number >= 0")
    return w


def _list_size(args: dict[str, Any] | None, where: str) -> tuple[tuple[str, ...] | None, int | None] | None:
    if args is None:
        return None
    assumed = args.get("assumedSize")
    slicing = args.get("slicingArguments")
    if assumed is not None and (not isinstance(assumed, int) or assumed < 0):
        raise ValueError(f"@listSize on {where}: assumedSize must be an integer >= 0")
    if slicing is not None and not (isinstance(slicing, list) and all(isinstance(s, str) for s in slicing)):
        raise ValueError(f"@listSize on {where}: slicingArguments must be a list of argument names")
    return (tuple(slicing) if slicing is not None else None), assumed


def read_schema(sdl: str) -> SchemaCosts:
    """Raises ValueError (or graphql-core's GraphQLError) for a schema that cannot be used."""
    from graphql import GraphQLList, GraphQLNonNull, build_schema, get_named_type

    declared = "directive @cost" in sdl, "directive @listSize" in sdl
    extra = "\n".join(line for line, have in zip(DIRECTIVES.strip().splitlines(), declared, strict=True) if not have)
    schema = build_schema(sdl + "\n" + extra)
    out = SchemaCosts()
    type_costs: dict[str, float] = {}
    for tname, t in schema.type_map.items():
        if not tname.startswith("__"):
            w = _weight(_directive(t.ast_node, "cost"), tname)
            if w is not None:
                type_costs[tname] = w
    lists = set()
    for tname, t in schema.type_map.items():
        if tname.startswith("__") or not hasattr(t, "fields") or not hasattr(t, "interfaces"):
            continue  # object and interface types; input objects have no selections
        for fname, fdef in t.fields.items():
            key = f"{tname}.{fname}"
            ftype = fdef.type.of_type if isinstance(fdef.type, GraphQLNonNull) else fdef.type
            if isinstance(ftype, GraphQLList):
                lists.add(key)
            named = get_named_type(fdef.type).name
            out.field_types[key] = named
            w = _weight(_directive(fdef.ast_node, "cost"), key)
            if w is None and not hasattr(schema.type_map[named], "fields"):
                w = type_costs.get(named)  # a scalar's or enum's weight; objects' count per object
            if w is not None:
                out.field_costs[key] = w
            size = _list_size(_directive(fdef.ast_node, "listSize"), key)
            if size is not None:
                out.list_sizes[key] = size
                lists.add(key)
    out.list_fields = frozenset(lists)
    out.type_costs = {t: w for t, w in type_costs.items() if hasattr(schema.type_map[t], "fields")}
    out.root_types = {
        k: v.name
        for k, v in (
            ("query", schema.query_type),
            ("mutation", schema.mutation_type),
            ("subscription", schema.subscription_type),
        )
        if v is not None
    }
    return out
