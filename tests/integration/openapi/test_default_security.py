"""An OpenAPI spec as written (no global security, login/register without any) and an app's own
tokens (no `iss`, a base64 HMAC secret, a `kid`), through `bastion check` and a real gateway."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jwt
import pytest
import yaml
from helpers import PROCESS_SECONDS, raw_request, run_gateway

from tests.unit.auth.keys import RSA, RSA_OTHER

SPEC = Path(__file__).resolve().parents[2] / "specs" / "users-as-written.yaml"
SECRET = os.urandom(48)
SECRET_B64 = base64.b64encode(SECRET).decode()


def app_token(secret: bytes = SECRET, **over) -> str:
    """What such apps issue: HS256, a kid, sub and exp, and neither iss nor aud."""
    now = int(time.time())
    claims = {"sub": "alice", "iat": now, "exp": now + 300, **over}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, "HS256", headers={"kid": "app-1"})


def config(base_config, tmp_path, default_security: str | None) -> dict:
    shutil.copy(SPEC, tmp_path / "users.yaml")
    route: dict = {"openapi": "users.yaml", "upstream": "up"}
    if default_security is not None:
        route["default_security"] = default_security
    base_config["policies"]["auth"] = {
        "schemes": {
            "bearerAuth": {
                "type": "jwt",
                "issuers": [
                    {
                        "algorithms": ["HS256"],
                        "keys": [{"secret_base64": SECRET_B64}],
                        "required_claims": ["exp", "sub"],
                    },
                    {"issuer": "https://idp.example", "algorithms": ["RS256"], "jwks_file": "jwks.json"},
                ],
            }
        }
    }
    base_config["routes"] = [route]
    write_jwks(tmp_path / "jwks.json", RSA)
    return base_config


def write_jwks(path: Path, key) -> None:
    old = path.stat() if path.exists() else None
    jwk = {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "idp-1"}
    path.write_text(json.dumps({"keys": [jwk]}))
    if old is not None:
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns + 1_000_000_000))


def check(cfg: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    cfg = {**cfg, "listeners": [{"host": "127.0.0.1", "port": 0}]}
    path = tmp_path / "bastion.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")}
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=PROCESS_SECONDS,
        env=env,
    )


LOGIN = {"username": "alice", "password": "pw"}


def post(port, path, doc, headers=None):
    return raw_request(
        port, "POST", path, {"Content-Type": "application/json", **(headers or {})}, json.dumps(doc).encode()
    )


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_check_lists_operations_without_security(base_config, tmp_path):
    r = check(config(base_config, tmp_path, None), tmp_path)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stderr.split())
    assert "2 operation(s) of users.yaml declare no `security`" in out
    assert "POST /users/v1/login (login)" in out and "POST /users/v1/register (register)" in out
    assert "/users/v1/me" not in out and "/health" not in out  # they say what they need
    assert "security: []" in out and "default_security: public" in out and "401" in out


def test_check_says_which_operations_default_security_public_opens(base_config, tmp_path):
    r = check(config(base_config, tmp_path, "public"), tmp_path)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stderr.split())
    assert "routes[0].default_security" in out and "are public (default_security: public)" in out
    assert "POST /users/v1/login (login)" in out


def test_default_security_require_fails_closed(base_config, tmp_path):
    with run_gateway(config(base_config, tmp_path, None), tmp_path) as gw:
        assert post(gw.port, "/users/v1/login", LOGIN).status == 401
        assert post(gw.port, "/users/v1/login", LOGIN, bearer(app_token())).status == 200
        assert raw_request(gw.port, "GET", "/health").status == 200  # `security: []` in the spec


def test_default_security_public_with_the_apps_own_tokens(base_config, tmp_path):
    with run_gateway(config(base_config, tmp_path, "public"), tmp_path) as gw:
        assert post(gw.port, "/users/v1/login", LOGIN).status == 200
        assert post(gw.port, "/users/v1/register", {**LOGIN, "email": "a@b.c"}).status == 200
        assert post(gw.port, "/users/v1/login", {"username": 1}).status == 422  # still validated
        # the declared security still holds
        assert raw_request(gw.port, "GET", "/users/v1/me").status == 401
        assert raw_request(gw.port, "GET", "/users/v1/me", bearer(app_token())).status == 200
        forged = [
            app_token(iss="https://idp.example"),  # an iss the HMAC key does not belong to
            app_token(iss="https://evil.example"),
            app_token(b"another-secret-of-enough-length-0123456789"),
            app_token(exp=int(time.time()) - 3600),
            app_token(sub=None),
        ]
        for token in forged:
            r = raw_request(gw.port, "GET", "/users/v1/me", bearer(token))
            assert r.status == 401, (token, r.status)


def test_jwks_file_is_reloaded_by_a_running_gateway(base_config, tmp_path):
    def idp(key):
        now = int(time.time())
        claims = {"iss": "https://idp.example", "sub": "bob", "iat": now, "exp": now + 300}
        return jwt.encode(claims, key, "RS256", headers={"kid": "idp-1"})

    with run_gateway(config(base_config, tmp_path, "public"), tmp_path) as gw:
        assert raw_request(gw.port, "GET", "/users/v1/me", bearer(idp(RSA))).status == 200
        assert raw_request(gw.port, "GET", "/users/v1/me", bearer(idp(RSA_OTHER))).status == 401
        write_jwks(tmp_path / "jwks.json", RSA_OTHER)
        statuses = []
        for _ in range(50):  # the file is looked at once a second: poll, do not time
            statuses.append(raw_request(gw.port, "GET", "/users/v1/me", bearer(idp(RSA_OTHER))).status)
            if statuses[-1] == 200:
                break
            time.sleep(0.2)
        assert statuses[-1] == 200, statuses
        assert raw_request(gw.port, "GET", "/users/v1/me", bearer(idp(RSA))).status == 401
        (tmp_path / "jwks.json").write_text("{broken")
        time.sleep(1.1)
        assert raw_request(gw.port, "GET", "/users/v1/me", bearer(idp(RSA_OTHER))).status == 200


@pytest.mark.parametrize("value", ["public", "require"])
def test_default_security_needs_an_openapi_route(value):
    from pydantic import ValidationError

    from bastion.config.model import RouteConfig

    if value == "require":
        RouteConfig.model_validate({"path": "/x", "upstream": "up", "default_security": value})
    else:
        with pytest.raises(ValidationError, match="default_security"):
            RouteConfig.model_validate({"path": "/x", "upstream": "up", "default_security": value})
