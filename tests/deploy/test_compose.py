"""The compose example and the image's default config, without a container runtime: compose.yaml
is consistent (every file it mounts exists, the build points at the Containerfile), both bastion
configs pass the real `bastion check` (with the URLs pointed at this machine's Redis and a SQLite
database instead of compose's service names), and the Prometheus config passes promtool."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from .test_monitoring import promtool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
TOKEN = "compose-test-admin-token-" + "z" * 10
KEK = "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg="


def check(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}, **env},
    )


def test_compose_file_is_consistent():
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    assert {"gateway", "demo", "redis", "postgres"} <= set(services)
    gw = services["gateway"]
    assert (DEPLOY / gw["build"]["context"] / gw["build"]["dockerfile"]).resolve() == DEPLOY / "Containerfile"
    for svc in services.values():
        for v in svc.get("volumes", []):
            src, _, rest = v.partition(":")
            if src.startswith("."):
                assert (DEPLOY / src).exists(), v
    assert "./compose/bastion.yaml:/etc/bastion/bastion.yaml:ro" in gw["volumes"]
    assert services["demo"]["entrypoint"][-4:] == ["--host", "0.0.0.0", "--port", "8000"]
    # the admin listener is published on loopback only
    assert "127.0.0.1:9901:9901" in gw["ports"]


def test_compose_gateway_config_passes_check(tmp_path, redis_url):
    env = {
        "BASTION_ADMIN_TOKEN": TOKEN,
        "BASTION_KEY_ENCRYPTION_KEY": KEK,
        "BASTION_REDIS_URL": redis_url,
        "BASTION_DATABASE_URL": f"sqlite:///{tmp_path / 'identity.db'}",
        "DEMO_UPSTREAM_URL": "http://127.0.0.1:9",
    }
    r = check(DEPLOY / "compose/bastion.yaml", env)
    assert r.returncode == 0 and "ok" in r.stderr, r.stderr
    # no admin token: refused, naming the variable
    r = check(DEPLOY / "compose/bastion.yaml", {k: v for k, v in env.items() if k != "BASTION_ADMIN_TOKEN"})
    assert r.returncode == 2 and "BASTION_ADMIN_TOKEN" in r.stderr


def test_image_default_config_passes_check():
    r = check(DEPLOY / "bastion.yaml", {"BASTION_ADMIN_TOKEN": TOKEN})
    assert r.returncode == 0 and "ok" in r.stderr, r.stderr


def test_compose_prometheus_config_loads_the_alerts(tmp_path):
    text = (DEPLOY / "compose/prometheus.yml").read_text()
    assert "/etc/prometheus/bastion-alerts.yaml" in text
    (tmp_path / "prometheus.yml").write_text(
        text.replace("/etc/prometheus/bastion-alerts.yaml", str(DEPLOY / "prometheus/bastion-alerts.yaml"))
    )
    r = promtool("check", "config", str(tmp_path / "prometheus.yml"))
    assert r.returncode == 0 and "SUCCESS" in r.stdout + r.stderr, r.stdout + r.stderr
