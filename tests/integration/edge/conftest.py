"""One recording upstream (a port per route) and one real gateway in front of it, per module."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import socket
import time

import pytest
from helpers import run_gateway

from bastion.auth.apikeys import hash_key

from .recorder import Recorder

SECRET = "edge-fuzz-secret-" + "k" * 32
ISS = "https://issuer.edge"
AUD = "api://edge"
API_KEY = "bk_edge_" + "Q" * 43
ROUTES = {"admin": "admin", "account": "account", "public": "public", "": "default"}  # lenient first segment -> route


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256(payload: str | dict, header: str | dict | None = None) -> str:
    """A token signed with the gateway's secret; payload/header given as JSON text are signed
    byte for byte (so `1e400`, `NaN` or a 400-digit integer reach the gateway as written)."""
    if header is None:
        header = {"alg": "HS256", "typ": "JWT"}
    h = header if isinstance(header, str) else json.dumps(header)
    p = payload if isinstance(payload, str) else json.dumps(payload)
    signing = f"{b64(h.encode())}.{b64(p.encode())}"
    sig = hmac.new(SECRET.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(sig)}"


def good_claims(**over) -> dict:
    now = int(time.time())
    c = {"iss": ISS, "aud": AUD, "sub": "alice", "iat": now, "exp": now + 600, "scope": "orders:read", "tier": "pro"}
    c.update(over)
    return c


def gateway_config(ports: dict[str, int]) -> dict:
    up = {
        name: {"urls": [f"http://127.0.0.1:{port}"], "timeouts": {"connect": 10, "read": 30, "total": 60}}
        for name, port in ports.items()
    }
    return {
        "upstreams": up,
        "policies": {
            "audit": {"enabled": False},
            "auth": {
                "schemes": {
                    "bearer": {
                        "type": "jwt",
                        "issuers": [
                            {"issuer": ISS, "audiences": [AUD], "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}
                        ],
                    },
                    "key": {
                        "type": "api_key",
                        "keys": [{"id": "k1", "hash": hash_key(API_KEY), "owner": "acme", "tier": "pro"}],
                    },
                }
            },
        },
        "routes": [
            {
                "path": "/admin/*",
                "upstream": "admin",
                "policies": {"ip_rules": {"block": ["127.0.0.0/8", "::1"]}, "auth": {"require": []}},
            },
            {"path": "/account/*", "upstream": "account"},
            {"path": "/public/*", "upstream": "public", "policies": {"auth": {"require": []}}},
            {"path": "/*", "upstream": "default", "policies": {"auth": {"require": []}}},
        ],
    }


@pytest.fixture(scope="module")
def recorder():
    with Recorder(len(ROUTES)) as rec:
        yield rec


@pytest.fixture(scope="module")
def edge(recorder, tmp_path_factory):
    """(gateway port, recorder, {recorder port: route name})."""
    names = list(ROUTES.values())
    ports = dict(zip(names, recorder.ports, strict=False))
    with run_gateway(gateway_config(ports), tmp_path_factory.mktemp("edge")) as gw:
        yield gw.port, recorder, {p: n for n, p in ports.items()}


def send_raw(port: int, data: bytes, method: str = "GET", timeout: float = 3.0) -> tuple[int | None, bytes]:
    """Send bytes as they are; the first response's status and body (None: no parseable answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout)
    try:
        sock.sendall(data)
        resp = http.client.HTTPResponse(sock, method="HEAD" if method == "HEAD" else "GET")
        try:
            resp.begin()
            body = resp.read()
        except (http.client.HTTPException, OSError, ValueError):
            return None, b""
        return resp.status, body
    except OSError:
        return None, b""
    finally:
        sock.close()
