"""The ASGI TLS extension for uvicorn: each request's scope gets `extensions["tls"]` with the
client certificate the handshake verified (mTLS). uvicorn does not expose it, so the gateway
uses a thin subclass of its httptools protocol that reads it from the connection once."""

from __future__ import annotations

import ssl
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


def _name(cert: dict[str, Any]) -> str:
    parts = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            parts.append(f"{ {'commonName': 'CN', 'organizationName': 'O'}.get(key, key) }={value}")
    return ",".join(parts)


def tls_info(transport: Any) -> dict[str, Any] | None:
    """The ASGI TLS extension's dict for a connection, None when it is not TLS (both server
    layers: `TlsHttpToolsProtocol` and `native.NativeProtocol`)."""
    sslobj: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
    if sslobj is None:
        return None
    cert = sslobj.getpeercert()  # only certificates the context verified appear here
    der = sslobj.getpeercert(binary_form=True)
    info: dict[str, Any] = {
        "tls_version": sslobj.version(),
        "cipher_suite": (sslobj.cipher() or ("",))[0],
        "client_cert_chain": [],
        "client_cert_name": None,
        "client_cert_error": None,
        "client_cert_subject": {},
    }
    if cert and der:
        info["client_cert_chain"] = [ssl.DER_cert_to_PEM_cert(der)]
        info["client_cert_name"] = _name(cert)
        # typeshed types the subject loosely; getpeercert() gives tuples of (name, value) pairs
        info["client_cert_subject"] = {k: v for rdn in cert.get("subject", ()) for k, v in rdn}  # type: ignore[str-unpack]
    return info


class TlsHttpToolsProtocol(HttpToolsProtocol):
    tls_info: dict[str, Any] | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.tls_info = tls_info(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.tls_info is not None:
            self.scope["extensions"] = {"tls": self.tls_info}  # type: ignore[dict-item]  # the ASGI TLS extension is not in uvicorn's TypedDict
