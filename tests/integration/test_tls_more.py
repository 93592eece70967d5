"""TLS at the edges: old protocols refused, certificates reloaded on SIGHUP, https upstreams
verified against a CA (or, loudly, not at all), and `bastion certs dev`."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest
import yaml
from cryptography import x509
from helpers import PROCESS_SECONDS, STARTUP_SECONDS, raw_request, run_gateway, wait_for
from servers import serve_tls
from upstream_app import app as upstream_app

from bastion.certs import make_dev_certs


def https_get(port, ca, path="/echo", **ctx_kw):
    ctx = ssl.create_default_context(cafile=str(ca))
    for k, v in ctx_kw.items():
        setattr(ctx, k, v)
    conn = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read(), conn.sock.getpeercert(binary_form=True)
    finally:
        conn.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_tls_1_0_and_1_1_are_refused(base_config, tmp_path):
    # this client does send TLS 1.0/1.1 ClientHellos (SECLEVEL=0): the refusal is the server's
    files = make_dev_certs(tmp_path / "certs", ["localhost"])
    base_config["listeners"] = [
        {"host": "127.0.0.1", "port": 0, "tls": {"cert": str(files["cert"]), "key": str(files["key"])}}
    ]
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as g:
        assert https_get(g.port, files["ca"])[0] == 200
        for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(str(files["ca"]))
            ctx.set_ciphers("ALL:@SECLEVEL=0")
            ctx.minimum_version = old
            ctx.maximum_version = old
            with pytest.raises((ssl.SSLError, ConnectionResetError)):
                with socket.create_connection(("127.0.0.1", g.port), 5) as s:
                    with ctx.wrap_socket(s, server_hostname="localhost"):
                        pass
        ctx = ssl.create_default_context(cafile=str(files["ca"]))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with socket.create_connection(("127.0.0.1", g.port), 5) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                assert t.version() == "TLSv1.2"


def test_certificate_is_reloaded_on_sighup(upstream, tmp_path):
    first = make_dev_certs(tmp_path / "a", ["localhost"])
    second = make_dev_certs(tmp_path / "b", ["localhost"], days=5)
    live = tmp_path / "live"
    live.mkdir()
    (live / "cert.pem").write_bytes(first["cert"].read_bytes())
    (live / "key.pem").write_bytes(first["key"].read_bytes())
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "listeners": [
                    {"host": "127.0.0.1", "port": 0, "tls": {"cert": "live/cert.pem", "key": "live/key.pem"}}
                ],
                "upstreams": {"up": {"urls": [upstream.url]}},
                "policies": {"audit": {"enabled": False}},
                "routes": [{"path": "/*", "upstream": "up"}],
                "admin": {"host": "127.0.0.1", "port": 0},
            }
        )
    )

    def expiry_served(admin_port: int) -> float:
        text = raw_request(admin_port, "GET", "/metrics").body.decode()
        m = re.search(r'^bastion_tls_certificate_expiry_timestamp_seconds\{listener="127.0.0.1:0"\} (\S+)$', text, re.M)
        assert m, text
        return float(m.group(1))

    def not_after(files) -> float:
        return x509.load_pem_x509_certificate(files["cert"].read_bytes()).not_valid_after_utc.timestamp()

    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion.cli", "serve", "--no-watch", "--workers", "1", "-c", str(cfg)],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(x) for x in proc.stderr], daemon=True).start()
    try:
        deadline = time.time() + STARTUP_SECONDS
        port = admin = None
        while (port is None or admin is None) and time.time() < deadline and proc.poll() is None:
            for line in list(lines):
                m = re.search(r"listening on https://127\.0\.0\.1:(\d+)", line)
                if m:
                    port = int(m.group(1))
                m = re.search(r"admin listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    admin = int(m.group(1))
            time.sleep(0.05)
        assert port and admin, "".join(lines)
        assert expiry_served(admin) == not_after(first)  # the metric is the chain being served
        status, _, der = https_get(port, first["ca"])
        assert status == 200
        assert (
            x509.load_der_x509_certificate(der).serial_number
            == x509.load_pem_x509_certificate(first["cert"].read_bytes()).serial_number
        )
        (live / "cert.pem").write_bytes(second["cert"].read_bytes())
        (live / "key.pem").write_bytes(second["key"].read_bytes())
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: any("reloaded" in x and "cert.pem" in x for x in lines), STARTUP_SECONDS, what="the reload")
        status, _, der = https_get(port, second["ca"])
        assert status == 200
        assert (
            x509.load_der_x509_certificate(der).serial_number
            == x509.load_pem_x509_certificate(second["cert"].read_bytes()).serial_number
        )
        assert expiry_served(admin) == not_after(second) < not_after(first)  # the renewed one, 5 days
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)


def https_upstream(files):
    return serve_tls(upstream_app, files)


def test_https_upstream_verified_against_a_ca(base_config, tmp_path, caplog):
    files = make_dev_certs(tmp_path / "up", ["localhost"])
    other = make_dev_certs(tmp_path / "other", ["localhost"])
    with https_upstream(files) as url:
        base_config["upstreams"] = {
            "good": {"urls": [url], "ca_file": str(files["ca"])},
            "wrong": {"urls": [url], "ca_file": str(other["ca"])},
            "system": {"urls": [url]},
            "unverified": {"urls": [url], "tls_verify": False},
        }
        base_config["routes"] = [{"path": f"/{n}/*", "upstream": n} for n in base_config["upstreams"]]
        with caplog.at_level("WARNING", logger="bastion.proxy"):
            with run_gateway(base_config, tmp_path) as g:
                assert raw_request(g.port, "GET", "/good/echo").status == 200
                assert raw_request(g.port, "GET", "/wrong/echo").status == 502
                assert raw_request(g.port, "GET", "/system/echo").status == 502
                assert raw_request(g.port, "GET", "/unverified/echo").status == 200
        assert "TLS verification is OFF" in caplog.text


def test_certs_dev_command(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "certs", "dev", "-o", str(tmp_path), "--client"],
        capture_output=True,
        text=True,
        timeout=PROCESS_SECONDS,
    )
    assert r.returncode == 0, r.stderr
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    assert cert.issuer == ca.subject
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert (tmp_path / "key.pem").stat().st_mode & 0o077 == 0  # private keys are not world-readable
    assert (tmp_path / "client.pem").exists()


def test_mtls_authenticates_by_client_certificate(base_config, tmp_path):
    files = make_dev_certs(tmp_path / "pki", ["localhost"], client=True)
    stranger = make_dev_certs(tmp_path / "stranger", ["localhost"], client=True)
    base_config["listeners"] = [
        {
            "host": "127.0.0.1",
            "port": 0,
            "tls": {"cert": str(files["cert"]), "key": str(files["key"]), "client_ca": str(files["ca"])},
        }
    ]
    base_config["policies"]["auth"] = {
        "schemes": {"cert": {"type": "mtls", "subjects": {"bastion dev client": ["orders:read"]}}}
    }
    base_config["routes"] = [
        {"path": "/orders/*", "upstream": "up", "policies": {"auth": {"scopes": ["orders:read"]}}},
        {"path": "/public/*", "upstream": "up", "policies": {"auth": {"require": []}}},
    ]
    with run_gateway(base_config, tmp_path) as g:

        def get(path, client=None):
            ctx = ssl.create_default_context(cafile=str(files["ca"]))
            if client:
                ctx.load_cert_chain(str(client["client"]), str(client["client_key"]))
            conn = http.client.HTTPSConnection("localhost", g.port, context=ctx, timeout=10)
            try:
                conn.request("GET", path)
                r = conn.getresponse()
                return r.status, r.read()
            finally:
                conn.close()

        status, body = get("/orders/1", files)
        assert status == 200
        seen = {k: v for k, v in json.loads(body)["headers"]}
        assert seen["x-bastion-subject"] == "bastion dev client" and seen["x-bastion-scopes"] == "orders:read"
        assert get("/orders/1")[0] == 401  # no certificate: not authenticated (client_auth optional)
        assert get("/public/x")[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionResetError, OSError)):
            get("/orders/1", stranger)  # a certificate from another CA fails the handshake
