"""`bastion scan` against a deliberately vulnerable API (every planted vulnerability must be
found, nothing else) and against its hardened twin behind `bastion serve` (no high or critical
finding). Precision and recall per check go to test-artifacts/scan-metrics.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import ThreadedUvicorn, run_gateway
from targets import hardened
from targets.vulnerable import SCAN_LOGINS
from targets.vulnerable import app as vulnerable_app

from bastion.scanner.model import Identity
from bastion.scanner.runner import ScanOptions, run_sync

ARTIFACTS = Path(os.environ.get("BASTION_ARTIFACTS", Path(__file__).resolve().parents[3] / "test-artifacts"))
RATE = 80.0

# (check, path) pairs planted in tests/targets/vulnerable.py
PLANTED = {
    ("api1-bola", "/api/v2/users/1"),
    ("api1-bola", "/api/v2/users/1/orders"),
    ("api2-no-auth", "/api/v2/reports"),
    ("api2-no-auth", "/api/v2/products"),
    ("api2-no-auth", "/api/v2/search"),
    ("api2-alg-none", "/api/v2/users/1"),
    ("api2-hs256-public-key", "/api/v2/users/1"),
    ("api2-weak-secret", ""),
    ("api2-no-exp", ""),
    ("api2-expired-accepted", "/api/v2/users/1"),
    ("api2-no-bruteforce", "/api/v2/login"),
    ("api2-enumeration", "/api/v2/login"),
    ("api2-query-creds", "/api/v2/users/1"),
    ("api3-mass-assignment", "/api/v2/users/1/profile"),
    ("api3-data-exposure", "/api/v2/users/1"),
    ("api3-data-exposure", "/api/v2/admin/users"),
    ("api3-data-exposure", "/api/v1/users/1"),  # v1 leaks too
    ("api3-data-exposure", "/api/v2/users/2"),  # bob's own record, seen when he probes
    ("api4-no-rate-limit", "/api/v2/products"),
    ("api4-page-size", "/api/v2/products"),
    ("api4-body-size", "/api/v2/login"),
    ("api5-admin", "/api/v2/admin/users"),
    ("api5-method-switch", "/api/v2/products/999999"),
    ("api7-ssrf", "/api/v2/preview"),
    ("api8-headers", "/api/v2/products"),
    ("api8-verbose-errors", "/api/v2/login"),
    ("api8-cors", "/api/v2/products"),
    ("api8-trace", "/api/v2/products"),
    ("api8-server-version", "/api/v2/products"),
    ("api8-sqli", "/api/v2/search"),
    ("api8-nosqli", "/api/v2/login"),
    ("api9-old-version", "/api/v1/users/1"),
    ("api9-undocumented", "/api/v2/debug"),
    ("api9-spec-internal", "/openapi.json"),
    ("graphql-introspection", "/graphql"),
    ("graphql-suggestions", "/graphql"),
    ("graphql-depth", "/graphql"),
    ("graphql-aliases", "/graphql"),
    ("graphql-batching", "/graphql"),
    ("graphql-mutation-get", "/graphql"),
    ("graphql-debug", "/graphql"),
    ("graphql-field-duplication", "/graphql"),  # graphql-core with no cost limit: true of this target too
}


def key(f) -> tuple[str, str]:
    return f.check, urlsplit(f.url).path if f.url.count("/") > 2 else ""


@pytest.fixture(scope="module")
def vulnerable():
    with ThreadedUvicorn(vulnerable_app) as server:
        yield server


@pytest.fixture(scope="module")
def vulnerable_result(vulnerable):
    opts = ScanOptions(vulnerable.url, graphql="/graphql", rate=RATE, allow_destructive=True, logins=SCAN_LOGINS)
    return run_sync(opts)


def test_every_planted_vulnerability_is_found_and_nothing_else(vulnerable_result):
    found = {key(f) for f in vulnerable_result.findings}
    missed = PLANTED - found
    extra = found - PLANTED
    per_check: dict[str, dict] = {}
    for check in sorted({c for c, _ in PLANTED | found}):
        planted = {k for k in PLANTED if k[0] == check}
        got = {k for k in found if k[0] == check}
        tp = len(planted & got)
        per_check[check] = {
            "planted": len(planted),
            "found": len(got),
            "true_positives": tp,
            "precision": round(tp / len(got), 3) if got else None,
            "recall": round(tp / len(planted), 3) if planted else None,
        }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "scan-metrics.json").write_text(json.dumps(per_check, indent=2))
    assert not missed, f"missed: {sorted(missed)}"
    assert not extra, f"not planted (false positives?): {sorted(extra)}"


def test_scan_keeps_its_rate_and_finishes_in_bounded_time(vulnerable_result):
    r = vulnerable_result
    assert r.max_rate_seen <= RATE + 1, r.max_rate_seen
    assert r.seconds < 60 and r.requests < 600, (r.seconds, r.requests)
    (ARTIFACTS / "scan-stats.json").write_text(
        json.dumps({"requests": r.requests, "seconds": round(r.seconds, 2), "max_requests_per_second": r.max_rate_seen})
    )


def test_evidence_is_redacted(vulnerable_result):
    text = json.dumps([f.as_dict() for f in vulnerable_result.findings])
    assert "$2b$12$" not in text  # the exposed password hashes
    assert "alice-password-1" not in text
    forged = next(f for f in vulnerable_result.findings if f.check == "api2-alg-none").as_dict()
    assert all("[redacted" in v for v in forged["request_headers"].values())
    assert "[redacted" in forged["curl"]


def test_the_hardened_twin_has_no_high_or_critical_finding(vulnerable, tmp_path):
    cfg = hardened.config(vulnerable.url, str(tmp_path / "audit.log"))
    with run_gateway(cfg, tmp_path) as gw:
        opts = ScanOptions(
            gw.url,
            openapi=str(hardened.SPEC),
            graphql="/graphql",
            rate=RATE,
            allow_destructive=True,
            identities=[
                Identity("alice", {"Authorization": f"Bearer {hardened.token('1')}"}, "1", "alice"),
                Identity("bob", {"Authorization": f"Bearer {hardened.token('2')}"}, "2", "bob"),
            ],
        )
        result = run_sync(opts)
    serious = [(f.check, f.url, f.evidence) for f in result.findings if f.severity in ("critical", "high")]
    assert not serious, serious
    # the scan did run: the same requests against the vulnerable app find a lot
    assert result.requests > 100


def test_sequential_id_probing_with_one_identity(vulnerable):
    """Only bob: he asks for the neighbours of his own id and reads alice's object."""
    result = run_sync(ScanOptions(vulnerable.url, rate=RATE, checks=["api1"], logins=[SCAN_LOGINS[1]]))
    bola = [f for f in result.findings if f.check == "api1-bola"]
    assert {urlsplit(f.url).path for f in bola} >= {"/api/v2/users/1"}
    assert all("guessing" in f.title for f in bola)
