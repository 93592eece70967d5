"""The fast parser fails closed: whatever it accepts, graphql-core accepts too, with the same
measurements; mutated documents are the generator."""

from __future__ import annotations

import pytest
from graphql import GraphQLError
from graphql import parse as core_parse
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.graphql import CostModel, GraphQLSyntaxError, analyze, parse
from bastion.graphql.analyzer import AnalysisError, from_graphql_core

SEEDS = [
    "query Q($id: ID!, $n: Int = 2) { user(id: $id) { id name friends(first: $n) { id } } }",
    'mutation M { addUser(name: "x\\"y", tags: ["a", "b"], n: -1.5e3, on: true, e: ENUM, z: null) { id } }',
    "{ users(first: 3) { ...F ... on User { email } ... @include(if: true) { id } } } fragment F on User { id }",
    '{ hello(text: """block "q" string""") a: user(id: 1) { b: name } }',
    "query ($v: [Int!]! = [1, 2], $o: In = {a: {b: [1]}}) { users(first: 2) { id } } # c",
]
BAD = [
    "{ a(x: [0x10]) }",
    "{ a(x: -) }",
    '{ a(x: "abc\n") }',
    "{ a(x: 1.) }",
    "{ a(x: .5) }",
    "{ a(x: 01) }",
    "{ a(x: 1e) }",
    "{ a(x: 1_000) }",
    "{ ..F }",
    "{ a } .",
    "{ a } -",
    '{ a } "',
    "{ a(x: $) }",
    "query ($v: Int = $w) { a }",
    "{ a(x: 1) b(y: 2 }",
    "{ a: }",
    "{ @skip }",
    # found by the property test below (the lexer of before accepted them too)
    '{ a(x: """b\\""") }',  # an escaped triple quote does not close a block string
    '{ a(x: ["""b", "c"]) }',  # three quotes always open a block string
    '{ a(x: [""""]) }',
    '{ a(x: """\ud800""") }',  # a lone surrogate
    "{ a\u3000b }",  # only tab, space, line ends, commas and the BOM are ignored
    "{ a\x0cb }",
    "{ a\x1fb }",
]


@pytest.mark.parametrize("bad", BAD)
def test_malformed_documents_are_refused(bad):
    with pytest.raises(GraphQLError):
        core_parse(bad)
    with pytest.raises(GraphQLSyntaxError):
        parse(bad)


_PIECES = [
    "{",
    "}",
    "(",
    ")",
    ":",
    "$",
    "...",
    "@",
    "[",
    "]",
    '"',
    '"""',
    "-",
    ".",
    "0",
    "1e",
    "x",
    " ",
    "\n",
    "#",
    ",",
]


@st.composite
def _mutated(draw) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(_PIECES) | st.text(max_size=2))
        if op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 4)) :]
        else:
            text = text[:i] + piece + text[i + 1 :]
    return text


@settings(max_examples=600, deadline=None)
@given(_mutated())
def test_what_the_fast_parser_accepts_graphql_core_accepts(text):
    try:
        ours = parse(text)
    except GraphQLSyntaxError:
        return  # refusing more than graphql-core is allowed (fail closed)
    core_parse(text)  # raises if we accepted what the reference refuses
    try:
        mine = analyze(ours, operation_name=None, costs=CostModel())
    except AnalysisError:
        return
    ref = analyze(from_graphql_core(text), operation_name=None, costs=CostModel())
    for f in ("depth", "aliases", "fields", "root_fields", "directives", "cost", "duplicate_fields"):
        assert getattr(mine, f) == getattr(ref, f), (f, text)
