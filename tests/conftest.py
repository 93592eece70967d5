from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import ThreadedUvicorn  # noqa: E402
from upstream_app import app as upstream_app  # noqa: E402


@pytest.fixture(scope="session")
def upstream():
    with ThreadedUvicorn(upstream_app) as server:
        yield server


@pytest.fixture()
def base_config(upstream, tmp_path):
    """A config with one upstream; tests add routes and policies."""
    return {
        "upstreams": {"up": {"urls": [upstream.url], "timeouts": {"connect": 1, "read": 2, "total": 5}}},
        "policies": {"audit": {"output": str(tmp_path / "audit.log")}},
        "routes": [],
    }
