"""A listener with a certificate terminates TLS; HSTS is sent there and only there."""

import datetime
import http.client
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import run_gateway


def make_cert(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp_path / "cert.pem", tmp_path / "key.pem"


def test_tls_listener_serves_https_with_hsts(base_config, tmp_path):
    cert, key = make_cert(tmp_path)
    base_config["listeners"] = [{"host": "127.0.0.1", "port": 0, "tls": {"cert": str(cert), "key": str(key)}}]
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    with run_gateway(base_config, tmp_path) as g:
        ctx = ssl.create_default_context(cafile=str(cert))
        conn = http.client.HTTPSConnection("localhost", g.port, context=ctx, timeout=10)
        conn.request("GET", "/echo")
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        assert resp.getheader("strict-transport-security", "").startswith("max-age=")
        assert b'"x-forwarded-proto","https"' in body
        conn.close()
        # a client that does not trust the certificate is refused at the handshake
        strict = ssl.create_default_context()
        conn = http.client.HTTPSConnection("localhost", g.port, context=strict, timeout=10)
        try:
            conn.request("GET", "/echo")
            raise AssertionError("an untrusted certificate was accepted")
        except ssl.SSLCertVerificationError:
            pass
        finally:
            conn.close()
