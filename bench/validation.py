"""bench/validation: request validations per second, bastion beside openapi-core, same run.

    .venv/bin/python bench/validation.py [--seconds 1]

Two requests against bench/specs/bench.yaml: a POST with a 10-field JSON body and a GET with
five query parameters, each judged valid by both. Also the two JSON Schema engines bastion could
compile to (jsonschema-rs, fastjsonschema) on the same body schema, which is how the engine was
chosen. bastion's figure includes parsing the raw body and the query string, as the gateway does.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import fastjsonschema
import jsonschema_rs
import orjson
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest

from bastion.openapi.operations import compile_operations
from bastion.openapi.spec import load_spec

SPEC = Path(__file__).parent / "specs" / "bench.yaml"
BODY = orjson.dumps(
    {
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "age": 36,
        "country": "GB",
        "vip": True,
        "score": 99.5,
        "tags": ["math", "engines"],
        "address": {"street": "1 St James's Sq", "city": "London"},
        "plan": "pro",
        "note": None,
    }
)
QUERY = "limit=20&offset=40&status=active&tags=a,b,c&q=lovelace"


def rate(fn, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(200):
            fn()
        n += 200
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    ops = compile_operations(load_spec(SPEC))
    post, get = ops["POST /customers"], ops["GET /customers"]
    core = OpenAPI.from_file_path(str(SPEC))

    def ours_body():
        status, errs, _ = post.check_request(
            path_params={}, query=b"", headers={}, cookies={}, content_type="application/json", body=BODY
        )
        assert status == 0, errs

    def ours_query():
        status, errs, _ = get.check_request(
            path_params={}, query=QUERY.encode(), headers={}, cookies={}, content_type=None, body=None
        )
        assert status == 0, errs

    def core_body():
        req = MockRequest("http://h", "post", "/customers", data=BODY, content_type="application/json")
        core.validate_request(req)

    qargs = dict(p.split("=", 1) for p in QUERY.split("&"))

    def core_query():
        req = MockRequest("http://h", "get", "/customers", args=qargs)
        core.validate_request(req)

    schema = post.bodies[0].validator.schema
    rs = jsonschema_rs.Draft202012Validator(schema, validate_formats=True)
    draft7 = {k: v for k, v in schema.items() if k != "$defs"}
    fjs = fastjsonschema.compile(draft7)
    doc = orjson.loads(BODY)
    assert rs.is_valid(doc)
    fjs(doc)

    rows = []
    for label, mine, theirs in (
        ("10-field JSON body", ours_body, core_body),
        ("5 query parameters", ours_query, core_query),
    ):
        a, b = rate(mine, args.seconds), rate(theirs, args.seconds)
        rows.append((label, a, b))
    print(f"{'request':22} {'bastion/s':>12} {'openapi-core/s':>15} {'ratio':>8}")
    for label, a, b in rows:
        print(f"{label:22} {a:12,.0f} {b:15,.0f} {a / b:7.1f}x")
    e1 = rate(lambda: rs.is_valid(orjson.loads(BODY)), args.seconds)
    e2 = rate(lambda: fjs(orjson.loads(BODY)), args.seconds)
    print(
        f"\nengine on the body schema (parse + validate): jsonschema-rs {e1:,.0f}/s, "
        f"fastjsonschema {e2:,.0f}/s ({e1 / e2:.1f}x)"
    )


if __name__ == "__main__":
    main()
