"""Cost directives read from an SDL schema (docs/graphql.md's example)."""

from __future__ import annotations

import pytest

from bastion.graphql import CostModel, analyze, parse
from bastion.graphql.schema import read_schema

SDL = """
type Query {
  report(year: Int!): Report @cost(weight: "200")
  users(first: Int, after: String): [User!]! @listSize(assumedSize: 50, slicingArguments: ["first"])
  status: Level
}
type Report @cost(weight: 20) { total: Int }
type User { id: ID! name: String }
enum Level @cost(weight: 3) { LOW HIGH }
"""


def model(sdl: str = SDL) -> CostModel:
    sc = read_schema(sdl)
    return CostModel(
        field_costs=sc.field_costs,
        list_fields=sc.list_fields,
        field_types=sc.field_types,
        root_types=sc.root_types,
        list_sizes=sc.list_sizes,
        type_costs=sc.type_costs,
    )


def cost(query: str, costs: CostModel, **kw) -> float:
    return analyze(parse(query), costs=costs, **kw).cost


def test_the_documented_example():
    m = model()
    one = "report(year: 2024) { total }"
    assert cost("{ " + one + " }", m) == 200 + (20 + 1)
    assert cost("{ " + one + " r2: " + one + " }", m) == 442
    assert cost("{ users { id name } }", m) == 1 + 50 * 2  # assumedSize
    assert cost("{ users(first: 3) { id name } }", m) == 1 + 3 * 2  # slicing argument
    assert cost("query($n: Int) { users(first: $n) { id } }", m, variables={"n": 7}) == 1 + 7
    assert cost("{ users(after: 3) { id } }", m) == 1 + 50  # not a slicing argument
    assert cost("{ status }", m) == 3  # an enum's weight is its fields' cost


@pytest.mark.parametrize(
    "bad", ['type Query { a: Int @cost(weight: "lots") }', "type Query { a: [Int] @listSize(assumedSize: -1) }"]
)
def test_unusable_directives_are_refused_at_load(bad):
    with pytest.raises(ValueError):
        read_schema(bad)


def test_declared_directives_are_not_declared_twice():
    sdl = "directive @cost(weight: Int!) on FIELD_DEFINITION\ntype Query { a: Int @cost(weight: 5) }"
    assert read_schema(sdl).field_costs == {"Query.a": 5.0}
