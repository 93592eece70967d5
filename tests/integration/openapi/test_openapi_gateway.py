"""OpenAPI as the policy, through a real gateway in front of a real upstream."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import jwt
import pytest
from clock import clear_of_window_edge
from helpers import ThreadedUvicorn, audit_lines, raw_request, run_gateway

from bastion.auth.apikeys import hash_key

from .spec_upstream import app as spec_app

SPECS = Path(__file__).resolve().parents[2] / "specs"
KEY = "bk_test_" + "P" * 43
KEY2 = "bk_test_" + "Q" * 43
K2_ID = "k2-" + uuid.uuid4().hex[:8]  # the memory rate-limit store is per process: a key of its own
SECRET = "s" * 40
ISS = "https://issuer.test"


def token(*scopes: str, sub: str = "alice") -> str:
    now = int(time.time())
    return jwt.encode(
        {"iss": ISS, "sub": sub, "iat": now, "exp": now + 300, "scope": " ".join(scopes)}, SECRET, algorithm="HS256"
    )


@pytest.fixture(scope="module")
def spec_upstream():
    with ThreadedUvicorn(spec_app) as server:
        yield server


def config(tmp_path, spec_upstream, route: dict, **policies) -> dict:
    return {
        "upstreams": {"app": {"urls": [spec_upstream.url]}},
        "policies": {
            "audit": {"output": str(tmp_path / "audit.log")},
            "auth": {
                "schemes": {
                    "api_key": {
                        "type": "api_key",
                        "keys": [
                            {"id": "k1", "hash": hash_key(KEY), "owner": "acme", "scopes": []},
                            {"id": K2_ID, "hash": hash_key(KEY2), "owner": "rl", "scopes": []},
                        ],
                    },
                    "bearer": {
                        "type": "jwt",
                        "issuers": [{"issuer": ISS, "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}],
                    },
                    "oauth": {
                        "type": "jwt",
                        "issuers": [{"issuer": ISS, "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}],
                    },
                }
            },
            **policies,
        },
        "routes": [{"upstream": "app", **route}],
    }


@pytest.fixture(scope="module")
def petstore(spec_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("petstore")
    cfg = config(
        tmp,
        spec_upstream,
        {"openapi": str(SPECS / "petstore.yaml"), "policies": {"validation": {"responses": "remove"}}},
    )
    with run_gateway(cfg, tmp) as gw:
        gw.audit = tmp / "audit.log"
        yield gw


def call(gw, method, target, headers=None, body=None):
    return raw_request(gw.port, method, target, headers=headers, body=body)


K = {"X-API-Key": KEY}
JSON = {"X-API-Key": KEY, "Content-Type": "application/json"}


# ------------------------------------------------------------------------ inventory (API9)
def test_documented_operation_is_forwarded(petstore):
    r = call(petstore, "GET", "/v1/pets?limit=5", K)
    assert r.status == 200, r.body
    assert r.json()["path"] == "/v1/pets" and r.json()["query"] == "limit=5"


def test_undocumented_path_is_refused(petstore):
    r = call(petstore, "GET", "/v1/internal/debug", K)
    assert r.status == 404
    assert r.json()["type"].endswith("/undocumented-endpoint")


def test_undocumented_method_is_405_with_allow(petstore):
    r = call(petstore, "PUT", "/v1/pets", JSON, b"{}")
    assert r.status == 405
    assert r.header("allow") == "GET, HEAD, POST"


@pytest.mark.parametrize(
    "target",
    ["/v1/%70ets?limit=0", "/v1//pets?limit=0", "/v1/pets/.?limit=0", "/v1/pets;x=1?limit=0", "/v1/x/../pets?limit=0"],
)
def test_path_tricks_reach_the_same_checks(petstore, target):
    r = call(petstore, "GET", target, K)
    assert r.status == 422, (target, r.status, r.body)
    assert r.json()["errors"][0]["pointer"] == "limit"


def test_passthrough_undocumented(spec_upstream, tmp_path):
    cfg = config(tmp_path, spec_upstream, {"openapi": str(SPECS / "petstore.yaml"), "passthrough_undocumented": True})
    with run_gateway(cfg, tmp_path) as gw:
        assert call(gw, "GET", "/v1/internal/debug", K).json()["path"] == "/v1/internal/debug"
        assert call(gw, "PUT", "/v1/pets", JSON, b"{}").json()["method"] == "PUT"
        # documented operations are still checked
        assert call(gw, "GET", "/v1/pets?limit=0", K).status == 422


# ------------------------------------------------------------------------ security from the spec
def test_security_empty_list_is_public(petstore):
    assert call(petstore, "GET", "/v1/health").status == 200


def test_global_security_applies(petstore):
    r = call(petstore, "GET", "/v1/pets")
    assert r.status == 401
    assert call(petstore, "GET", "/v1/pets", {"X-API-Key": "bk_test_" + "x" * 43}).status == 401


def test_alternatives_and_scopes(petstore):
    body = b'{"name": "rex"}'
    # POST /pets: api_key OR bearer with pets:write
    assert call(petstore, "POST", "/v1/pets", JSON, body).status == 200
    bearer = {"Authorization": "Bearer " + token("pets:write"), "Content-Type": "application/json"}
    assert call(petstore, "POST", "/v1/pets", bearer, body).status == 200
    weak = {"Authorization": "Bearer " + token("pets:read"), "Content-Type": "application/json"}
    r = call(petstore, "POST", "/v1/pets", weak, body)
    assert r.status == 403 and "pets:write" in r.json()["detail"]


def test_operation_security_replaces_global(petstore):
    # DELETE needs bearer with pets:admin; the API key (global scheme) is not enough
    assert call(petstore, "DELETE", "/v1/pets/1", K).status == 401
    assert call(petstore, "DELETE", "/v1/pets/1", {"Authorization": "Bearer " + token("pets:write")}).status == 403
    r = call(petstore, "DELETE", "/v1/pets/1", {"Authorization": "Bearer " + token("pets:admin")})
    assert r.status == 200 and r.json()["method"] == "DELETE"


def test_forged_token_refused(petstore):
    forged = jwt.encode(
        {"iss": ISS, "sub": "eve", "iat": int(time.time()), "exp": int(time.time()) + 60, "scope": "pets:admin"},
        "w" * 40,
        algorithm="HS256",
    )
    assert call(petstore, "DELETE", "/v1/pets/1", {"Authorization": "Bearer " + forged}).status == 401


# ------------------------------------------------------------------------ parameters
@pytest.mark.parametrize(
    "target,where,pointer,rule",
    [
        ("/v1/pets?limit=0", "query", "limit", "minimum"),
        ("/v1/pets?limit=abc", "query", "limit", "type"),
        ("/v1/pets?limit=99999999999", "query", "limit", "maximum"),
        ("/v1/pets?tags=a,b,c,d,e,f", "query", "tags", "maxItems"),
        ("/v1/pets?tags=" + "x" * 21, "query", "tags/0", "maxLength"),
        ("/v1/pets/abc", "path", "petId", "type"),
        ("/v1/pets/0", "path", "petId", "minimum"),
    ],
)
def test_parameter_violations(petstore, target, where, pointer, rule):
    r = call(petstore, "GET", target, K)
    assert r.status == 422, r.body
    doc = r.json()
    assert r.header("content-type") == "application/problem+json"
    assert {"in": where, "pointer": pointer, "rule": rule} == {
        k: doc["errors"][0][k] for k in ("in", "pointer", "rule")
    }


def test_header_and_cookie_parameters(petstore):
    assert call(petstore, "GET", "/v1/pets", {**K, "X-Trace": "nothex!!"}).status == 422
    assert call(petstore, "GET", "/v1/pets", {**K, "X-Trace": "deadbeef"}).status == 200
    r = call(petstore, "GET", "/v1/session")
    assert r.status == 422 and r.json()["errors"][0] == {
        "in": "cookie",
        "pointer": "sid",
        "rule": "required",
        "message": "this parameter is required",
    }
    assert call(petstore, "GET", "/v1/session", {"Cookie": "a=b; sid=short"}).status == 422
    assert call(petstore, "GET", "/v1/session", {"Cookie": "a=b; sid=long-enough-id"}).status == 200


def test_valid_array_and_integer_parameters_forwarded_unchanged(petstore):
    r = call(petstore, "GET", "/v1/pets?limit=10&tags=a,b", K)
    assert r.status == 200 and r.json()["query"] == "limit=10&tags=a,b"


# ------------------------------------------------------------------------ bodies
def post(gw, body: bytes | str, content_type="application/json"):
    if isinstance(body, str):
        body = body.encode()
    return call(gw, "POST", "/v1/pets", {**K, "Content-Type": content_type}, body)


def test_valid_body_forwarded_intact(petstore):
    r = post(petstore, '{"name": "rex", "tag": null, "age": 3}')
    assert r.status == 200 and r.json()["body"] == {"name": "rex", "tag": None, "age": 3}


@pytest.mark.parametrize(
    "body,pointer,rule",
    [
        ('{"name": "rex", "role": "admin"}', "", "additionalProperties"),  # mass assignment
        ('{"tag": "x"}', "", "required"),
        ('{"name": ""}', "/name", "minLength"),
        ('{"name": "rex", "age": 0}', "/age", "exclusiveMinimum"),  # 3.0 boolean exclusiveMinimum
        ('{"name": "rex", "age": 41}', "/age", "maximum"),
        ('{"name": 5}', "/name", "type"),
        ("[]", "", "type"),
    ],
)
def test_body_violations(petstore, body, pointer, rule):
    r = post(petstore, body)
    assert r.status == 422, r.body
    errs = r.json()["errors"]
    assert any(e["pointer"] == pointer and e["rule"] == rule and e["in"] == "body" for e in errs), errs


def test_errors_never_echo_the_value(petstore):
    r = post(petstore, '{"name": "rex", "owner_email": "hunter2-s3cr3t-value"}')
    assert r.status == 422
    assert b"hunter2" not in r.body and r.json()["errors"][0]["rule"] == "format"


def test_malformed_json_is_400(petstore):
    r = post(petstore, '{"name": "rex"')
    assert r.status == 400 and r.json()["type"].endswith("/malformed-body")


def test_compressed_body_is_validated_decoded_and_forwarded_decoded(petstore):
    import gzip

    ok = call(
        petstore, "POST", "/v1/pets", {**JSON, "Content-Encoding": "gzip"}, gzip.compress(b'{"name": "rex", "age": 3}')
    )
    assert ok.status == 200 and ok.json()["body"] == {"name": "rex", "age": 3}, ok.body
    bad = call(
        petstore,
        "POST",
        "/v1/pets",
        {**JSON, "Content-Encoding": "gzip"},
        gzip.compress(b'{"name": "rex", "role": "admin"}'),
    )
    assert bad.status == 422 and bad.json()["errors"][0]["rule"] == "additionalProperties"
    assert (
        call(petstore, "POST", "/v1/pets", {**JSON, "Content-Encoding": "compress"}, b'{"name": "rex"}').status == 415
    )


def test_bodies_read_two_ways_are_refused(petstore):
    # which "age" wins depends on the parser: the validator and the upstream could disagree
    r = post(petstore, '{"name": "rex", "age": 3, "age": 400}')
    assert r.status == 400 and r.json()["type"].endswith("/ambiguous-body")
    two = call(
        petstore,
        "POST",
        "/v1/pets",
        [
            ("X-API-Key", KEY),
            ("Content-Type", "application/json"),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        b'{"name": "rex"}',
    )
    assert two.status == 400 and two.json()["type"].endswith("/ambiguous-content-type")


def test_undeclared_media_type_is_415(petstore):
    r = post(petstore, "name=rex", "text/plain")
    assert r.status == 415 and "application/json" in r.json()["errors"][0]["message"]


def test_missing_required_body(petstore):
    r = call(petstore, "POST", "/v1/pets", K, b"")
    assert r.status == 422 and r.json()["errors"][0]["rule"] == "required"


def test_form_body(petstore):
    r = post(petstore, "name=rex&age=3", "application/x-www-form-urlencoded")
    assert r.status == 200 and r.json()["body"] == "name=rex&age=3"
    r = post(petstore, "name=rex&age=old", "application/x-www-form-urlencoded")
    assert r.status == 422 and r.json()["errors"][0]["pointer"] == "/age"
    r = post(petstore, "name=rex&is_admin=true", "application/x-www-form-urlencoded")
    assert r.status == 422 and r.json()["errors"][0]["rule"] == "additionalProperties"


def test_limits_apply_where_the_schema_is_silent(petstore):
    deep = '{"name": "rex", "tag": ' + "[" * 40 + "]" * 40 + "}"
    r = post(petstore, deep)
    assert r.status == 422 and r.json()["errors"][0]["rule"] == "max_depth"
    very_deep = "[" * 5000 + "]" * 5000
    r = post(petstore, very_deep)
    assert r.status in (400, 422) and r.header("content-type") == "application/problem+json"
    long = json.dumps({"name": "rex", "x" * 200_000: 1})
    r = post(petstore, long)
    assert r.status == 422 and r.json()["errors"][0]["rule"] == "max_string_length"


# ------------------------------------------------------------------------ responses and extensions
def test_response_filtering_removes_undeclared_and_write_only(petstore):
    r = call(petstore, "GET", "/v1/pets/7", K)
    assert r.status == 200
    assert r.json() == {"id": 7, "name": "rex", "tag": None}


def test_response_schema_violation_is_logged(petstore):
    r = call(petstore, "GET", "/v1/pets/666", K)
    assert r.status == 200
    rid = r.header("x-request-id")
    line = [x for x in audit_lines(petstore.audit, rid) if x.get("request_id") == rid][0]
    assert any(v.startswith("/id:") for v in line["response_schema"]), line


def test_rate_limit_from_the_spec(spec_upstream, tmp_path):
    cfg = config(tmp_path, spec_upstream, {"openapi": str(SPECS / "petstore.yaml")})
    with run_gateway(cfg, tmp_path) as gw:
        k2 = {"X-API-Key": KEY2}
        clear_of_window_edge(60, 20)  # sliding_counter is clock-aligned (tests/clock.py)
        codes = [call(gw, "GET", "/v1/pets/3", k2).status for _ in range(11)]
        assert codes == [200] * 10 + [429]
        assert call(gw, "GET", "/v1/pets", k2).status == 200  # the limit is the operation's only


def test_read_only_property_refused_in_a_request(petstore):
    r = call(petstore, "PUT", "/v1/pets/7", JSON, b'{"name": "rex", "id": 7}')
    assert r.status == 422
    assert r.json()["errors"] == [
        {
            "in": "body",
            "pointer": "/id",
            "rule": "readOnly",
            "message": "this property may not be sent (read-only or forbidden)",
        }
    ]
    assert call(petstore, "PUT", "/v1/pets/7", JSON, b'{"name": "rex", "age": 2}').status == 200


# ------------------------------------------------------------------------ OpenAPI 3.1, refs across files
@pytest.fixture(scope="module")
def shop(spec_upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shop")
    cfg = config(tmp, spec_upstream, {"openapi": str(SPECS / "shop" / "openapi.yaml")})
    cfg["routes"][0]["upstream"] = "app"
    with run_gateway(cfg, tmp) as gw:
        yield gw


def bearer(*scopes, ct=None):
    h = {"Authorization": "Bearer " + token(*scopes)}
    if ct:
        h["Content-Type"] = ct
    return h


ORDER = {
    "item": "book",
    "email": "bob@example.com",
    "total": {"amount": 10, "currency": "EUR"},
    "payment": {"kind": "card", "number": "4111111111111111"},
}


@pytest.mark.parametrize(
    "query,status",
    [
        ("filter[status]=open&filter[min_total]=5", 200),
        ("filter[status]=lost", 422),
        ("filter[other]=1", 422),
        ("filter[min_total]=-1", 422),
        ("ids=1&ids=2", 200),
        ("ids=1&ids=x", 422),
    ],
)
def test_deep_object_and_exploded_arrays(shop, query, status):
    r = call(shop, "GET", "/api/orders?" + query, bearer("orders:read"))
    assert r.status == status, r.body


def test_one_of_bodies(shop):
    ok = call(shop, "POST", "/api/orders", bearer("orders:write", ct="application/json"), json.dumps(ORDER).encode())
    assert ok.status == 200, ok.body
    transfer = {**ORDER, "payment": {"kind": "transfer", "iban": "DE00123"}}
    assert (
        call(
            shop, "POST", "/api/orders", bearer("orders:write", ct="application/json"), json.dumps(transfer).encode()
        ).status
        == 200
    )
    for payment in (
        {"kind": "card", "number": "411", "extra": 1},  # branch-level unknown property
        {"kind": "card", "number": "4111111111111111", "last4": "1111"},  # readOnly
        {"kind": "cash"},
    ):
        bad = {**ORDER, "payment": payment}
        r = call(shop, "POST", "/api/orders", bearer("orders:write", ct="application/json"), json.dumps(bad).encode())
        assert r.status == 422, (payment, r.body)
        assert r.json()["errors"][0]["pointer"].startswith("/payment")


def test_type_arrays_allow_null(shop):
    doc = {**ORDER, "note": None}
    r = call(shop, "POST", "/api/orders", bearer("orders:write", ct="application/json"), json.dumps(doc).encode())
    assert r.status == 200
    doc = {**ORDER, "note": 5}
    r = call(shop, "POST", "/api/orders", bearer("orders:write", ct="application/json"), json.dumps(doc).encode())
    assert r.status == 422


def test_normalisation_before_validation(shop):
    doc = {**ORDER, "item": "  Cafe\u0301  ", "email": " Bob@Example.COM "}
    r = call(shop, "POST", "/api/orders", bearer("orders:write", ct="application/json"), json.dumps(doc).encode())
    assert r.status == 200, r.body
    got = r.json()["body"]
    assert got["item"] == "Caf\u00e9" and got["email"] == "bob@example.com"


def test_path_item_ref_and_media_types(shop):
    h = bearer("orders:write", ct="application/merge-patch+json")
    assert call(shop, "PATCH", "/api/orders/ord_abc123", h, b'{"status": "shipped"}').status == 200
    assert call(shop, "PATCH", "/api/orders/ord_abc123", h, b"{}").status == 422  # minProperties
    assert call(shop, "PATCH", "/api/orders/42", h, b'{"status": "shipped"}').status == 422
    r = call(
        shop, "PATCH", "/api/orders/ord_abc123", bearer("orders:write", ct="application/json"), b'{"status": "shipped"}'
    )
    assert r.status == 415


def test_recursive_schema(shop):
    tree = {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}
    assert call(shop, "PUT", "/api/tree", {"Content-Type": "application/json"}, json.dumps(tree).encode()).status == 200
    tree["children"][0]["children"][0]["admin"] = True
    r = call(shop, "PUT", "/api/tree", {"Content-Type": "application/json"}, json.dumps(tree).encode())
    assert r.status == 422 and r.json()["errors"][0]["pointer"] == "/children/0/children/0"


def test_oauth_scopes_from_the_spec(shop):
    assert call(shop, "GET", "/api/orders", bearer("orders:write")).status == 403
    assert call(shop, "GET", "/api/orders").status == 401


# ------------------------------------------------------------------------ more of the spec's own policy
EXTENDED = """
openapi: 3.0.3
info: {title: extensions, version: "1"}
security: [{cookie_key: []}]
paths:
  /users/{user_id}/orders:
    get:
      security: [{bearer: []}]
      parameters:
        - {name: user_id, in: path, required: true, schema: {type: string, maxLength: 20}}
      x-bastion-authorization:
        objects: [{param: user_id, claim: sub, status: 404}]
      x-bastion-cors:
        allow_origins: ["https://app.example.com"]
        allow_headers: [authorization]
        allow_credentials: true
      responses: {"200": {description: ok}}
  /me:
    get:
      responses: {"200": {description: ok}}
components:
  securitySchemes:
    cookie_key: {type: apiKey, in: cookie, name: session_key}
    bearer: {type: http, scheme: bearer}
"""


def test_object_rules_cors_and_cookie_keys_from_the_spec(spec_upstream, tmp_path):
    (tmp_path / "ext.yaml").write_text(EXTENDED)
    cfg = config(tmp_path, spec_upstream, {"openapi": "ext.yaml"})
    cfg["policies"]["auth"]["schemes"]["cookie_key"] = {
        "type": "api_key",
        "keys": [{"id": "c1", "hash": hash_key(KEY), "owner": "acme"}],
    }
    with run_gateway(cfg, tmp_path) as gw:
        # x-bastion-authorization: alice reads her own orders, not bob's (404: not even existence)
        alice = {"Authorization": "Bearer " + token(sub="alice")}
        assert call(gw, "GET", "/users/alice/orders", alice).status == 200
        assert call(gw, "GET", "/users/bob/orders", alice).status == 404
        # x-bastion-cors on that operation only
        pre = {
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }
        r = call(gw, "OPTIONS", "/users/alice/orders", pre)
        assert r.status in (200, 204) and r.header("access-control-allow-origin") == "https://app.example.com"
        evil = {**pre, "Origin": "https://app.example.com.evil.com"}
        assert call(gw, "OPTIONS", "/users/alice/orders", evil).header("access-control-allow-origin") is None
        # apiKey in: cookie, named by the spec
        assert call(gw, "GET", "/me").status == 401
        assert call(gw, "GET", "/me", {"Cookie": f"theme=dark; session_key={KEY}"}).status == 200
        assert call(gw, "GET", "/me", {"X-API-Key": KEY}).status == 200  # the scheme's header still works
