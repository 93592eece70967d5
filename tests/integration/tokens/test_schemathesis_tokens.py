"""schemathesis against the token service's own OpenAPI document, through the gateway.

Positive and negative requests for every operation (15 examples per operation and mode,
derandomised). The service must never answer 5xx, and every answer must be one its document
declares (status code and, for JSON, the schema), checked with schemathesis' own response
validation for positive cases.
"""

from __future__ import annotations

import json

import hypothesis
import pytest
import requests
import schemathesis
from helpers import raw_request, run_gateway
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from bastion.tokens.config import TokenServiceConfig
from bastion.tokens.openapi import document

from .conftest import KEK, PASSWORD, database, free_port, gateway_config

DOC = document(TokenServiceConfig(issuer="http://x/auth", audience=["api"], key_encryption_key=KEK))
SCHEMA = schemathesis.openapi.from_dict(DOC)
OPERATIONS = [r.ok() for r in SCHEMA.get_all_operations()]


@pytest.fixture(scope="module")
def gw(upstream, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("st-tokens")
    with database("sqlite", tmp) as db:
        port = free_port()
        with run_gateway(gateway_config(db, port, upstream.url, tmp), tmp) as g:
            g.server.gateway.state.token_app.service.register("erin", "erin@example.com", PASSWORD)
            yield g


def fresh_token(gw) -> str:
    r = raw_request(
        gw.port,
        "POST",
        "/auth/login",
        {"Content-Type": "application/json"},
        json.dumps({"username": "erin", "password": PASSWORD}).encode(),
    )
    assert r.status == 200, r.body
    return r.json()["access_token"]


@pytest.mark.parametrize(
    "operation,mode",
    [(op, m) for op in OPERATIONS for m in GenerationMode],
    ids=lambda v: getattr(v, "label", None) or str(v),
)
def test_token_service_never_fails(gw, operation, mode):
    secured = bool(operation.definition.raw.get("security"))
    codes: dict[int, int] = {}

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[hypothesis.Phase.generate],
    )
    def run(case):
        headers = {"Authorization": f"Bearer {fresh_token(gw)}"} if secured else {}
        try:
            resp = case.call(base_url=f"http://127.0.0.1:{gw.port}", headers=headers, timeout=10)
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, ValueError, UnicodeError):
            hypothesis.reject()
        codes[resp.status_code] = codes.get(resp.status_code, 0) + 1
        assert resp.status_code < 500, (case.as_curl_command(), resp.text[:300])
        declared = set(operation.definition.raw["responses"])
        assert str(resp.status_code) in declared, (case.as_curl_command(), resp.status_code, declared)

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE  # nothing to break in an operation without inputs
