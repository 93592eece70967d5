"""`bastion certs dev`: a local development CA and a certificate it signed, for trying TLS,
mTLS and https upstreams on one machine. Never for production."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "bastion development"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _pem_key(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_dev_certs(out: Path, hosts: list[str], days: int = 30, client: bool = False) -> dict[str, Path]:
    """Write ca.pem / ca-key.pem and cert.pem / key.pem (and client.pem / client-key.pem)."""
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("bastion dev CA"))
        .issuer_name(_name("bastion dev CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, sans: list[x509.GeneralName], usage) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return cert.public_bytes(serialization.Encoding.PEM), _pem_key(key)

    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    files = {"ca": out / "ca.pem", "ca_key": out / "ca-key.pem", "cert": out / "cert.pem", "key": out / "key.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["ca_key"].write_bytes(_pem_key(ca_key))
    cert, key = leaf(hosts[0], sans, ExtendedKeyUsageOID.SERVER_AUTH)
    files["cert"].write_bytes(cert)
    files["key"].write_bytes(key)
    if client:
        files["client"], files["client_key"] = out / "client.pem", out / "client-key.pem"
        cert, key = leaf("bastion dev client", [x509.DNSName("client.local")], ExtendedKeyUsageOID.CLIENT_AUTH)
        files["client"].write_bytes(cert)
        files["client_key"].write_bytes(key)
    for name in ("ca_key", "key", "client_key"):
        if name in files:
            files[name].chmod(0o600)
    return files
