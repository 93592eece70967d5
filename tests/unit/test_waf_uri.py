"""The URI the WAF shows ModSecurity: path parameters added as query arguments that decode back
to exactly their values (no `&`, `=`, `#` or `%` in a value can split or hide one), and a GraphQL
request's own parameters left out of it."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from helpers import plain_request
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.arguments import Argument
from bastion.http import Request
from bastion.policies.waf import Waf


def _req(query: bytes) -> Request:
    return plain_request("/users/v1/x", host="t", query=query)


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(params=st.dictionaries(st.text(min_size=1, max_size=10).filter(lambda s: "\x00" not in s), _text, max_size=4))
def test_path_parameters_round_trip_as_query_arguments(params):
    uri = Waf._uri(_req(b"page=2"), [Argument("path", k, v) for k, v in params.items()], drop_graphql=False)
    split = urlsplit(uri)
    assert split.path == "/users/v1/x"
    got = parse_qsl(split.query, keep_blank_values=True)
    assert got[0] == ("page", "2")
    assert got[1:] == list(params.items())


def test_graphql_parameters_are_left_out():
    q = b"query=%7B+a+%7D&variables=%7B%7D&operationName=A&extensions=%7B%7D&qu%65ry=x&page=2"
    assert Waf._uri(_req(q), [], drop_graphql=True) == "/users/v1/x?page=2"
