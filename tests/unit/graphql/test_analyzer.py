"""The analyzer on crafted documents, and the fast parser against graphql-core."""

import random
import time

import pytest

from bastion.graphql import AnalysisError, CostModel, GraphQLSyntaxError, TokenLimit, analyze, parse
from bastion.graphql.analyzer import from_graphql_core


def a(query, **kw):
    return analyze(parse(query), **kw)


def test_depth_follows_nested_fragments():
    q = """
    query { users { ...A } }
    fragment A on User { friends { ...B } }
    fragment B on User { friends { ... on User { friends { id } } } }
    """
    assert a(q).depth == 5


def test_fragment_cycles_are_refused():
    q = "query { users { ...A } } fragment A on User { friends { ...B } } fragment B on User { ...A }"
    with pytest.raises(AnalysisError, match="cycle"):
        a(q)
    with pytest.raises(AnalysisError, match="cycle"):
        a("query { ...S } fragment S on Query { ...S }")


def test_unknown_fragment_and_operation_choice():
    with pytest.raises(AnalysisError, match="unknown fragment"):
        a("{ users { ...Nope } }")
    two = "query A { hello } query B { users { id } }"
    with pytest.raises(AnalysisError, match="operationName"):
        a(two)
    assert a(two, operation_name="B").depth == 2
    with pytest.raises(AnalysisError):
        a(two, operation_name="C")


def test_aliases_times_fields():
    q = "{ " + " ".join(f"a{i}: users {{ id }}" for i in range(50)) + " }"
    r = a(q)
    assert r.aliases == 50 and r.root_fields == 50


def test_fragment_bomb_is_measured_in_linear_time():
    # each fragment spreads the next twice: 2^30 fields if expanded naively
    frags = "".join(f"fragment F{i} on User {{ ...F{i + 1} ...F{i + 1} }}" for i in range(30))
    q = "{ users { ...F0 } } " + frags + " fragment F30 on User { id }"
    t0 = time.perf_counter()
    r = a(q)
    assert time.perf_counter() - t0 < 0.5
    assert r.fields > 10**9  # measured as what an executor would resolve


def test_directive_spam_and_token_counts():
    q = "{ hello " + "@skip(if: false) " * 200 + "}"
    r = a(q)
    assert r.directives == 200
    with pytest.raises(TokenLimit):
        parse(q, max_tokens=100)


def test_cost_with_list_sizes_and_variables():
    costs = CostModel(default_field_cost=1, field_costs={"email": 5})
    q = "query($n: Int = 3) { users(first: $n) { id email } }"
    assert a(q, costs=costs).cost == 1 + 3 * (1 + 5)
    assert a(q, variables={"n": 100}, costs=costs).cost == 1 + 100 * 6
    # a missing or absurd size falls back to the default, and is capped
    assert a("{ users(first: -1) { id } }", costs=costs).cost == 1 + 10 * 1
    assert a("{ users(first: 99999999) { id } }", costs=costs).cost == 1 + 1000 * 1


def test_cost_uses_schema_list_fields():
    costs = CostModel(
        list_fields=frozenset({"Query.users", "User.friends"}),
        field_types={"Query.users": "User", "User.friends": "User"},
    )
    assert a("{ users { friends { id } } }", costs=costs).cost == 1 + 10 * (1 + 10 * 1)


def test_introspection_detected_anywhere_but_typename_is_fine():
    assert a("{ __schema { types { name } } }").introspection
    assert a('{ users { ... on User { __type(name: "x") { name } } } }').introspection
    assert not a("{ users { __typename } }").introspection


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "{",
        "{ users { } }",
        "query { users(first: ) { id } }",
        "{ a: }",
        "type Query { x: Int }",
        '{ users "unterminated }',
        "{ hello } }",
        "fragment on on User { id } { hello }",
        "{ users(first: 1.2.3) { id } }",
        "{ x(a: 0x10) }",
        "{ hello } \x00",
    ],
)
def test_syntax_errors(bad):
    with pytest.raises(GraphQLSyntaxError):
        parse(bad)


# ---- differential: the fast parser agrees with graphql-core ----------------------------------

CORPUS = [
    "{ hello }",
    "query Q($id: ID!, $n: Int = 2) { user(id: $id) { id name friends(first: $n) { id } } }",
    'mutation M { addUser(name: "x\\"y") { id } }',
    "subscription S { hello }",
    "query { users(first: 3) { ...F ... on User { email } ... @include(if: true) { id } } } fragment F on User { id name }",
    'query { a: user(id: "1") { b: name } c: hello @skip(if: false) }',
    'query { users(first: 1, filter: {name: "x", tags: ["a", "b"], deep: {x: [1, 2.5, true, null, ENUM]}}) { id } }',
    '{ hello(text: """block\nstring "with" quotes""") }',
    "query ($v: [Int!]! = [1, 2]) { users(first: 2) { id } }",
    "# comment\n{ hello, users { id, name } }",
]


def _same(query):
    ours = analyze(parse(query), costs=CostModel(), operation_name=None)
    ref = analyze(from_graphql_core(query), costs=CostModel(), operation_name=None)
    for f in (
        "operation_type",
        "operation_name",
        "depth",
        "aliases",
        "fields",
        "root_fields",
        "directives",
        "cost",
        "introspection",
        "uses_variables",
    ):
        assert getattr(ours, f) == getattr(ref, f), (f, query)


@pytest.mark.parametrize("query", CORPUS)
def test_fast_parser_agrees_with_graphql_core(query):
    _same(query)


def _random_query(rng, depth=0):
    fields = []
    for _ in range(rng.randint(1, 4)):
        name = rng.choice(["users", "user", "friends", "id", "name", "email", "__typename"])
        alias = f"{rng.choice(['a', 'b', 'c'])}{rng.randint(0, 9)}: " if rng.random() < 0.3 else ""
        args = f"(first: {rng.randint(0, 20)})" if rng.random() < 0.3 else ""
        directive = " @include(if: true)" if rng.random() < 0.2 else ""
        sub = f" {{ {_random_query(rng, depth + 1)} }}" if depth < 4 and rng.random() < 0.5 else ""
        if rng.random() < 0.15 and depth < 4:
            fields.append(f"... on User{directive} {{ {_random_query(rng, depth + 1)} }}")
        else:
            fields.append(f"{alias}{name}{args}{directive}{sub}")
    return " ".join(fields)


def test_fast_parser_agrees_on_generated_queries():
    rng = random.Random(7)
    for _ in range(500):
        _same("query Q { " + _random_query(rng) + " }")
