"""Field-level encryption through a real gateway: the upstream stores ciphertext, the client
gets plaintext back; tampering and wrong keys are refused, never decrypted into something else."""

import base64
import json
import os

import pytest
import upstream_app
from helpers import raw_request, run_gateway
from pydantic import ValidationError

from bastion.policies.field_encryption import FieldEncryptionConfig

KEY_A = base64.b64encode(os.urandom(32)).decode()
KEY_B = base64.b64encode(os.urandom(32)).decode()


def cfg(base_config, tmp_path, keys):
    (tmp_path / "b.key").write_text(KEY_B)
    base_config["routes"] = [
        {
            "path": "/*",
            "upstream": "up",
            "policies": {
                "field_encryption": {
                    "keys": keys,
                    "encrypt_request": ["card.number", "ssn"],
                    "decrypt_response": ["card.number", "ssn"],
                }
            },
        }
    ]
    return base_config


def post(port, doc):
    return raw_request(port, "POST", "/mirror", {"Content-Type": "application/json"}, json.dumps(doc).encode())


def test_round_trip(base_config, tmp_path, monkeypatch):
    monkeypatch.setenv("FIELD_KEY_A", KEY_A)
    with run_gateway(cfg(base_config, tmp_path, [{"id": "a", "source": "env:FIELD_KEY_A"}]), tmp_path) as g:
        doc = {"name": "alice", "ssn": "078-05-1120", "card": {"number": "4111111111111111", "exp": "12/30"}}
        r = post(g.port, doc)
        assert r.status == 200 and r.json() == doc
        stored = json.loads(upstream_app.MIRRORED[-1])
        assert stored["name"] == "alice" and stored["card"]["exp"] == "12/30"
        assert stored["ssn"].startswith("enc:v1:a:") and stored["card"]["number"].startswith("enc:v1:a:")
        assert "078-05-1120" not in upstream_app.MIRRORED[-1].decode()


def test_tampered_or_moved_values_are_refused(base_config, tmp_path, monkeypatch):
    monkeypatch.setenv("FIELD_KEY_A", KEY_A)
    with run_gateway(cfg(base_config, tmp_path, [{"id": "a", "source": "env:FIELD_KEY_A"}]), tmp_path) as g:
        post(g.port, {"ssn": "078-05-1120", "card": {"number": "4111111111111111"}})
        stored = json.loads(upstream_app.MIRRORED[-1])
    # replay what the upstream would return, through a gateway that only decrypts
    base_config["routes"] = [
        {
            "path": "/*",
            "upstream": "up",
            "policies": {
                "field_encryption": {"keys": [{"id": "a", "source": "env:FIELD_KEY_A"}], "decrypt_request": ["ssn"]}
            },
        }
    ]
    with run_gateway(base_config, tmp_path) as g:
        ok = raw_request(
            g.port, "POST", "/mirror", {"Content-Type": "application/json"}, json.dumps({"ssn": stored["ssn"]}).encode()
        )
        assert ok.status == 200 and ok.json()["ssn"] == "078-05-1120"
        tampered = stored["ssn"][:-2] + ("AA" if not stored["ssn"].endswith("AA") else "BB")
        r = raw_request(
            g.port, "POST", "/mirror", {"Content-Type": "application/json"}, json.dumps({"ssn": tampered}).encode()
        )
        assert r.status == 400 and r.json()["type"].endswith("/field-decryption-failed")
        moved = raw_request(
            g.port,
            "POST",
            "/mirror",
            {"Content-Type": "application/json"},
            json.dumps({"ssn": stored["card"]["number"]}).encode(),
        )
        assert moved.status == 400  # the field path is bound into the ciphertext


def test_rotation_and_wrong_key(base_config, tmp_path, monkeypatch):
    monkeypatch.setenv("FIELD_KEY_A", KEY_A)
    keys = [{"id": "b", "source": "file:b.key"}, {"id": "a", "source": "env:FIELD_KEY_A"}]
    with run_gateway(cfg(base_config, tmp_path, [{"id": "a", "source": "env:FIELD_KEY_A"}]), tmp_path) as g:
        post(g.port, {"ssn": "old"})
        old = json.loads(upstream_app.MIRRORED[-1])["ssn"]
    base_config["routes"] = [
        {
            "path": "/*",
            "upstream": "up",
            "policies": {"field_encryption": {"keys": keys, "decrypt_request": ["ssn"], "encrypt_response": ["ssn"]}},
        }
    ]
    with run_gateway(base_config, tmp_path) as g:
        r = raw_request(
            g.port, "POST", "/mirror", {"Content-Type": "application/json"}, json.dumps({"ssn": old}).encode()
        )
        assert r.json()["ssn"].startswith("enc:v1:b:")  # old key still decrypts; the new one encrypts
    base_config["routes"] = [
        {
            "path": "/*",
            "upstream": "up",
            "policies": {
                "field_encryption": {"keys": [{"id": "a", "source": "file:b.key"}], "decrypt_request": ["ssn"]}
            },
        }
    ]
    with run_gateway(base_config, tmp_path) as g:  # key id "a", but the wrong bytes
        r = raw_request(
            g.port, "POST", "/mirror", {"Content-Type": "application/json"}, json.dumps({"ssn": old}).encode()
        )
        assert r.status == 400


def test_bad_key_config_is_refused():
    with pytest.raises(ValidationError):
        FieldEncryptionConfig(keys=[])
    with pytest.raises(ValidationError):
        FieldEncryptionConfig(keys=[{"id": "a b", "source": "env:X"}])


def test_undecryptable_answer_is_a_502_problem(base_config, tmp_path, monkeypatch):
    monkeypatch.setenv("FIELD_KEY_A", KEY_A)
    base_config["routes"] = [
        {
            "path": "/*",
            "upstream": "up",
            "policies": {
                "field_encryption": {"keys": [{"id": "a", "source": "env:FIELD_KEY_A"}], "decrypt_response": ["ssn"]}
            },
        }
    ]
    with run_gateway(base_config, tmp_path) as g:
        r = raw_request(
            g.port,
            "POST",
            "/mirror",
            {"Content-Type": "application/json"},
            json.dumps({"ssn": "enc:v1:a:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}).encode(),
        )
        assert r.status == 502 and r.json()["type"].endswith("/field-decryption-failed")
        assert b"AAAA" not in r.body
