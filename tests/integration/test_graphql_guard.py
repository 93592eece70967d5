"""The GraphQL guard in front of a real GraphQL upstream (graphql-core)."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
import urllib.parse
import uuid

import graphql_app
import pytest
from helpers import ThreadedUvicorn, audit_lines, raw_request, run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.graphql.persisted import sha256


@pytest.fixture(scope="module")
def gql_upstream():
    with ThreadedUvicorn(graphql_app.app) as server:
        yield server


def config(base_config, gql_upstream, tmp_path, **guard):
    (tmp_path / "schema.graphql").write_text(graphql_app.SDL)
    base_config["upstreams"]["gql"] = {"urls": [gql_upstream.url]}
    guard.setdefault("limits", {"max_depth": 4, "max_aliases": 5, "max_cost": 200, "max_batch": 3})
    guard.setdefault("costs", {"schema_file": str(tmp_path / "schema.graphql")})
    base_config["routes"] = [{"path": "/graphql", "upstream": "gql", "policies": {"graphql": guard}}]
    return base_config


def post(port, doc, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    return raw_request(port, "POST", "/graphql", h, json.dumps(doc).encode())


@pytest.fixture()
def gw(base_config, gql_upstream, tmp_path):
    with run_gateway(config(base_config, gql_upstream, tmp_path), tmp_path) as g:
        yield g


def test_allowed_query_reaches_the_upstream(gw, tmp_path):
    r = post(gw.port, {"query": "{ users(first: 2) { id name } }"}, {"X-Request-Id": "gql-ok"})
    assert r.status == 200 and r.json()["data"]["users"][1]["name"] == "user1"
    line = next(x for x in audit_lines(tmp_path / "audit.log", "gql-ok") if x["request_id"] == "gql-ok")
    assert line["graphql"]["depth"] == 2 and line["graphql"]["cost"] == 1 + 2 * 2


def test_too_deep_is_refused_graphql_shaped(gw, tmp_path):
    deep = "{ users { friends { friends { friends { friends { id } } } } } }"
    r = post(gw.port, {"query": deep}, {"X-Request-Id": "gql-deep"})
    assert r.status == 400
    err = r.json()["errors"][0]
    assert err["extensions"]["code"] == "QUERY_LIMIT_EXCEEDED" and "depth 6" in err["message"]
    line = next(x for x in audit_lines(tmp_path / "audit.log", "gql-deep") if x["request_id"] == "gql-deep")
    assert line["stopped_by"] == "graphql"


def test_aliases_cost_and_batches(gw):
    aliases = "{ " + " ".join(f"a{i}: hello" for i in range(6)) + " }"
    assert "aliases" in post(gw.port, {"query": aliases}).json()["errors"][0]["message"]
    expensive = "{ users(first: 100) { friends(first: 100) { id } } }"
    assert "cost" in post(gw.port, {"query": expensive}).json()["errors"][0]["message"]
    batch = [{"query": "{ hello }"}] * 4
    r = post(gw.port, batch)
    assert r.status == 400 and "batch of 4" in r.json()["errors"][0]["message"]
    ok = post(gw.port, [{"query": "{ hello }"}] * 2)
    assert ok.status == 200 and [x["data"]["hello"] for x in ok.json()] == ["world", "world"]


def test_introspection_blocked_by_default(gw):
    r = post(gw.port, {"query": "{ __schema { queryType { name } } }"})
    assert r.status == 403 and r.json()["errors"][0]["extensions"]["code"] == "INTROSPECTION_DISABLED"
    assert post(gw.port, {"query": "{ users(first: 1) { __typename } }"}).status == 200


def test_introspection_allowed_from_listed_networks(base_config, gql_upstream, tmp_path):
    with run_gateway(config(base_config, gql_upstream, tmp_path, introspection_ips=["127.0.0.0/8"]), tmp_path) as g:
        r = post(g.port, {"query": "{ __schema { queryType { name } } }"})
        assert r.status == 200 and r.json()["data"]["__schema"]["queryType"]["name"] == "Query"


def test_field_suggestions_are_stripped(gw):
    r = post(gw.port, {"query": "{ usrs { id } }"})
    message = r.json()["errors"][0]["message"]
    assert "Cannot query field 'usrs'" in message and "Did you mean" not in message


def test_the_upstream_itself_does_suggest(gql_upstream):
    r = raw_request(
        gql_upstream.port,
        "POST",
        "/graphql",
        {"Content-Type": "application/json"},
        json.dumps({"query": "{ usrs { id } }"}).encode(),
    )
    assert "Did you mean" in r.json()["errors"][0]["message"]  # what the guard removes


def test_mutations_over_get_are_refused(gw):
    q = urllib.parse.quote('mutation { addUser(name: "x") { id } }')
    r = raw_request(gw.port, "GET", f"/graphql?query={q}")
    assert r.status == 405 and r.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    ok = raw_request(gw.port, "GET", "/graphql?query=" + urllib.parse.quote("{ hello }"))
    assert ok.status == 200 and ok.json()["data"]["hello"] == "world"


def test_form_posts_carry_no_mutations(gw):
    """A form post is sent cross-site without a preflight, like a GET: no mutations (CSRF)."""
    r = raw_request(
        gw.port,
        "POST",
        "/graphql",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"query=mutation+%7B+addUser(name%3A%22x%22)+%7B+id+%7D+%7D",
    )
    assert r.status == 405 and r.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"


DEEP = "{ users { friends { friends { friends { friends { id } } } } } }"
FINE = "{ users(first: 2) { id name } }"


def _transports(query: str) -> dict[str, tuple[str, str, dict, bytes | None]]:
    """One query in every way a GraphQL server commonly reads it."""
    q = urllib.parse.quote(query)
    return {
        "json": ("POST", "/graphql", {"Content-Type": "application/json"}, json.dumps({"query": query}).encode()),
        "json gzip": (
            "POST",
            "/graphql",
            {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            gzip.compress(json.dumps({"query": query}).encode()),
        ),
        "application/graphql": ("POST", "/graphql", {"Content-Type": "application/graphql"}, query.encode()),
        "form": ("POST", "/graphql", {"Content-Type": "application/x-www-form-urlencoded"}, b"query=" + q.encode()),
        "GET": ("GET", f"/graphql?query={q}", {}, None),
    }


@pytest.mark.parametrize("transport", list(_transports(FINE)))
def test_every_transport_gets_the_same_analysis(gw, transport):
    method, target, headers, body = _transports(DEEP)[transport]
    r = raw_request(gw.port, method, target, headers, body)
    assert r.status == 400 and r.json()["errors"][0]["extensions"]["code"] == "QUERY_LIMIT_EXCEEDED", r.body
    method, target, headers, body = _transports(FINE)[transport]
    r = raw_request(gw.port, method, target, headers, body)
    assert r.status == 200 and r.json()["data"]["users"][1]["name"] == "user1", r.body


AMBIGUOUS = {
    # the upstream executes the URL's query (as express-graphql does); the guard would read the body
    "query in the URL of a POST": (
        "POST",
        "/graphql?query=" + urllib.parse.quote(DEEP),
        {"Content-Type": "application/json"},
        json.dumps({"query": FINE}).encode(),
    ),
    "GET with a body": (
        "GET",
        "/graphql?query=" + urllib.parse.quote(FINE),
        {"Content-Type": "application/json"},
        json.dumps({"query": DEEP}).encode(),
    ),
    "query twice in the URL": (
        "GET",
        "/graphql?query=" + urllib.parse.quote(FINE) + "&query=" + urllib.parse.quote(DEEP),
        {},
        None,
    ),
    "query twice in a form": (
        "POST",
        "/graphql",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"query=" + urllib.parse.quote(FINE).encode() + b"&query=" + urllib.parse.quote(DEEP).encode(),
    ),
    "query key twice in JSON": (
        "POST",
        "/graphql",
        {"Content-Type": "application/json"},
        b'{"query": "' + DEEP.encode() + b'", "query": "' + FINE.encode() + b'"}',
    ),
    "two Content-Type headers": (
        "POST",
        "/graphql",
        [("Content-Type", "application/json"), ("Content-Type", "application/graphql")],
        json.dumps({"query": FINE}).encode(),
    ),
    "not JSON": ("POST", "/graphql", {"Content-Type": "application/json"}, DEEP.encode()),
    "no Content-Type": ("POST", "/graphql", {}, json.dumps({"query": DEEP}).encode()),
    "text/plain": ("POST", "/graphql", {"Content-Type": "text/plain"}, json.dumps({"query": DEEP}).encode()),
    "unknown coding": (
        "POST",
        "/graphql",
        {"Content-Type": "application/json", "Content-Encoding": "compress"},
        json.dumps({"query": DEEP}).encode(),
    ),
    "utf-16": (
        "POST",
        "/graphql",
        {"Content-Type": "application/json; charset=utf-16"},
        json.dumps({"query": DEEP}).encode("utf-16"),
    ),
}


@pytest.mark.parametrize("name", list(AMBIGUOUS))
def test_what_the_guard_cannot_read_unambiguously_is_refused(gw, name):
    method, target, headers, body = AMBIGUOUS[name]
    r = raw_request(gw.port, method, target, headers, body)
    assert r.status in (400, 415), (name, r.status, r.body[:300])
    assert r.json()["errors"][0]["extensions"]["code"] in ("BAD_REQUEST", "UNSUPPORTED_MEDIA_TYPE")


def test_apq_miss_register_hit(gw):
    query = "{ users(first: 1) { id } } # " + uuid.uuid4().hex
    digest = sha256(query)
    ext = {"persistedQuery": {"version": 1, "sha256Hash": digest}}
    miss = post(gw.port, {"extensions": ext})
    assert miss.status == 200 and miss.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    wrong = post(gw.port, {"query": "{ hello }", "extensions": ext})
    assert wrong.status == 400
    register = post(gw.port, {"query": query, "extensions": ext})
    assert register.status == 200 and register.json()["data"]["users"] == [{"id": "0"}]
    hit = post(gw.port, {"extensions": ext})
    assert hit.status == 200 and hit.json()["data"]["users"] == [{"id": "0"}]
    assert graphql_app.RECEIVED[-1]["query"] == query  # the upstream got the full text


def test_over_limit_query_is_never_registered(gw):
    deep = "{ users { friends { friends { friends { friends { id } } } } } }"
    ext = {"persistedQuery": {"version": 1, "sha256Hash": sha256(deep)}}
    assert post(gw.port, {"query": deep, "extensions": ext}).status == 400
    assert post(gw.port, {"extensions": ext}).json()["errors"][0]["message"] == "PersistedQueryNotFound"


def test_allowlist_mode(base_config, gql_upstream, tmp_path):
    from typer.testing import CliRunner

    from bastion.cli import app

    (tmp_path / "q1.graphql").write_text("query Hello { hello }")
    out = tmp_path / "allow.json"
    result = CliRunner().invoke(app, ["graphql", "register", str(tmp_path / "q1.graphql"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    with run_gateway(config(base_config, gql_upstream, tmp_path, allowlist=str(out)), tmp_path) as g:
        assert post(g.port, {"query": "query Hello { hello }"}).status == 200
        digest = sha256("query Hello { hello }")
        assert post(g.port, {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": digest}}}).status == 200
        r = post(g.port, {"query": "{ users { id } }"})
        assert r.status == 403 and r.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_ALLOWED"


def test_audit_mode_logs_without_blocking(base_config, gql_upstream, tmp_path):
    cfg = config(base_config, gql_upstream, tmp_path, modes={"depth": "audit", "cost": "audit"})
    with run_gateway(cfg, tmp_path) as g:
        deep = "{ users { friends { friends { friends { friends { id } } } } } }"
        r = post(g.port, {"query": deep}, {"X-Request-Id": "gql-audit"})
        assert r.status == 200
        line = next(x for x in audit_lines(tmp_path / "audit.log", "gql-audit") if x["request_id"] == "gql-audit")
        assert any("depth 6" in m for m in line["graphql_audit"])
        assert any("cost" in m for m in line["graphql_audit"])


def test_cost_is_charged_to_a_rate_limit(base_config, gql_upstream, tmp_path):
    cfg = config(base_config, gql_upstream, tmp_path)
    cfg["routes"][0]["policies"]["rate_limit"] = {
        "limits": [{"rate": "30/minute", "key": ["header:X-Client"], "name": "cost-points"}],
        "algorithm": "fixed_window",
    }
    with run_gateway(cfg, tmp_path) as g:
        h = {"X-Client": uuid.uuid4().hex}
        q = {"query": "{ users(first: 4) { id name } }"}  # cost 1 + 4 * 2 = 9
        statuses = [post(g.port, q, h).status for _ in range(4)]
        assert statuses == [200, 200, 200, 429]  # 27 points used, 9 more would pass 30


@pytest.fixture(scope="module")
def gw_module(upstream, gql_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gql-transports")
    base = {"upstreams": {"up": {"urls": [upstream.url]}}, "policies": {}, "routes": []}
    with run_gateway(config(base, gql_upstream, tmp), tmp) as g:
        yield g


_FIELDS = ["id", "name", "email"]


@st.composite
def _queries(draw):
    depth = draw(st.integers(0, 6))
    inner = " ".join(draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=3, unique=True)))
    for _ in range(depth):
        inner = f"friends {{ {inner} }}"
    aliases = draw(st.integers(0, 7))
    roots = [f"users(first: {draw(st.integers(1, 3))}) {{ {inner} }}"]
    roots += [f"a{i}: hello" for i in range(aliases)]
    return "{ " + " ".join(roots) + " }"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=_queries())
def test_generated_queries_get_one_verdict_whatever_the_transport(gw_module, query):
    """Invariant: the guard's answer (status and code) does not depend on how the query is sent."""
    verdicts = {}
    for name, (method, target, headers, body) in _transports(query).items():
        r = raw_request(gw_module.port, method, target, headers, body)
        code = r.json()["errors"][0]["extensions"]["code"] if r.status != 200 else None
        verdicts[name] = (r.status, code)
    assert len(set(verdicts.values())) == 1, (query, verdicts)


# ---- issue 17: duplicate fields, masked errors, IDE pages, @cost ------------------------------


def test_duplicate_fields_are_refused_after_fragment_expansion(gw):
    many = "{ users(first: 1) { " + "name " * 500 + "} }"
    r = post(gw.port, {"query": many})
    assert r.status == 400 and "duplicate fields 500 exceeds the limit of 20" in r.json()["errors"][0]["message"]
    spread = "{ users(first: 1) { ...F ...F ...F ...F ...F ...F ...F } } fragment F on User { name id name email }"
    r = post(gw.port, {"query": spread})  # name: 2 per spread, 7 spreads -> 14, within 20
    assert r.status == 200 and r.json()["data"]["users"] == [{"name": "user0", "id": "0", "email": "u0@example.com"}]
    r = post(gw.port, {"query": spread.replace("...F } }", "...F ...F ...F ...F ...F } }")})  # 11 spreads -> 22
    assert r.status == 400 and "duplicate fields 22" in r.json()["errors"][0]["message"]


LEAKS = ["/work/", "site-packages", "Traceback", "java.lang", "/srv/app", "resolvers.js", "SELECT", "s3cr3t", "hunter2"]


def _masked(err, request_id):
    return err["message"] == "Unexpected error." and err["extensions"] == {
        "code": "INTERNAL_SERVER_ERROR",
        "request_id": request_id,
    }


@pytest.mark.parametrize(
    "field",
    ['pastes(filter: "x\' UNION SELECT 1 --") { id }', "crash", "javaError", "nodeError", "secretLeak", "notFound"],
)
def test_upstream_internal_errors_are_masked(gw, gql_upstream, field, caplog):
    query = "{ " + field + " }"
    direct = raw_request(
        gql_upstream.port,
        "POST",
        "/graphql",
        {"Content-Type": "application/json"},
        json.dumps({"query": query}).encode(),
    )
    assert direct.json()["errors"], "the upstream must really fail here"
    rid = "gql-mask-" + uuid.uuid4().hex[:8]
    with caplog.at_level(logging.WARNING, logger="bastion.graphql"):
        r = post(gw.port, {"query": query}, {"X-Request-Id": rid})
    assert r.status == 200, r.body
    doc = r.json()
    err = doc["errors"][0]
    assert _masked(err, rid) and err["path"] == direct.json()["errors"][0]["path"], err
    assert not any(leak in r.body.decode() for leak in LEAKS), r.body
    logged = " ".join(rec.getMessage() for rec in caplog.records if rid in rec.getMessage())
    assert "upstream GraphQL error masked" in logged  # the original is kept for the operators
    assert "hunter2" not in logged and "s3cr3t-pw" not in logged  # but never its secrets


def test_client_errors_stay_readable(gw):
    r = post(gw.port, {"query": "{ usrs { id } }"})
    err = r.json()["errors"][0]
    assert err["message"] == "Cannot query field 'usrs' on type 'Query'." and err["locations"]
    r = post(gw.port, {"query": "{ forbidden }"})  # a deliberate error with a safe code
    err = r.json()["errors"][0]
    assert err["message"] == "You may not read this paste" and err["extensions"] == {"code": "FORBIDDEN"}
    r = post(gw.port, {"query": '{ user(id: 1) { id } users(first: "x") { id } }'})
    assert "Int cannot represent" in r.json()["errors"][0]["message"]


def test_context_failure_without_a_path_is_masked_when_it_looks_internal(gw):
    r = post(gw.port, {"query": "{ hello }"}, {"X-Break-Context": "1", "X-Request-Id": "gql-ctx"})
    assert _masked(r.json()["errors"][0], "gql-ctx") and "ECONNREFUSED" not in r.body.decode()


def test_safe_codes_and_unmasked_mode(base_config, gql_upstream, tmp_path):
    cfg = config(base_config, gql_upstream, tmp_path, errors={"safe_codes": ["NOT_FOUND"]})
    with run_gateway(cfg, tmp_path) as g:
        assert post(g.port, {"query": "{ notFound }"}).json()["errors"][0]["message"] == "Paste 42 not found"
        assert _masked(post(g.port, {"query": "{ crash }"}, {"X-Request-Id": "c1"}).json()["errors"][0], "c1")
    cfg = config(base_config, gql_upstream, tmp_path, errors={"mask": False})
    with run_gateway(cfg, tmp_path) as g:
        assert "Traceback" in post(g.port, {"query": "{ crash }"}).body.decode()


def test_a_large_answer_streams_unless_it_carries_errors(base_config, gql_upstream, tmp_path):
    """Over `response_body.max_buffered_bytes` an answer cannot be rewritten whole: it passes
    when no part of it mentions errors, and is refused (502) when one does — never leaked."""
    cfg = config(base_config, gql_upstream, tmp_path)
    cfg["routes"][0]["policies"]["response_body"] = {"max_buffered_bytes": 4096}
    with run_gateway(cfg, tmp_path) as g:
        r = post(g.port, {"query": "{ big(size: 20000) }"})
        assert r.status == 200 and len(r.json()["data"]["big"]) == 20000
        r = post(g.port, {"query": "{ big(size: 20000) crash }"})
        assert r.status == 502 and "Traceback" not in r.body.decode()
        assert _masked(
            post(g.port, {"query": "{ big(size: 100) crash }"}, {"X-Request-Id": "s"}).json()["errors"][0], "s"
        )


def test_batches_are_masked_entry_by_entry(gw):
    r = post(gw.port, [{"query": "{ crash }"}, {"query": "{ hello }"}], {"X-Request-Id": "gql-batch"})
    first, second = r.json()
    assert _masked(first["errors"][0], "gql-batch") and second == {"data": {"hello": "world"}}


IDE_REQUESTS = {
    "browser on the endpoint": ("/graphql", {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}),
    "browser with a query": ("/graphql?query=%7Bhello%7D", {"Accept": "text/html"}),
    "graphiql path": ("/graphql/graphiql", {}),
    "playground path": ("/graphql/playground", {"Accept": "*/*"}),
}


@pytest.mark.parametrize("name", list(IDE_REQUESTS))
def test_ide_pages_are_refused_by_default(ide_gateways, name):
    off, on = ide_gateways
    target, headers = IDE_REQUESTS[name]
    r = raw_request(off.port, "GET", target, headers)
    assert r.status == 404 and r.json()["type"].endswith("graphql-ide-disabled"), r.body
    r = raw_request(on.port, "GET", target, headers)
    assert r.status == 200 and b"<!doctype html>" in r.body.lower(), r.body


def test_an_allowed_ide_path_passes_unanalysed_only_without_an_operation(ide_gateways):
    _, on = ide_gateways
    deep = urllib.parse.quote(DEEP)
    for params in (f"query={deep}", f"%71uery={deep}", "extensions=%7B%7D&x=1"):
        r = raw_request(on.port, "GET", f"/graphql/graphiql?{params}", {"Accept": "text/html"})
        assert r.status == 400 and r.json()["errors"][0]["extensions"]["code"] in (
            "QUERY_LIMIT_EXCEEDED",
            "BAD_REQUEST",
        ), (params, r.body[:200])


def test_an_ide_page_served_anyway_is_recognised(ide_gateways):
    """A server that answers its IDE page whatever the request says (Accept: application/json
    and a valid query pass the request check): the answer gives the IDE away."""
    off, on = ide_gateways
    target, h = "/graphql?query=%7Bhello%7D", {"Accept": "application/json"}
    assert raw_request(off.port, "GET", target, h).json() == {"data": {"hello": "world"}}
    r = raw_request(off.port, "GET", target, {**h, "X-Always-Ide": "1"})
    assert r.status == 404 and r.json()["type"].endswith("graphql-ide-disabled"), r.body
    r = raw_request(on.port, "GET", target, {**h, "X-Always-Ide": "1"})
    assert r.status == 200 and b"graphiql" in r.body


@pytest.fixture(scope="module")
def ide_gateways(upstream, gql_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gql-ide")
    cfgs = []
    for allowed in (False, True):
        base = {"upstreams": {"up": {"urls": [upstream.url]}}, "policies": {}, "routes": []}
        cfg = config(base, gql_upstream, tmp, ide=allowed)
        cfg["routes"][0]["path"] = "/graphql/*"
        cfgs.append(cfg)
    with run_gateway(cfgs[0], tmp) as off, run_gateway(cfgs[1], tmp) as on:
        yield off, on


COST_SDL = """
directive @cost(weight: String!) on FIELD_DEFINITION | OBJECT
type Query {
  users(first: Int): [User!]! @listSize(assumedSize: 50, slicingArguments: ["first"])
  user(id: ID!): User
  hello: String @cost(weight: "300")
  pastes(filter: String): [Paste!]!
}
type User { id: ID! name: String email: String friends(first: Int): [User!]! }
type Paste @cost(weight: 20) { id: ID! title: String }
"""


def test_cost_directives_from_the_schema(base_config, gql_upstream, tmp_path):
    """`hello` is one field, but expensive: `@cost(weight: "300")` in the SDL lets the limit see it."""
    (tmp_path / "cost.graphql").write_text(COST_SDL)
    limits = {"max_cost": 500}
    cfg = config(
        base_config, gql_upstream, tmp_path, limits=limits, costs={"schema_file": str(tmp_path / "cost.graphql")}
    )
    with run_gateway(cfg, tmp_path) as g:
        assert post(g.port, {"query": "{ hello }"}).status == 200
        r = post(g.port, {"query": "{ hello a: hello }"})
        assert r.status == 400 and "cost 600 exceeds the limit of 500" in r.json()["errors"][0]["message"]
        # @listSize(assumedSize: 50): users without `first` counts 50 users; with it, `first`
        assert post(g.port, {"query": "{ users { id name } }"}).status == 200  # 1 + 50 * 2
        assert post(g.port, {"query": "{ users(first: 3) { id name } }"}).status == 200
        r = post(g.port, {"query": "{ users { id name email friends(first: 6) { id } } }"})
        assert r.status == 400 and "cost 501 " in r.json()["errors"][0]["message"]  # 1 + 50 * (3 + 1 + 6)
        # a type's @cost counts once per object: 1 + 10 * (20 + 1) per list of Paste
        assert post(g.port, {"query": "{ pastes { id } }"}).status == 200
        r = post(g.port, {"query": "{ pastes { id } p2: pastes { id } p3: pastes { id } }"})
        assert r.status == 400 and "cost 633 " in r.json()["errors"][0]["message"]
    cfg = config(
        base_config,
        gql_upstream,
        tmp_path,
        limits=limits,
        costs={"schema_file": str(tmp_path / "cost.graphql"), "fields": {"hello": 1}},
    )
    with run_gateway(cfg, tmp_path) as g:  # the config's own cost wins over the schema's
        assert post(g.port, {"query": "{ hello a: hello }"}).status == 200


def test_check_operation_for_other_transports():
    """The entry point a GraphQL-over-WebSocket subscribe goes through (gateway/websocket.py)."""
    from bastion.pipeline import Context, PolicyEnv
    from bastion.policies.graphql import GraphQLGuard, GraphQLGuardConfig

    guard = GraphQLGuard(GraphQLGuardConfig(limits={"max_depth": 3}), PolicyEnv())

    def check(*args):
        return asyncio.run(guard.check_operation(*args, Context()))

    assert check("subscription { hello }", None, None) is None
    refusal = check("subscription { users { friends { friends { id } } } }", None, None)
    assert refusal is not None and refusal.status == 400 and refusal.reason == "QUERY_LIMIT_EXCEEDED"
    assert check("{ __schema { types { name } } }", {}, None).reason == "INTROSPECTION_DISABLED"
    assert check(None, None, None).reason == "BAD_REQUEST"
    assert check("query A { hello } query B { hello }", None, "C").reason == "GRAPHQL_VALIDATION_FAILED"


def test_bastion_check_warns_about_ide_and_unmasked_errors():
    from bastion.policies.graphql import GraphQLGuardConfig

    assert GraphQLGuardConfig().lint() == []
    keys = [key for _, key, _ in GraphQLGuardConfig(ide=True, errors={"mask": False}).lint()]
    assert keys == ["ide", "errors.mask"]
