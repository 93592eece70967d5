"""API lifecycle through a real gateway: deprecation headers, 410 after sunset, unknown versions."""

from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from helpers import audit_lines, raw_request, run_gateway

NOW = datetime.now(UTC)


def config(base_config):
    base_config["policies"]["versioning"] = {
        "media_type": r"application/vnd\.example\.(?P<version>v[0-9]+)\+json",
        "versions": [
            {
                "name": "v1",
                "status": "deprecated",
                "deprecated_at": (NOW - timedelta(days=30)).isoformat(),
                "sunset": (NOW - timedelta(days=1)).isoformat(),
                "successor": "/api/v3",
            },
            {
                "name": "v2",
                "status": "deprecated",
                "deprecated_at": (NOW - timedelta(days=3)).isoformat(),
                "sunset": (NOW + timedelta(days=90)).isoformat(),
                "successor": "/api/v3",
            },
            {"name": "v3"},
            {"name": "v0", "status": "retired", "successor": "/api/v3"},
        ],
    }
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    return base_config


def test_lifecycle(base_config, tmp_path):
    with run_gateway(config(base_config), tmp_path) as g:
        current = raw_request(g.port, "GET", "/api/v3/users")
        assert current.status == 200 and current.header("deprecation") is None

        dep = raw_request(g.port, "GET", "/api/v2/users", {"X-Request-Id": "v2-call"})
        assert dep.status == 200
        assert dep.header("deprecation") == f"@{int((NOW - timedelta(days=3)).timestamp())}"
        sunset = parsedate_to_datetime(dep.header("sunset"))
        assert abs((sunset - (NOW + timedelta(days=90))).total_seconds()) < 1
        assert dep.header("link") == '</api/v3>; rel="successor-version"'

        gone = raw_request(g.port, "GET", "/api/v1/users")
        assert gone.status == 410 and gone.json()["successor"] == "/api/v3"
        assert "retired" in gone.json()["detail"] and gone.header("link") == '</api/v3>; rel="successor-version"'
        assert raw_request(g.port, "GET", "/v0/users").status == 410

        unknown = raw_request(g.port, "GET", "/api/v9/users")
        assert unknown.status == 400 and unknown.json()["supported"] == ["v1", "v2", "v3"]

        by_header = raw_request(g.port, "GET", "/users", {"X-API-Version": "v2"})
        assert by_header.header("deprecation") is not None
        by_media = raw_request(g.port, "GET", "/users", {"Accept": "application/vnd.example.v9+json"})
        assert by_media.status == 400

        line = next(x for x in audit_lines(tmp_path / "audit.log", "v2-call") if x["request_id"] == "v2-call")
        assert line["api_version"] == "v2" and line["deprecated_version"] is True
        policy = next(p for p in g.server.gateway.state.policies if p.name == "versioning")
        assert policy.usage[("v2", "127.0.0.1")] == 2
