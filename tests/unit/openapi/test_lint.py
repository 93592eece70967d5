"""`bastion openapi lint` finds what is planted in tests/specs/insecure.yaml, and only that."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bastion.openapi.lint import lint_spec
from bastion.openapi.spec import load_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"


def test_planted_findings():
    found = {(f.severity, f.rule, f.where) for f in lint_spec(load_spec(SPECS / "insecure.yaml"))}
    assert found == {
        ("high", "plain-http-server", "insecure.yaml#/servers/0"),
        ("high", "api-key-in-query", "insecure.yaml#/components/securitySchemes/key"),
        ("high", "oauth2-implicit-flow", "insecure.yaml#/components/securitySchemes/oauth/flows/implicit"),
        ("medium", "http-basic", "insecure.yaml#/components/securitySchemes/basic"),
        ("high", "no-security", "insecure.yaml#/paths/~1users/get"),
        ("low", "unbounded-string", "insecure.yaml#/paths/~1users/get/parameters/0/schema"),
        ("medium", "open-object", "insecure.yaml#/paths/~1users/post/requestBody/content/application~1json/schema"),
        (
            "medium",
            "unbounded-array",
            "insecure.yaml#/paths/~1users/post/requestBody/content/application~1json/schema/properties/tags",
        ),
    }


def test_cli_exit_codes_and_json():
    cmd = [sys.executable, "-m", "bastion.cli", "openapi", "lint"]
    bad = subprocess.run([*cmd, str(SPECS / "insecure.yaml"), "--format", "json"], capture_output=True, text=True)
    assert bad.returncode == 1, bad.stderr
    assert {f["rule"] for f in json.loads(bad.stdout)} >= {"no-security", "api-key-in-query"}
    ok = subprocess.run([*cmd, str(SPECS / "petstore.yaml")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout  # medium and below only
    strict = subprocess.run([*cmd, str(SPECS / "petstore.yaml"), "--fail-on", "medium"], capture_output=True)
    assert strict.returncode == 1
    broken = subprocess.run([*cmd, str(SPECS / "nope.yaml")], capture_output=True, text=True)
    assert broken.returncode == 2 and "cannot be read" in broken.stderr
