"""`bastion cors-audit` end to end: five kinds of real servers on loopback, one audit run.

Each endpoint's truth table below was written from the server's documented behaviour BEFORE the
audit ever ran against it; the run must give each endpoint exactly these findings — no more, no
fewer (check, severity, and for look-alikes and refusals the exact origin).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import jsonschema
import pytest
import yaml
from helpers import STARTUP_SECONDS, ThreadedUvicorn, run_gateway
from servers import serve_tls, serve_wsgi
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from bastion.cli import app as cli
from bastion.policies.cors import CorsConfig

ALLOWED = "https://app.example.com"
SARIF_SCHEMA = Path(__file__).resolve().parents[2] / ".cache" / "sarif-2.1.0-rtm.5.json"

# ---- truth tables: endpoint → [(check, severity, origin that passed or was refused | None)] -------
TRUTH: dict[str, list[tuple[str, str, str | None]]] = {
    # Starlette CORSMiddleware, exact list, narrow methods/headers, credentials: a correct setup.
    "starlette-list": [],
    # Starlette, exact list but allow_methods=["*"], allow_headers=["*"] (mirrors any requested
    # header), max_age a week: the origin check is right, the preflight is wide open.
    "starlette-list-wide": [
        ("cors-preflight-any-method", "low", None),
        ("cors-preflight-any-header", "low", None),
        ("cors-max-age", "low", None),
    ],
    # Starlette allow_origins=["*"] without credentials: a public API; `*` serves the app's origin
    # too and is no trust in any one origin.
    "starlette-public": [],
    # Starlette allow_origin_regex="https://app.example.com.*" (fullmatch, dots unescaped, no end):
    # the suffix look-alike and the unescaped-dot look-alike pass; with credentials → high.
    "starlette-regex": [
        ("cors-lookalike-origin", "high", "https://app.example.com.evil-cors-audit.example"),
        ("cors-lookalike-origin", "high", "https://appxexample.com"),
    ],
    # Flask + flask-cors CORS(app, supports_credentials=True): echoes every Origin (null too) with
    # credentials, and its defaults allow every method and mirror every requested header.
    "flask-reflect": [
        ("cors-any-origin", "medium", None),
        ("cors-credentials-any-origin", "critical", None),
        ("cors-null-origin", "high", None),
        ("cors-preflight-any-method", "low", None),
        ("cors-preflight-any-header", "low", None),
    ],
    # nginx `add_header Access-Control-Allow-Origin $http_origin;` — reflection without
    # credentials, null included, and no Vary; no Allow-Methods/-Headers at all.
    "nginx-reflect": [
        ("cors-any-origin", "medium", None),
        ("cors-null-origin", "medium", None),
        ("cors-vary-missing", "low", None),
    ],
    # bastion's cors policy, the allowed origin listed: nothing to report.
    "bastion-exact": [],
    # bastion's cors policy with `https://*.example.com` and credentials: any label passes,
    # so the sibling and the prefix look-alike of app.example.com are trusted.
    "bastion-pattern": [
        ("cors-lookalike-origin", "high", "https://evil-cors-audit.example.com"),
        ("cors-lookalike-origin", "high", "https://evil-cors-auditapp.example.com"),
    ],
    # bastion's cors policy that lists only a partner: the app's own origin is refused.
    "bastion-tight": [
        ("cors-allowed-refused", "medium", ALLOWED),
    ],
}


def _hello(request):
    return JSONResponse({"ok": True})


def starlette_app(**cors) -> Starlette:
    return Starlette(routes=[Route("/api/items", _hello)], middleware=[Middleware(CORSMiddleware, **cors)])


def flask_app():
    from flask import Flask
    from flask_cors import CORS

    app = Flask("reflect")

    @app.get("/api/me")
    def me():
        return {"user": "alice"}

    CORS(app, supports_credentials=True)
    return app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


NGINX_CONF = """daemon off;
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fcgi;
  uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      add_header Access-Control-Allow-Origin $http_origin;
      return 200 '{{"ok":true}}';
    }}
  }}
}}
"""


@contextlib.contextmanager
def serve_nginx(tmp_path: Path):
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.fail("nginx is needed (apt-get install nginx)")
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = _free_port()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(p=prefix, port=port))
    proc = subprocess.Popen(
        [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + STARTUP_SECONDS
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"nginx did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture()
def estate(base_config, tmp_path):
    """Every server of the truth table, running; name → the endpoint URL to audit."""
    base_config["routes"] = [
        {
            "path": "/api/*",
            "upstream": "up",
            "policies": {
                "cors": {
                    "allow_origins": [ALLOWED],
                    "allow_credentials": True,
                    "allow_methods": ["GET", "POST"],
                    "allow_headers": ["authorization", "content-type"],
                }
            },
        },
        {
            "path": "/shared/*",
            "upstream": "up",
            "policies": {"cors": {"allow_origins": ["https://*.example.com"], "allow_credentials": True}},
        },
        {
            "path": "/partner/*",
            "upstream": "up",
            "policies": {"cors": {"allow_origins": ["https://partner.example.org"]}},
        },
    ]
    with contextlib.ExitStack() as stack:
        s_list = stack.enter_context(
            ThreadedUvicorn(
                starlette_app(
                    allow_origins=[ALLOWED],
                    allow_methods=["GET", "POST"],
                    allow_headers=["Authorization", "Content-Type"],
                    allow_credentials=True,
                )
            )
        )
        s_wide = stack.enter_context(
            ThreadedUvicorn(
                starlette_app(allow_origins=[ALLOWED], allow_methods=["*"], allow_headers=["*"], max_age=7 * 86400)
            )
        )
        s_public = stack.enter_context(ThreadedUvicorn(starlette_app(allow_origins=["*"])))
        s_regex = stack.enter_context(
            ThreadedUvicorn(starlette_app(allow_origin_regex=r"https://app.example.com.*", allow_credentials=True))
        )
        flask_url = stack.enter_context(serve_wsgi(flask_app()))
        nginx_url = stack.enter_context(serve_nginx(tmp_path))
        gw = stack.enter_context(run_gateway(base_config, tmp_path))
        yield {
            "starlette-list": s_list.url + "/api/items",
            "starlette-list-wide": s_wide.url + "/api/items",
            "starlette-public": s_public.url + "/api/items",
            "starlette-regex": s_regex.url + "/api/items",
            "flask-reflect": flask_url + "/api/me",
            "nginx-reflect": nginx_url + "/api/status",
            "bastion-exact": gw.url + "/api/users",
            "bastion-pattern": gw.url + "/shared/users",
            "bastion-tight": gw.url + "/partner/users",
        }


def _observed(endpoint: dict) -> list[tuple[str, str, str | None]]:
    out = []
    for f in endpoint["findings"]:
        origin = (
            f["request_headers"]["Origin"] if f["check"] in ("cors-lookalike-origin", "cors-allowed-refused") else None
        )
        out.append((f["check"], f["severity"], origin))
    return out


def test_one_run_gives_every_endpoint_exactly_its_true_findings(estate, tmp_path):
    urls = tmp_path / "urls.txt"
    names = list(estate)
    # half the endpoints from a file (with comments), half as arguments
    urls.write_text("# the estate\n" + "\n".join(estate[n] + "   # " + n for n in names[::2]) + "\n\n")
    report = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli,
        [
            "cors-audit",
            *[estate[n] for n in names[1::2]],
            "--urls",
            str(urls),
            "--allowed-origin",
            ALLOWED,
            "--rate",
            "200",
            "--format",
            "json",
            "--output",
            str(report),
        ],
    )
    assert result.exit_code == 1, result.output  # a critical finding, --fail-on high by default
    doc = json.loads(report.read_text())
    assert doc["schema"] == "bastion-cors-audit/1"
    by_url = {e["url"]: e for e in doc["endpoints"]}
    assert set(by_url) == set(estate.values())
    mismatches = {}
    for name, url in estate.items():
        e = by_url[url]
        assert e["error"] is None, (name, e["error"])
        if Counter(_observed(e)) != Counter(TRUTH[name]):
            mismatches[name] = {"expected": TRUTH[name], "observed": _observed(e)}
    assert not mismatches, json.dumps(mismatches, indent=2)
    # every finding carries evidence (request and response headers) and a bastion fix
    for e in doc["endpoints"]:
        for f in e["findings"]:
            assert f["request_headers"]["Origin"] and "HTTP " in f["evidence"]
            CorsConfig(**yaml.safe_load(f["bastion"])["policies"]["cors"])  # the fix is a valid cors config
    # the matrix agrees with the findings
    for row in doc["matrix"]:
        name = next(n for n, u in estate.items() if u == row["endpoint"])
        for check in {c for c, _, _ in TRUTH[name]}:
            assert row[check], (name, check)
    assert doc["stats"]["max_requests_per_second"] <= 200


def test_console_matrix_and_exit_codes(estate, tmp_path):
    clean = [estate["starlette-list"], estate["bastion-exact"]]
    r = CliRunner().invoke(cli, ["cors-audit", *clean, "--allowed-origin", ALLOWED, "--rate", "200"])
    assert r.exit_code == 0, r.output
    assert "endpoints × findings" in r.output and estate["bastion-exact"] in r.output
    # medium findings: fail only when asked to
    nginx = estate["nginx-reflect"]
    r = CliRunner().invoke(
        cli,
        [
            "cors-audit",
            nginx,
            estate["flask-reflect"] + "?v=2",
            "--rate",
            "20",
            "--fail-on",
            "never",
            "--format",
            "json",
        ],
    )
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout)["stats"]
    assert stats["hosts"] == 2 and stats["max_requests_per_second"] <= 21  # --rate holds per host
    assert CliRunner().invoke(cli, ["cors-audit", nginx, "--rate", "200"]).exit_code == 0
    r = CliRunner().invoke(
        cli,
        [
            "cors-audit",
            nginx,
            "--rate",
            "200",
            "--fail-on",
            "medium",
            "--format",
            "md",
            "--format",
            "html",
            "--format",
            "sarif",
            "--output",
            str(tmp_path / "r"),
        ],
    )
    assert r.exit_code == 1, r.output
    md = (tmp_path / "r.md").read_text()
    assert f"| `{nginx}` |" in md and "### [medium] CORS reflects an arbitrary origin" in md
    html = (tmp_path / "r.html").read_text()
    assert "<table>" in html and f'<h2 id="e0"><code>{nginx}</code></h2>' in html and "cors-vary-missing" in html
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text())).validate(sarif)  # scripts/test fetches it
    assert {x["ruleId"] for x in sarif["runs"][0]["results"]} == {
        "cors-any-origin",
        "cors-null-origin",
        "cors-vary-missing",
    }


def test_unreachable_endpoint_is_reported_not_raised(tmp_path):
    port = _free_port()
    r = CliRunner().invoke(cli, ["cors-audit", f"http://127.0.0.1:{port}/x", "--timeout", "1", "--format", "json"])
    assert r.exit_code == 2
    doc = json.loads(r.stdout)
    assert doc["endpoints"][0]["error"].startswith("unreachable")


# ---- --header and --insecure: endpoints behind auth, staging certificates -------------------------

SECRET = "Bearer cors-audit-s3cret-0f9e8d"


def _behind_auth() -> Starlette:
    """CORS inside an auth check (a common layering): without credentials every answer is a bare
    401, so the reflection is only visible to an audit that sends the credentials."""
    inner = Starlette(
        routes=[Route("/me", lambda r: JSONResponse({"me": 1}))],
        middleware=[Middleware(CORSMiddleware, allow_origin_regex=".*", allow_credentials=True)],
    )

    async def app(scope, receive, send):
        if scope["type"] == "http":
            got = dict(scope["headers"]).get(b"authorization", b"").decode()
            if got != SECRET:
                await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                return
        await inner(scope, receive, send)

    return app  # type: ignore[return-value]


def test_header_reaches_endpoints_behind_auth_and_no_report_holds_it(tmp_path):
    with ThreadedUvicorn(_behind_auth()) as up:
        url = f"{up.url}/me"
        blind = CliRunner().invoke(cli, ["cors-audit", url, "--rate", "200", "--format", "json"])
        assert blind.exit_code == 0, blind.stdout
        assert json.loads(blind.stdout)["endpoints"][0]["findings"] == []  # 401s carry no CORS
        base = tmp_path / "report"
        r = CliRunner().invoke(
            cli,
            ["cors-audit", url, "--rate", "200", "-H", f"Authorization: {SECRET}"]
            + [a for f in ("json", "sarif", "html", "md") for a in ("--format", f)]
            + ["--output", str(base)],
        )
        assert r.exit_code == 1, r.stdout  # a critical finding fails the run
        doc = json.loads(base.with_suffix(".json").read_text())
        checks = {f["check"] for f in doc["endpoints"][0]["findings"]}
        assert {"cors-any-origin", "cors-credentials-any-origin"} <= checks
        written = [p.read_text() for p in tmp_path.iterdir() if p.name.startswith("report")]
        assert len(written) == 4
        assert all("s3cret" not in text for text in [r.stdout, *written])


@pytest.mark.parametrize(
    "bad",
    [
        "Authorization",
        ": x",
        "Bad Name: x",
        "Origin: https://x.example",
        "Access-Control-Request-Method: PUT",
        "X: a\x01b",
    ],
)
def test_header_lines_that_cannot_be_sent_are_refused(bad):
    r = CliRunner().invoke(cli, ["cors-audit", "http://127.0.0.1:9/x", "--header", bad])
    assert r.exit_code == 2 and "--header" in r.output, r.output


def test_insecure_accepts_a_self_signed_staging_certificate(tmp_path):
    from bastion.certs import make_dev_certs

    files = make_dev_certs(tmp_path / "tls", ["127.0.0.1"])
    app = Starlette(
        routes=[Route("/x", lambda r: JSONResponse({}))],
        middleware=[Middleware(CORSMiddleware, allow_origin_regex=".*", allow_credentials=True)],
    )
    with serve_tls(app, files, host="127.0.0.1") as base:
        url = f"{base}/x"
        strict = CliRunner().invoke(cli, ["cors-audit", url, "--rate", "200", "--format", "json"])
        assert strict.exit_code == 2  # the certificate is not trusted: unreachable, said so
        assert json.loads(strict.stdout)["endpoints"][0]["error"].startswith("unreachable")
        r = CliRunner().invoke(cli, ["cors-audit", url, "--rate", "200", "--insecure", "--format", "json"])
        assert r.exit_code == 1, r.stdout
        checks = {f["check"] for f in json.loads(r.stdout)["endpoints"][0]["findings"]}
        assert "cors-credentials-any-origin" in checks
