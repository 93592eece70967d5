"""Red-team findings against the WAF's body views, kept as regressions: a GraphQL string written
with escapes (`\\u0075nion`) and an XML namespace declaration both carried the payload past
inspection. Each is blocked now in every transport."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from .test_waf import waf_gateway  # noqa: F401 - the module's gateway fixture
from .test_waf_bodies import SQLI, send

ESCAPED = '{ q(x: "1 \\u0075nion \\u0073elect password from users--") }'
PLAIN_GQL = '{ q(x: "hello \\u00e9t\\u00e9 world") }'


@pytest.mark.parametrize("route", ["/graphql", "/open/x"])
@pytest.mark.parametrize("transport", ["graphql", "json", "json-batch", "get", "form"])
def test_escaped_graphql_strings_are_inspected_decoded(waf_gateway, route, transport):
    status = _graphql(waf_gateway[0].port, route, transport, ESCAPED)
    assert status in (403, 400, 405, 415), (route, transport, status)


@pytest.mark.parametrize("transport", ["graphql", "json", "get"])
def test_benign_escaped_graphql_strings_pass(waf_gateway, transport):
    assert _graphql(waf_gateway[0].port, "/graphql", transport, PLAIN_GQL) == 200


def _graphql(port: int, route: str, transport: str, query: str) -> int:
    if transport == "get":
        return send(port, "GET", f"{route}?query={quote(query)}", [], None).status
    if transport == "graphql":
        return send(port, "POST", route, [("Content-Type", "application/graphql")], query.encode()).status
    if transport == "form":
        return send(
            port,
            "POST",
            route,
            [("Content-Type", "application/x-www-form-urlencoded")],
            b"query=" + quote(query).encode(),
        ).status
    doc = {"query": query}
    body = json.dumps([doc] if transport == "json-batch" else doc).encode()
    return send(port, "POST", route, [("Content-Type", "application/json")], body).status


@pytest.mark.parametrize(
    "xml",
    [
        f'<a:q xmlns:a="{SQLI}"/>',
        f'<q xmlns="{SQLI}"/>',
        f'<r><c xmlns:n="{SQLI}"><n:x>1</n:x></c></r>',
        f'<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope"><soap:Body xmlns:p="{SQLI}">'
        "<p:Search/></soap:Body></soap:Envelope>",
    ],
)
def test_xml_namespace_declarations_are_inspected(waf_gateway, xml):
    status = send(waf_gateway[0].port, "POST", "/open/x", [("Content-Type", "application/xml")], xml.encode()).status
    assert status in (403, 400), status
