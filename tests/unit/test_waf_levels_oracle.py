"""The WAF's engine (CRS sections above the paranoia level cut out, CRS setup variables preset)
against an oracle: libmodsecurity with every CRS file loaded whole and no preset, through the
same bindings. Beyond tests/unit/test_waf_levels.py: anomaly thresholds other than 5,
`exclude_rules`, and JSON bodies and headers as well as queries. Same verdict and same attack
rules matched for every request, or the cut changed what CRS does."""

from __future__ import annotations

import json
import os
from urllib.parse import quote

import pytest

from bastion.policies import waf as waf_module
from bastion.policies.waf import CRS_RULES, WafConfig

pytestmark = pytest.mark.skipif(not os.path.isdir(CRS_RULES), reason="CRS rules not installed")

PAYLOADS = [
    "meeting notes",
    "O'Reilly",
    "1' or '1'='1",
    "1 union select 1,2",
    "char(65)",
    "@@version",
    "1 AND 1=1",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "../../etc/passwd",
    ";cat /etc/passwd",
    "${jndi:ldap://x/a}",
    "<?php system($_GET[1]); ?>",
    "php://filter/resource=x",
    "() { :; }; echo",
    "{{7*7}}",
    "~root",
    "a=1&b=2",
]


def _requests():
    for p in PAYLOADS:
        yield "GET", "/api/items?q=" + quote(p), [("Host", "a"), ("User-Agent", "curl/8")], b"", None
        body = json.dumps({"q": p}).encode()
        headers = [("Host", "a"), ("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        yield "POST", "/api/items", headers, body, "JSON"
        yield "GET", "/api/items", [("Host", "a"), ("User-Agent", p), ("Referer", p)], b"", None
    yield "GET", "/x.bak", [("Host", "a")], b"", None
    yield "GET", "/x", [], b"", None
    yield "GET", "/x", [("Host", "127.0.0.1")], b"", None


def _engine(config: WafConfig, whole: bool, monkeypatch):
    with monkeypatch.context() as m:
        if whole:
            m.setattr(waf_module, "_above_level_removed", lambda path, level: None)
            m.setattr(waf_module, "_crs_defaults", lambda rules_dir, already: [])
        return waf_module._engine(config)


def _run(engine_rules, method, uri, headers, body, processor):
    import libmodsecurity

    engine, rules = engine_rules
    matched: list[int] = []
    engine.set_rule_message_callback(lambda msg: matched.append(msg.rule_id))
    try:
        t = libmodsecurity.Transaction(engine, rules)
        t.process_connection("127.0.0.1", 0, "127.0.0.1", 0)
        t.process_uri(uri, method, "1.1")
        for k, v in headers:
            t.add_request_header(k, v)
        if processor:
            t.add_request_header("X-Bastion-Body-Processor", processor)
        t.process_request_headers()
        if body:
            t.append_request_body(body)
        t.process_request_body()
        it = t.intervention()
    finally:
        engine.set_rule_message_callback(None)
    status = it.status if it is not None and it.disruptive else 200
    return status, sorted({r for r in matched if 910000 <= r < 949000})


@pytest.mark.parametrize(
    "level,threshold,exclude",
    [(1, 5, []), (1, 3, [942100]), (1, 10, [941100, 941110, 941160]), (2, 5, []), (2, 10, [942100, 920350])],
)
def test_the_cut_engine_answers_as_crs_loaded_whole(level, threshold, exclude, monkeypatch):
    config = WafConfig(paranoia_level=level, anomaly_threshold=threshold, exclude_rules=exclude)
    cut, whole = _engine(config, False, monkeypatch), _engine(config, True, monkeypatch)
    verdicts = set()
    for request in _requests():
        got, want = _run(cut, *request), _run(whole, *request)
        assert got == want, (request[:2], got, want)
        verdicts.add(got[0])
    assert verdicts == {200, 403}  # the table has requests each way at this level


def test_the_oracle_tells_a_cut_one_level_too_low(monkeypatch):
    """The comparison can fail: cut at level 1, a level-2 engine misses level-2 rules."""
    config = WafConfig(paranoia_level=2)
    real = waf_module._above_level_removed
    with monkeypatch.context() as m:
        m.setattr(waf_module, "_above_level_removed", lambda path, level: real(path, 1))
        too_low = waf_module._engine(config)
    whole = _engine(config, True, monkeypatch)
    request = ("GET", "/x?q=char(65)", [("Host", "a")], b"", None)
    assert _run(too_low, *request)[1] != _run(whole, *request)[1]
