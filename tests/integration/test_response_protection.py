"""Response filtering and upstream error masking through a real gateway."""

import logging

from helpers import audit_lines, raw_request, run_gateway


def cfg(base_config, **filter_cfg):
    base_config["routes"] = [
        {"path": "/*", "upstream": "up", "policies": {"response_filter": filter_cfg}},
        {"path": "/raw/*", "upstream": "up", "policies": {"error_masking": {"enabled": False}}},
    ]
    return base_config


def test_sensitive_fields_removed_at_every_depth(base_config, tmp_path):
    with run_gateway(cfg(base_config), tmp_path) as g:
        r = raw_request(g.port, "GET", "/sensitive", {"X-Request-Id": "filter-1"})
        doc = r.json()
        assert r.status == 200 and doc["name"] == "alice" and doc["id"] == 1
        assert "Password" not in doc and "password_hash" not in doc
        assert "ssn" not in doc["profile"] and "bio" not in doc["profile"]  # a Luhn-valid card number
        order = doc["profile"]["orders"][0]
        assert "api_key" not in order and order["note"] == "ok"
        assert order["deep"] == [{}]  # secret_key by name, the JWT-shaped value by value
        assert doc["not_a_card"] == "1234 5678 9012 3456"  # fails Luhn: kept
        assert doc["tags"] == ["public", "[FILTERED]"]
        assert int(r.header("content-length")) == len(r.body)
        line = next(x for x in audit_lines(tmp_path / "audit.log", "filter-1") if x["request_id"] == "filter-1")
        assert line["filtered_fields"] == 8


def test_mask_mode_and_custom_patterns(base_config, tmp_path):
    with run_gateway(
        cfg(base_config, mode="mask", fields=["password"], field_patterns=[".*_hash", "n.me"], values=[]), tmp_path
    ) as g:
        doc = raw_request(g.port, "GET", "/sensitive").json()
        assert doc["Password"] == "[FILTERED]" and doc["password_hash"] == "[FILTERED]"
        assert doc["name"] == "[FILTERED]" and doc["profile"]["ssn"] == "078-05-1120"


def test_large_bodies_are_filtered_too_and_non_json_passes(base_config, tmp_path):
    # issue 22: a body over max_bytes used to pass untouched; now it is filtered as a stream
    with run_gateway(cfg(base_config, max_bytes=100_000), tmp_path) as g:
        big = raw_request(g.port, "GET", "/big-json")
        assert big.status == 200 and b"password" not in big.body and len(big.body) > 300_000
        assert big.json()["filler"] == "x" * 300_000
        streamed = raw_request(g.port, "GET", "/stream?n=3&gap=0.01")  # text/plain, not JSON
        assert streamed.body.startswith(b"part 0")


def test_upstream_5xx_is_masked_but_logged(base_config, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="bastion.upstream_errors"):
        with run_gateway(cfg(base_config), tmp_path) as g:
            r = raw_request(g.port, "GET", "/crash", {"X-Request-Id": "crash-1"})
            raw = raw_request(g.port, "GET", "/raw/crash")
    assert r.status == 500 and r.header("content-type") == "application/problem+json"
    doc = r.json()
    assert doc["type"].endswith("/upstream-error") and doc["request_id"] == "crash-1"
    assert b"Traceback" not in r.body and b"SELECT" not in r.body
    assert "crash-1" in caplog.text and "Traceback" in caplog.text  # operators keep the original
    assert raw.status == 500 and b"Traceback" in raw.body  # masking turned off on that route
