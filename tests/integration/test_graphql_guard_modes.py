"""What the GraphQL guard's `mode` means for the answers it rewrites (masked errors, stripped
suggestions, IDE pages): `off` leaves every answer exactly as the upstream sent it, `audit` leaves
it too and says in the audit line what enforcing would have changed, `enforce` rewrites.
`modes.answers` and `modes.ide` set them apart from the operation checks.

Before the fix an `off` guard still masked errors and stripped "Did you mean" from answers.
Generated: the operation (every kind of upstream failure the test app has, suggestions, a plain
success) against each mode; the reference is the same request sent straight to the upstream."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import graphql_app
import pytest
from helpers import RunningGateway, ThreadedUvicorn, audit_lines, raw_request, run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

QUERIES = [
    "{ crash }",
    "{ javaError }",
    "{ nodeError }",
    "{ secretLeak }",
    "{ notFound }",
    "{ usrs { id } }",  # "Did you mean 'users'?"
    '{ pastes(filter: "x\' UNION SELECT 1 --") { id } }',
    "{ hello }",
]


@pytest.fixture(scope="module")
def gql_upstream() -> Iterator[ThreadedUvicorn]:
    with ThreadedUvicorn(graphql_app.app) as server:
        yield server


@pytest.fixture(scope="module")
def gateways(gql_upstream: ThreadedUvicorn, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("gql-modes")
    audit = tmp / "audit.log"
    routes = [
        {"path": f"/{name}/graphql", "upstream": "gql", "policies": {"graphql": guard}}
        for name, guard in {
            "off": {"mode": "off"},
            "audit": {"mode": "audit"},
            "enforce": {"mode": "enforce"},
            "answers-off": {"mode": "enforce", "modes": {"answers": "off"}},
        }.items()
    ]
    config = {
        "upstreams": {"gql": {"urls": [gql_upstream.url]}},
        "policies": {"audit": {"output": str(audit)}},
        "routes": routes,
    }
    with run_gateway(config, tmp) as gw:
        yield {"gw": gw, "audit": audit}


def post(port: int, path: str, query: str, rid: str = "") -> Any:
    headers = {"Content-Type": "application/json", **({"X-Request-Id": rid} if rid else {})}
    return raw_request(port, "POST", path, headers, json.dumps({"query": query}).encode())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=st.sampled_from(QUERIES), route=st.sampled_from(["off", "audit", "answers-off"]))
def test_a_guard_that_does_not_enforce_leaves_answers_untouched(
    gql_upstream: ThreadedUvicorn, gateways: dict[str, Any], query: str, route: str
) -> None:
    direct = post(gql_upstream.port, "/graphql", query)
    r = post(gateways["gw"].port, f"/{route}/graphql", query)
    assert r.status == direct.status
    assert r.json() == direct.json()


def test_enforce_still_rewrites(gql_upstream: ThreadedUvicorn, gateways: dict[str, Any]) -> None:
    for query in ("{ crash }", "{ usrs { id } }"):
        direct = post(gql_upstream.port, "/graphql", query)
        r = post(gateways["gw"].port, "/enforce/graphql", query)
        assert r.json() != direct.json()


def test_audit_says_what_enforcing_would_change(gateways: dict[str, Any]) -> None:
    gw: RunningGateway = gateways["gw"]
    audit: Path = gateways["audit"]
    rid = "gql-audit-" + uuid.uuid4().hex[:8]
    assert "Traceback" in post(gw.port, "/audit/graphql", "{ crash }", rid).body.decode()
    line = next(x for x in audit_lines(audit, rid) if x["request_id"] == rid)
    assert any("would mask 1" in m for m in line["graphql_audit"]), line
