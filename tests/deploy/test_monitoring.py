"""The shipped Prometheus alerts and Grafana dashboard (deploy/): promtool checks and unit-tests the
alert rules; every dashboard query parses (as a recording rule, through promtool) and names only
metrics that a real scrape of a running gateway's admin /metrics exposes (the alerts too, plus
Prometheus's own `up`)."""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import promql_parser
import yaml
from helpers import raw_request, run_gateway
from prometheus_client.parser import text_string_to_metric_families

from bastion.auth.apikeys import hash_key
from bastion.certs import make_dev_certs

from .tools import need

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy/prometheus/bastion-alerts.yaml"
ALERT_TESTS = ROOT / "deploy/prometheus/bastion-alerts.test.yaml"
DASHBOARD = ROOT / "deploy/grafana/bastion-dashboard.json"
SPECS = ROOT / "tests/specs"
KEY = "bk_test_" + "M" * 43

# Grafana's variables, as the dashboard's user would pick them
VARIABLES = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "job": "bastion",
    "instance": ".*",
    "route": ".*",
    "datasource": "prometheus",
}


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([need("promtool", "prometheus"), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def substitute(expr: str) -> str:
    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: VARIABLES[m.group(1) or m.group(2)], expr)
    assert "$" not in out, out
    return out


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every query the dashboard runs: panel targets, template variables
    (the selector inside label_values) and annotations."""
    doc = json.loads(DASHBOARD.read_text())
    out: list[tuple[str, str]] = []

    def panels(items: list) -> Iterator[dict]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(doc["panels"]):
        for t in p.get("targets", []):
            out.append((f"panel {p['title']!r} {t['refId']}", substitute(t["expr"])))
    for v in doc["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*\w+\)", v["query"]["query"])
            assert m, v
            out.append((f"variable {v['name']}", substitute(m.group(1))))
    for a in doc["annotations"]["list"]:
        out.append((f"annotation {a['name']!r}", substitute(a["expr"])))
    return out


def alert_queries() -> list[tuple[str, str]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [(r["alert"], r["expr"]) for g in doc["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, from its syntax tree (promql-parser)."""
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name or next((m.value for m in node.matchers.matchers if m.name == "__name__"), None)
            assert name, f"a selector without a metric name: {node}"
            names.add(name)
        elif isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
        elif isinstance(node, promql_parser.BinaryExpr):
            walk(node.lhs)
            walk(node.rhs)
        elif isinstance(node, promql_parser.Call):
            for a in node.args:
                walk(a)
        elif isinstance(node, promql_parser.AggregateExpr):
            walk(node.expr)
            if node.param is not None:
                walk(node.param)
        elif isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
            walk(node.expr)

    walk(promql_parser.parse(expr))
    return names


def test_name_extraction_sees_every_selector():
    """The walk above must not miss selectors hidden in functions, aggregations, operators or
    subqueries (otherwise the comparison with the scrape proves nothing)."""
    expr = (
        '(histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="1"}[5m]))) / on() group_left() (-b)) '
        'and (max_over_time(c[10m:1m]) > bool topk(3, d)) or {__name__="e"} unless (f offset 5m)'
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "d", "e", "f"}


def test_alert_rules_pass_promtool_check_and_unit_tests():
    r = promtool("check", "rules", str(ALERTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(alert_queries())} rules found" in r.stdout
    r = promtool("test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    # every alert has cases in the unit tests, firing (exp_alerts with labels) and quiet ones
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    cases = [c for t in tests for c in t["alert_rule_test"]]
    for name, _ in alert_queries():
        assert any(c["alertname"] == name and c["exp_alerts"] for c in cases), f"{name} never fires in a test"


def test_alert_unit_tests_fail_when_a_threshold_is_wrong(tmp_path):
    """The unit tests can fail: loosen each alert's threshold tenfold and promtool must say so."""
    text = ALERTS.read_text()
    for old, new in [
        ("          ) > 0.05\n", "          ) > 0.5\n"),
        ("(bastion_upstream_seconds_bucket[5m]))) > 1\n", "(bastion_upstream_seconds_bucket[5m]))) > 3\n"),
        ("> 4 * sum by (job) (rate(bastion_waf", "> 40 * sum by (job) (rate(bastion_waf"),
        ("bastion_store_up == 0", "bastion_store_up == 2"),
        ("time() < 14 * 86400", "time() < 140 * 86400"),
        ("time() < 3 * 86400", "time() < 30 * 86400"),
    ]:
        assert old in text, old
        (tmp_path / ALERTS.name).write_text(text.replace(old, new))
        (tmp_path / ALERT_TESTS.name).write_text(ALERT_TESTS.read_text())
        r = promtool("test", "rules", ALERT_TESTS.name, cwd=tmp_path)
        assert r.returncode != 0 and "FAILED" in r.stdout + r.stderr, (old, r.stdout + r.stderr)


def test_every_dashboard_query_parses(tmp_path):
    queries = dashboard_queries()
    assert len(queries) >= 25
    rules = {
        "groups": [
            {
                "name": "bastion-dashboard",
                "rules": [{"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(queries)],
            }
        ]
    }
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    r = promtool("check", "rules", str(path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(queries)} rules found" in r.stdout
    # and a broken one is caught the same way (the check is not vacuous)
    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(bastion_requests_total[5m])"}]}]}
        )
    )
    assert promtool("check", "rules", str(path)).returncode != 0


def test_dashboard_covers_what_operators_look_at():
    titles = " | ".join(p["title"].lower() for p in json.loads(DASHBOARD.read_text())["panels"])
    for needle in [
        "request rate",
        "status mix",
        "latency percentiles",
        "rejections by policy",
        "rate-limit headroom",
        "upstream errors",
        "store health",
    ]:
        assert needle in titles, needle


def scrape_of_a_running_gateway(base_config, tmp_path, redis_url) -> tuple[set[str], str]:
    """A real gateway with an admin listener, auth, a Redis rate-limit store, an OpenAPI route and
    a dead upstream; traffic that touches each; then the admin /metrics, parsed."""
    tag = "mon" + uuid.uuid4().hex[:6]
    cfg = base_config
    cfg["admin"] = {"host": "127.0.0.1", "port": 0, "token": "t" * 32}
    tls = make_dev_certs(tmp_path / "tls", ["127.0.0.1"])  # a TLS listener: its certificate's expiry
    cfg["listeners"] = [
        {"host": "127.0.0.1", "port": 0},
        {"host": "127.0.0.1", "port": 0, "tls": {"cert": str(tls["cert"]), "key": str(tls["key"])}},
    ]
    cfg["upstreams"]["dead"] = {"urls": ["http://127.0.0.1:1"], "timeouts": {"connect": 0.5, "total": 2}}
    cfg["policies"]["auth"] = {
        "require": [],
        "schemes": {
            "api_key": {"type": "api_key", "keys": [{"id": tag, "hash": hash_key(KEY), "owner": "ops", "scopes": []}]},
            "bearer": {
                "type": "jwt",
                "issuers": [{"issuer": "https://issuer.test", "algorithms": ["HS256"], "keys": [{"secret": "s" * 40}]}],
            },
        },
    }
    cfg["policies"]["rate_limit"] = {"store": redis_url, "key_prefix": tag, "limits": ["1000/minute"]}
    cfg["routes"] = [
        {
            "path": "/api/*",
            "upstream": "up",
            "name": f"{tag}-api",
            "policies": {"auth": {"require": [{"api_key": []}]}},
        },
        {
            "path": "/limited/*",
            "upstream": "up",
            "name": f"{tag}-limited",
            "policies": {"rate_limit": {"algorithm": "sliding_log", "limits": [{"rate": "1/minute", "name": "tight"}]}},
        },
        {"path": "/dead/*", "upstream": "dead", "name": f"{tag}-dead"},
        {"openapi": str(SPECS / "petstore.yaml"), "upstream": "up"},
    ]
    with run_gateway(cfg, tmp_path) as g:
        key = {"X-API-Key": KEY}
        assert raw_request(g.port, "GET", "/api/x", key).status == 200
        assert raw_request(g.port, "GET", "/api/x").status == 401
        assert [raw_request(g.port, "GET", "/limited/x").status for _ in range(2)] == [200, 429]
        assert raw_request(g.port, "GET", "/dead/x").status == 502
        assert raw_request(g.port, "GET", "/v1/pets?limit=abc", key).status in (400, 422)
        assert raw_request(g.port, "GET", "/nowhere").status == 404
        text = raw_request(g.server.admin_port, "GET", "/metrics").body.decode()
    names = {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}
    return names, text


def test_dashboard_and_alerts_name_only_metrics_a_real_scrape_exposes(base_config, tmp_path, redis_url):
    scraped, text = scrape_of_a_running_gateway(base_config, tmp_path, redis_url)
    # the traffic above made the labelled series of this gateway (not left over from other tests)
    tag = re.search(r'route="(mon\w{6})-dead"', text).group(1)
    assert f'bastion_upstream_errors_total{{kind="unavailable",route="{tag}-dead"}}' in text
    assert 'bastion_store_up{store="redis ' in text
    used_by_dashboard = {n: w for w, q in dashboard_queries() for n in metric_names(q)}
    used_by_alerts = {n: w for w, q in alert_queries() for n in metric_names(q)}
    assert {"bastion_requests_total", "bastion_store_up", "bastion_upstream_seconds_bucket"} <= set(used_by_dashboard)
    missing = {n: w for n, w in used_by_dashboard.items() if n not in scraped}
    assert not missing, f"the dashboard names metrics a scrape does not expose: {missing}"
    missing = {n: w for n, w in used_by_alerts.items() if n not in scraped and n != "up"}  # `up`: Prometheus's own
    assert not missing, f"the alerts name metrics a scrape does not expose: {missing}"
    # and a name that is not there is noticed
    assert "bastion_request_total" not in scraped and "bastion_certificate_expiry_seconds" not in scraped
