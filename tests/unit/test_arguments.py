"""bastion.arguments: a request's API inputs as named scalar values (path, query, body, GraphQL
literal arguments and variables)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.arguments import Argument, api_arguments, api_inputs
from bastion.bodies import BodyRefused
from bastion.graphql.arguments import graphql_arguments, leaves
from bastion.http import Request
from bastion.pipeline import Context


def request(
    method: str = "POST",
    path: str = "/",
    query: bytes = b"",
    body: bytes = b"",
    ctype: str | None = "application/json",
    path_params: dict[str, str] | None = None,
) -> Request:
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-length", str(len(body)).encode())] if body else []
    if ctype is not None and body:
        headers.append((b"content-type", ctype.encode()))
    return Request(
        method=method,
        path=path,
        query=query,
        headers=headers,
        client_ip=None,
        peer_ip=None,
        peer_trusted=False,
        scheme="http",
        host="test",
        receive=receive,
        path_params=path_params or {},
    )


def args(req: Request, ctx: Context | None = None, **kw: Any) -> list[tuple[str, str, Any]]:
    found = asyncio.run(api_arguments(req, ctx or Context(), **kw))
    return [(a.source, a.name, a.value) for a in found]


def test_path_query_and_nested_json_body():
    body = orjson.dumps({"user": {"address": {"url": "http://x"}}, "items": [{"url": "u0"}, 5, True, None]})
    got = args(request(query=b"q=hello&n=1", body=body, path_params={"id": "7"}))
    assert ("path", "id", "7") in got
    assert ("query", "q", "hello") in got and ("query", "n", "1") in got
    assert ("body", "user.address.url", "http://x") in got
    assert ("body", "items.0.url", "u0") in got
    assert ("body", "items.1", 5) in got and ("body", "items.2", True) in got and ("body", "items.3", None) in got


def test_form_body_fields():
    got = args(request(body=b"a=1&b=x%27y", ctype="application/x-www-form-urlencoded"))
    assert got == [("body", "a", "1"), ("body", "b", "x'y")]


def test_a_get_body_is_read_too():
    """A GET with a body is forwarded with it, and some upstreams read it (redteam s4)."""
    got = args(request(method="GET", query=b"x=1", body=b'{"a": 1}'))
    assert got == [("query", "x", "1"), ("body", "a", 1)]


def test_graphql_literal_arguments_aliases_fragments_and_variables():
    query = """
    query Q($limit: Int = 10, $f: PasteFilter) {
      mine: pastes(filter: {title: "hello", tags: ["a", "b"]}, limit: $limit) { id ...P }
      paste(id: 3) { ... on Paste { owner(name: "bob") { id } } }
    }
    fragment P on Paste { comments(first: 5, order: DESC) { body } }
    """
    body = orjson.dumps({"query": query, "variables": {"limit": 5, "f": {"url": "http://h"}}, "operationName": "Q"})
    got = args(request(path="/graphql", body=body))
    assert ("graphql", "pastes.filter.title", "hello") in got
    assert ("graphql", "pastes.filter.tags.0", "a") in got and ("graphql", "pastes.filter.tags.1", "b") in got
    assert ("graphql", "paste.id", 3) in got
    assert ("graphql", "owner.name", "bob") in got  # inside an inline fragment
    assert ("graphql", "comments.first", 5) in got and ("graphql", "comments.order", "DESC") in got  # a fragment
    assert ("graphql", "variables.limit", 10) in got  # a variable's default
    assert ("variables", "variables.limit", 5) in got and ("variables", "variables.f.url", "http://h") in got
    assert ("body", "operationName", "Q") in got
    assert not any(name == "query" or name.endswith(".limit") and v is None for _, name, v in got)
    assert all(not (isinstance(v, str) and "{" in v) for _, _, v in got)  # never the query text


def test_graphql_escaped_strings_are_decoded():
    query = r'{ search(q: "1 \u0075nion select") { id } }'
    got = args(request(body=orjson.dumps({"query": query})))
    assert ("graphql", "search.q", "1 union select") in got


def test_graphql_variables_sent_as_a_json_text_are_decoded():
    body = orjson.dumps({"query": "query($f: String) { a(x: $f) { id } }", "variables": '{"f": "\\u0027 OR 1=1"}'})
    assert args(request(body=body)) == [("variables", "variables.f", "' OR 1=1")]


def test_graphql_directive_arguments():
    got = args(request(body=orjson.dumps({"query": '{ a @fmt(pattern: "x/../y", n: [1]) { b @skip(if: $v) } }'})))
    assert ("graphql", "@fmt.pattern", "x/../y") in got and ("graphql", "@fmt.n.0", 1) in got
    assert not any(name.startswith("@skip") for _, name, _ in got)


def test_graphql_get_form_and_application_graphql():
    q = b"query=%7B+pastes%28filter%3A+%22x%22%29+%7B+id+%7D+%7D&variables=%7B%22a%22%3A1%7D&page=2"
    for req in (
        request(method="GET", query=q),
        request(body=q, ctype="application/x-www-form-urlencoded"),
    ):
        got = args(req)
        assert ("graphql", "pastes.filter", "x") in got
        assert ("variables", "variables.a", 1) in got
        assert ("query" if req.method == "GET" else "body", "page", "2") in got
        assert not any(name in ("query", "variables") for _, name, _ in got)
    got = args(request(body=b'{ pastes(filter: "y") { id } }', ctype="application/graphql"))
    assert got == [("graphql", "pastes.filter", "y")]


def test_graphql_batch_and_persisted_query():
    batch = [{"query": '{ a(x: "1") { id } }'}, {"query": '{ b(y: "2") { id } }', "variables": {"z": 3}}]
    got = args(request(body=orjson.dumps(batch)))
    assert ("graphql", "a.x", "1") in got and ("graphql", "b.y", "2") in got and ("variables", "variables.z", 3) in got
    apq = {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab"}}, "variables": {"u": "v"}}
    inputs = asyncio.run(api_inputs(request(body=orjson.dumps(apq)), Context()))
    assert inputs.graphql and Argument("variables", "variables.u", "v") in inputs.arguments


def test_unparsable_graphql_is_reported_not_guessed():
    inputs = asyncio.run(api_inputs(request(body=orjson.dumps({"query": "{ a(x: ) }"})), Context()))
    assert inputs.graphql and inputs.unparsed == ["{ a(x: ) }"]
    assert inputs.arguments == []


def test_graphql_forced_off_reads_query_as_a_value():
    got = args(request(body=orjson.dumps({"query": "{ a }"})), graphql=False)
    assert got == [("body", "query", "{ a }")]


def test_cached_per_request():
    ctx = Context()
    req = request(body=b'{"a": 1}')
    first = asyncio.run(api_arguments(req, ctx))
    assert asyncio.run(api_arguments(req, ctx)) is first
    assert asyncio.run(api_arguments(req, ctx, graphql=False)) is first  # the same reading


def test_body_over_the_limit_is_refused():
    with pytest.raises(BodyRefused) as exc:
        args(request(body=b'{"a": "' + b"x" * 100 + b'"}'), max_body=50)
    assert exc.value.status == 413


_keys = st.text(st.characters(blacklist_characters=".", blacklist_categories=("Cs",)), min_size=1, max_size=8)
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False), st.text()
)
_json = st.recursive(
    _scalars, lambda c: st.one_of(st.lists(c, max_size=4), st.dictionaries(_keys, c, max_size=4)), max_leaves=30
)


def _count_leaves(v: Any) -> int:
    if isinstance(v, dict):
        return sum(_count_leaves(x) for x in v.values())
    if isinstance(v, list):
        return sum(_count_leaves(x) for x in v)
    return 1


def _follow(doc: Any, name: str) -> Any:
    if name == "":
        return doc
    for part in name.split("."):
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc


@settings(max_examples=300, deadline=None)
@given(doc=st.dictionaries(_keys.filter(lambda k: k not in ("query", "extensions")), _json, max_size=5) | _json)
def test_every_json_leaf_appears_once_with_its_dotted_name(doc):
    got = asyncio.run(api_arguments(request(body=orjson.dumps(doc)), Context(), graphql=False))
    assert all(a.source == "body" for a in got)
    assert len(got) == _count_leaves(doc)
    assert len({a.name for a in got}) == len(got)  # keys have no dots: every name is distinct
    for a in got:
        assert _follow(doc, a.name) == a.value


@settings(max_examples=200, deadline=None)
@given(value=_json)
def test_every_graphql_variable_leaf_appears_once(value):
    body = orjson.dumps({"query": "query Q($v: JSON) { a(x: $v) { id } }", "variables": {"v": value}})
    got = asyncio.run(api_arguments(request(body=body), Context()))
    assert all(a.source == "variables" for a in got)
    assert len(got) == _count_leaves(value)
    for a in got:
        assert a.name == "variables.v" or a.name.startswith("variables.v.")
        assert _follow(value, a.name.removeprefix("variables.v").removeprefix(".")) == a.value


_gql_strings = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(_gql_strings, min_size=1, max_size=5))
def test_every_graphql_string_literal_is_decoded(values):
    fields = " ".join(f"f{i}(s: {orjson.dumps(v).decode()}) {{ id }}" for i, v in enumerate(values))
    got = graphql_arguments("{ " + fields + " }")
    assert got == [(f"f{i}.s", v) for i, v in enumerate(values)]


def test_leaves_deep_nesting_is_iterative():
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    assert list(leaves("", deep)) == [(".".join(["0"] * 5000), "x")]
