"""`bastion scan` against independent, realistic targets (tests/targets/shop_sqlite.py: Starlette
+ raw sqlite3; tests/targets/notes_graphql.py: FastAPI + SQLAlchemy + graphql-core), each scored
against the truth table written in its docstring before the scanner ever ran on it. Precision and
recall per check per target go to test-artifacts/scan-real-<target>.json.

The bar: every true entry found, no high or critical finding that is not in the truth table."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import ThreadedUvicorn
from targets import forum_graphql, loyalty_fastapi, notes_graphql, shop_sqlite

from bastion.scanner.runner import ScanOptions, run_sync

# one worker runs this module (scripts/test uses --dist loadgroup): each target is scanned once and
# every assertion and the saved metrics read that one scan
pytestmark = pytest.mark.xdist_group("real-targets")

ARTIFACTS = Path(os.environ.get("BASTION_ARTIFACTS", Path(__file__).resolve().parents[3] / "test-artifacts"))
RATE = 80.0

# mirrors the TRUTH tables in the targets' docstrings: (check, path template); "*" = any path
TRUTH = {
    "shop_sqlite": {
        ("api2-weak-secret", ""),
        ("api2-no-bruteforce", "/api/auth/login"),
        ("api3-mass-assignment", "/api/auth/register"),
        ("api3-plaintext-creds", "/api/users"),
        ("api3-plaintext-creds", "/api/debug/config"),
        ("api3-plaintext-creds", "/api/users/{username}"),
        ("api1-bola", "/api/users/{username}"),
        ("api1-bola", "/api/orders/{order_id}"),
        ("api1-bola-write", "/api/orders/{order_id}"),
        ("api1-bola-write", "/api/users/{username}/email"),
        ("api1-bola-write", "/api/users/{username}/password"),
        ("api8-sqli", "/api/products"),
        ("api8-sqli", "/api/products/{product_id}"),
        ("api4-redos", "/api/newsletter"),
        ("api7-ssrf", "/api/users/me/avatar"),
        ("api8-headers", "*"),
        ("api4-no-rate-limit", "*"),
        ("api4-body-size", "*"),
        ("api5-admin", "/api/admin/stats"),
    },
    "notes_graphql": {
        ("api2-weak-secret", ""),
        ("api2-no-bruteforce", "/auth/login"),
        ("api3-mass-assignment", "/auth/register"),
        ("api1-bola", "/notes/{note_id}"),
        ("api8-sqli", "/search"),
        ("api4-body-size", "*"),
        ("api4-no-rate-limit", "*"),
        ("api8-headers", "*"),
        *{
            (c, "/graphql")
            for c in (
                "graphql-introspection",
                "graphql-suggestions",
                "graphql-ide",
                "graphql-depth",
                "graphql-aliases",
                "graphql-batching",
                "graphql-field-duplication",
                "graphql-mutation-get",
                "graphql-debug",
                "graphql-sqli",
                "graphql-ssrf",
                "graphql-cmdi",
                "graphql-xss",
                "graphql-bruteforce",
            )
        },
    },
}
TRUTH["loyalty_fastapi"] = {
    ("api2-weak-secret", ""),
    ("api3-mass-assignment", "/me"),
    ("api2-enumeration", "/auth/forgot"),
    ("api2-code-bruteforce", "/auth/reset"),
    ("api6-flow-replay", "/loyalty/redeem"),
    ("api9-undocumented", "/branch/prescriptions"),
    ("api8-cors", "*"),
    ("api8-headers", "*"),
    ("api4-no-rate-limit", "*"),
    ("api4-body-size", "*"),
}
# the forum's flaws that its fixed twin must not be reported for (the last test)
FORUM_FIXED = (
    "graphql-bola",
    "graphql-path-traversal",
    "graphql-code-bruteforce",
    "graphql-operator-injection",
    "graphql-enumeration",
    "graphql-bruteforce",
    "graphql-depth",
)
TRUTH["forum_graphql"] = {
    ("api2-no-bruteforce", "/auth/login"),
    ("api8-headers", "*"),
    ("api4-body-size", "*"),
    *{
        (c, "/graphql")
        for c in (
            *FORUM_FIXED,
            "graphql-introspection",
            "graphql-suggestions",
            "graphql-aliases",
            "graphql-field-duplication",
        )
    },
}
TARGETS = {
    "shop_sqlite": shop_sqlite,
    "notes_graphql": notes_graphql,
    "loyalty_fastapi": loyalty_fastapi,
    "forum_graphql": forum_graphql,
}


def template(path: str, templates: list[str]) -> str:
    for t in sorted(templates, key=lambda t: (t.count("{"), -len(t))):  # literal paths before templated ones
        if re.fullmatch(re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(t)), path):
            return t
    return path


def score(name: str, findings, templates: list[str]) -> dict:
    truth = TRUTH[name]
    any_path = {c for c, p in truth if p == "*"}
    found = set()
    for f in findings:
        path = urlsplit(f.url).path if f.url.count("/") > 2 else ""
        found.add((f.check, "*" if f.check in any_path else template(path, templates)))
    per_check = {}
    for check in sorted({c for c, _ in truth | found}):
        t = {k for k in truth if k[0] == check}
        g = {k for k in found if k[0] == check}
        tp = len(t & g)
        per_check[check] = {
            "truth": len(t),
            "found": len(g),
            "true_positives": tp,
            "precision": round(tp / len(g), 3) if g else None,
            "recall": round(tp / len(t), 3) if t else None,
            "missed": sorted(p for _, p in t - g),
            "false_positives": sorted(p for _, p in g - t),
        }
    tp = len(truth & found)
    summary = {
        "truth": len(truth),
        "found": len(found),
        "true_positives": tp,
        "recall": round(tp / len(truth), 3),
        "precision": round(tp / len(found), 3) if found else None,
    }
    return {
        "summary": summary,
        "per_check": per_check,
        "missed": sorted(truth - found),
        "false_positives": sorted(found - truth),
    }


@pytest.fixture(scope="module", params=sorted(TARGETS))
def scanned(request):
    mod = TARGETS[request.param]
    with ThreadedUvicorn(mod.create_app()) as server:
        opts = ScanOptions(
            server.url,
            graphql="/graphql" if request.param.endswith("_graphql") else None,
            rate=RATE,
            allow_destructive=True,
            logins=mod.SCAN_LOGINS,
            origins=getattr(mod, "ORIGINS", []),  # the front-ends it is meant to trust, when the target says
        )
        result = run_sync(opts)
    templates = (
        [p for p in mod.create_app().openapi()["paths"]]
        if hasattr(mod.create_app(), "openapi")
        else list(mod.SPEC["paths"])
    )
    report = score(request.param, result.findings, templates)
    report["stats"] = {
        "requests": result.requests,
        "seconds": round(result.seconds, 2),
        "operations": result.operations,
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"scan-real-{request.param}.json").write_text(json.dumps(report, indent=2))
    return request.param, result, report


def test_every_true_vulnerability_is_found(scanned):
    name, _, report = scanned
    assert not report["missed"], f"{name} missed: {report['missed']}"


def test_no_high_or_critical_finding_that_is_not_real(scanned):
    name, result, report = scanned
    fps = set(map(tuple, report["false_positives"]))
    serious = [
        (f.check, f.url, f.evidence[:80])
        for f in result.findings
        if f.severity in ("high", "critical") and any(f.check == c for c, _ in fps)
    ]
    bad = [s for s in serious if any(s[0] == c and (p == "*" or p in s[1]) for c, p in fps)]
    assert not bad, f"{name}: {bad}"


def test_the_public_by_spec_operations_are_not_bola(scanned):
    name, result, _ = scanned
    public = {
        "shop_sqlite": "/api/products/",
        "notes_graphql": "/users/",
        "loyalty_fastapi": "/products",
        "forum_graphql": "/auth/",
    }[name]
    assert not [
        f.url
        for f in result.findings
        if f.check.startswith("api1")
        and urlsplit(f.url).path.startswith(public)
        and not urlsplit(f.url).path.startswith("/users/me")
    ]


def test_a_realistic_scan_is_bounded(scanned):
    _, result, _ = scanned
    assert result.requests < 900, result.requests


def test_the_hardened_shop_behind_bastion_has_no_high_or_critical_finding(tmp_path):
    """The twin: the same shop with its bugs fixed, behind `bastion serve` (headers, rate and
    login limits, body limit). Same options as the scan of the vulnerable shop."""
    from helpers import run_gateway

    with (
        ThreadedUvicorn(shop_sqlite.create_app(hardened=True)) as upstream,
        run_gateway(shop_sqlite.hardened_config(upstream.url), tmp_path) as gw,
    ):
        result = run_sync(ScanOptions(gw.url, rate=RATE, allow_destructive=True, logins=shop_sqlite.SCAN_LOGINS))
    serious = [(f.check, f.url, f.evidence[:100]) for f in result.findings if f.severity in ("high", "critical")]
    assert not serious, serious
    assert result.requests > 150  # the scan did run


def test_the_hardened_notes_behind_bastion_has_no_high_or_critical_finding(tmp_path):
    from helpers import run_gateway

    with (
        ThreadedUvicorn(notes_graphql.create_app(hardened=True)) as upstream,
        run_gateway(notes_graphql.hardened_config(upstream.url), tmp_path) as gw,
    ):
        result = run_sync(
            ScanOptions(gw.url, graphql="/graphql", rate=RATE, allow_destructive=True, logins=notes_graphql.SCAN_LOGINS)
        )
    serious = [(f.check, f.url, f.evidence[:100]) for f in result.findings if f.severity in ("high", "critical")]
    assert not serious, serious
    assert result.requests > 100


def test_the_fixed_loyalty_api_gives_none_of_its_findings():
    """The twin with its bugs fixed in code (a random 32-byte secret, declared fields only, one
    recovery answer for everyone, codes that die after 5 guesses, one redemption per account and
    never one's own, no branch feed, an escaped origin regex): none of the seven checks that find the vulnerable one may fire. It is what
    makes them more than "always says yes"."""
    with ThreadedUvicorn(loyalty_fastapi.create_app(hardened=True)) as server:
        result = run_sync(
            ScanOptions(
                server.url,
                rate=RATE,
                allow_destructive=True,
                logins=loyalty_fastapi.SCAN_LOGINS,
                origins=loyalty_fastapi.ORIGINS,
            )
        )
    new = {
        "api2-weak-secret",
        "api3-mass-assignment",
        "api2-enumeration",
        "api2-code-bruteforce",
        "api6-flow-replay",
        "api9-undocumented",
        "api8-cors",
    }
    assert not [(f.check, f.url, f.evidence[:100]) for f in result.findings if f.check in new]
    assert result.requests > 100  # the scan did run


def test_the_fixed_forum_gives_none_of_its_graphql_findings():
    """The forum's twin (drafts hidden by id too, attachments kept in their folder, one sign-in
    message and a lock after 5 failures, reset codes as strings only and locked after 5 wrong ones,
    at most 8 levels) keeps signUp(username, password) unthrottled and user(id:) public: none of
    the checks that find the vulnerable forum may fire, the sign-up must not be taken for a login
    and the public profile not for a leak."""
    with ThreadedUvicorn(forum_graphql.create_app(hardened=True)) as server:
        result = run_sync(
            ScanOptions(
                server.url, graphql="/graphql", rate=RATE, allow_destructive=True, logins=forum_graphql.SCAN_LOGINS
            )
        )
    checks = {*FORUM_FIXED, "api2-no-bruteforce"}
    assert not [(f.check, f.evidence[:100]) for f in result.findings if f.check in checks]
    assert result.requests > 60  # the scan did run
