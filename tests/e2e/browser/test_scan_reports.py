"""The scanner's reports: SARIF valid against the official 2.1.0 schema, the HTML report rendered
by headless Chromium (screenshot kept, no console errors), JSON/Markdown/console, and the CLI's
exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from helpers import PROCESS_SECONDS, ThreadedUvicorn
from targets.vulnerable import SCAN_LOGINS
from targets.vulnerable import app as vulnerable_app

from bastion.scanner.reporters import FORMATS
from bastion.scanner.runner import ScanOptions, run_sync

from .conftest import real_errors, screenshot

SCHEMA = Path(__file__).resolve().parents[3] / ".cache" / "sarif-2.1.0-rtm.5.json"
LOGIN = "/api/v2/login"


@pytest.fixture(scope="module")
def target():
    with ThreadedUvicorn(vulnerable_app) as server:
        yield server


@pytest.fixture(scope="module")
def result(target):
    return run_sync(ScanOptions(target.url, graphql="/graphql", rate=80, logins=SCAN_LOGINS))


def test_sarif_is_valid_against_the_official_schema(result):
    if not SCHEMA.exists():  # never a silent skip: scripts/test fetches it from npm
        pytest.fail(f"{SCHEMA} is missing (scripts/test fetches it with npm)")
    doc = json.loads(FORMATS["sarif"](result))
    jsonschema.Draft4Validator(json.loads(SCHEMA.read_text())).validate(doc)
    run = doc["runs"][0]
    assert len(run["results"]) == len(result.findings) and run["tool"]["driver"]["rules"]
    assert all(r["level"] in ("error", "warning", "note") for r in run["results"])


def test_json_and_markdown_reports(result):
    doc = json.loads(FORMATS["json"](result))
    assert doc["schema"] == "bastion-scan/1"
    assert set(doc["summary"]) == {"critical", "high", "medium", "low", "info"}
    f = doc["findings"][0]
    assert {
        "check",
        "title",
        "owasp",
        "cwe",
        "severity",
        "confidence",
        "method",
        "url",
        "evidence",
        "curl",
        "remediation",
        "bastion",
    } <= set(f)
    md = FORMATS["md"](result)
    assert md.startswith("# bastion scan") and "```sh" in md
    assert "CRITICAL" in FORMATS["console"](result)


def test_html_report_renders_in_chromium(result, page, tmp_path):
    path = tmp_path / "report.html"
    path.write_text(FORMATS["html"](result))
    page.goto(path.as_uri())
    assert page.locator("h1").inner_text() == "bastion scan"
    assert page.locator("section.card").count() >= len(result.findings)
    assert page.locator("svg rect").count() >= 5  # the severity and category charts
    assert "$2b$12$" not in page.content()  # redacted evidence
    screenshot(page, "scan-report")
    assert not real_errors(page), page.console_errors


def test_cli_formats_outputs_and_exit_codes(target, tmp_path):
    cfg = tmp_path / "scan.yaml"
    cfg.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "alice",
                        "username": "alice",
                        "login": {
                            "path": LOGIN,
                            "json": {"username": "alice", "password": "alice-password-1"},
                            "token": "token",
                        },
                    }
                ]
            }
        )
    )
    base = [
        sys.executable,
        "-m",
        "bastion.cli",
        "scan",
        target.url,
        "--config",
        str(cfg),
        "--rate",
        "80",
        "--checks",
        "api8,api9",
    ]
    out = tmp_path / "report"
    r = subprocess.run(
        [*base, "--format", "json", "--format", "sarif", "--format", "html", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1, r.stdout + r.stderr  # high findings (--fail-on high by default)
    assert json.loads(out.with_suffix(".json").read_text())["findings"]
    assert out.with_suffix(".sarif").exists() and out.with_suffix(".html").exists()
    checks = {f["check"] for f in json.loads(out.with_suffix(".json").read_text())["findings"]}
    assert checks and all(c.startswith(("api8", "api9")) for c in checks)
    never = subprocess.run(
        [*base, "--skip", "api8", "--fail-on", "never", "--format", "md"],
        capture_output=True,
        text=True,
        timeout=PROCESS_SECONDS,
    )
    assert never.returncode == 0 and "api9-undocumented" in never.stdout and "api8-" not in never.stdout
    down = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "scan", "http://127.0.0.1:9", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=PROCESS_SECONDS,
    )
    assert down.returncode == 2 and "unreachable" in down.stderr and "Traceback" not in down.stdout + down.stderr
