"""`origins` in scan.yaml reaches the scan: the CORS look-alikes of the origins an API trusts
(the loyalty target's regex leaves its dots unescaped) are found from the command line, and a
malformed `origins` is a clear error."""

from __future__ import annotations

import json

import yaml
from helpers import ThreadedUvicorn
from targets import loyalty_fastapi
from typer.testing import CliRunner

from bastion.cli import app as cli


def test_origins_from_scan_yaml_build_the_cors_lookalikes(tmp_path):
    with ThreadedUvicorn(loyalty_fastapi.create_app()) as server:
        base = [server.url, "--checks", "api8-cors", "--rate", "200", "--format", "json", "--fail-on", "never"]
        blind = CliRunner().invoke(cli, ["scan", *base])
        assert blind.exit_code == 0, blind.output
        assert not [f for f in json.loads(blind.stdout)["findings"] if f["check"] == "api8-cors"]
        cfg = tmp_path / "scan.yaml"
        cfg.write_text(yaml.safe_dump({"origins": loyalty_fastapi.ORIGINS}))
        told = CliRunner().invoke(cli, ["scan", *base, "--config", str(cfg)])
        assert told.exit_code == 0, told.output
        cors = [f for f in json.loads(told.stdout)["findings"] if f["check"] == "api8-cors"]
        assert cors, told.stdout[:2000]
        cfg.write_text(yaml.safe_dump({"origins": "https://app.example.com"}))
        bad = CliRunner().invoke(cli, ["scan", *base, "--config", str(cfg)])
        assert bad.exit_code == 2 and "origins" in bad.output
