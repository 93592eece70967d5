"""The invariants of issue 15 item 4, checked on one client request and what the upstream got.

`violations` lists every broken invariant (the bench counts them); `check` asserts them one
`assert` line each, so hypothesis reports every distinct failure class (it groups failures by
exception and line), not only the first it met.
"""

from __future__ import annotations

import re

from .recorder import REWRITE_HEADERS, REWRITE_HEADERS_EXTENDED, Recorded, control_chars, lenient_route

_HOST = re.compile(
    rb"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.?"
    rb"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)


def _split(value: bytes, sep: bytes) -> list[bytes]:
    """Split on `sep` outside double quotes (RFC 7239 / RFC 9110 quoted-string)."""
    out, cur, quoted, escaped = [], bytearray(), False, False
    for b in value:
        ch = bytes((b,))
        if escaped:
            escaped = False
        elif quoted and ch == b"\\":
            escaped = True
        elif ch == b'"':
            quoted = not quoted
        elif ch == sep and not quoted:
            out.append(bytes(cur).strip())
            cur = bytearray()
            continue
        cur += ch
    out.append(bytes(cur).strip())
    return out


def forwarding_problems(rec: Recorded, client: bytes = b"127.0.0.1") -> list[str]:
    """What a client could inject into the forwarding headers the gateway builds: every
    `Forwarded` element has each parameter once, `for` is the client's address and `proto` the
    scheme it used; `X-Forwarded-For` is the client's address; `X-Forwarded-Host` is one valid
    host (a list or a quote would let a client choose what the upstream reads)."""
    out = []
    for value in rec.named(b"forwarded"):
        for element in _split(value, b","):
            pairs = [p.partition(b"=") for p in _split(element, b";") if p]
            names = [k.strip().lower() for k, _, _ in pairs]
            if len(names) != len(set(names)):
                out.append(f"Forwarded element with a repeated parameter: {element!r}")
            for k, _, v in pairs:
                v = v.strip().strip(b'"')
                if k.strip().lower() == b"for" and v != client:
                    out.append(f"Forwarded for={v!r}")
                if k.strip().lower() == b"proto" and v != b"http":
                    out.append(f"Forwarded proto={v!r}")
    for value in rec.named(b"x-forwarded-for"):
        if any(v.strip() != client for v in value.split(b",")):
            out.append(f"X-Forwarded-For {value!r}")
    for value in rec.named(b"x-forwarded-host"):
        if _HOST.fullmatch(value) is None:
            out.append(f"X-Forwarded-Host {value!r} is not one valid host")
    if len(rec.named(b"x-forwarded-host")) > 1 or len(rec.named(b"forwarded")) > 1:
        out.append("a forwarding header twice")
    return out


PRINCIPAL = (b"x-bastion-subject", b"x-bastion-tier", b"x-bastion-scopes", b"x-bastion-key-id")
INVARIANTS = (
    "5xx",
    "one-upstream-request",
    "refused-route-reached",
    "lenient-route-differs",
    "control-char",
    "lenient-route-differs-extended",
    "fold-or-malformed",
    "rewrite-header",
    "rewrite-header-extended",
    "forwarding-header-injection",
    "spoofed-principal",
    "two-credentials-forwarded",
    "auth-route-without-one-valid-credential",
)


def upstream_report(records: list[Recorded], route_of_port: dict[int, str]) -> str:
    return "; ".join(f"[{route_of_port.get(r.port)}] {r.head!r}" for r in records)


def violations(
    status: int | None,
    records: list[Recorded],
    route_of_port: dict[int, str],
    prefixes: dict[str, str],
    credentials: list[str],
    protected: tuple[str, ...] = ("account",),
    refused: tuple[str, ...] = ("admin",),
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    seen = upstream_report(records, route_of_port)
    if status is not None and status >= 500:  # the recording upstream only ever answers 200
        out.append(("5xx", f"gateway answered {status}; upstream saw: {seen}"))
    if len(records) > 1:
        out.append(("one-upstream-request", f"{len(records)} upstream requests for one client request: {seen}"))
    for rec in records:
        route = route_of_port[rec.port]
        if route in refused:
            out.append(("refused-route-reached", f"the refused {route!r} route was reached: {seen}"))
        lenient = lenient_route(rec.target, prefixes)
        if lenient != route:
            out.append(
                ("lenient-route-differs", f"gateway routed to {route!r}, a lenient upstream reads {lenient!r}: {seen}")
            )
        elif lenient_route(rec.target, prefixes, extended=True) != route:
            out.append(
                (
                    "lenient-route-differs-extended",
                    f"gateway routed to {route!r}, a server reading IIS %u escapes, folding Unicode to "
                    f"ASCII, trimming Unicode space or NTFS streams reads "
                    f"{lenient_route(rec.target, prefixes, extended=True)!r}: {seen}",
                )
            )
        bad = [(k, v) for k, v in rec.headers if control_chars(k, htab=True) or control_chars(v)]
        if control_chars(rec.request_line, htab=True) or bad:
            out.append(("control-char", f"control characters forwarded {bad or rec.request_line}: {seen}"))
        if rec.folded or rec.malformed:
            out.append(("fold-or-malformed", f"folded or malformed header line forwarded: {seen}"))
        # a WSGI/CGI upstream reads `X_Original_URL` as `X-Original-URL`: compare names that way
        names = {k.lower().replace(b"_", b"-") for k, _ in rec.headers}
        if names & REWRITE_HEADERS:
            out.append(("rewrite-header", f"rewrite/override header forwarded {names & REWRITE_HEADERS}: {seen}"))
        if names & REWRITE_HEADERS_EXTENDED:
            out.append(
                (
                    "rewrite-header-extended",
                    f"edge-owned header forwarded from the client {sorted(names & REWRITE_HEADERS_EXTENDED)}: {seen}",
                )
            )
        fwd = forwarding_problems(rec)
        if fwd:
            out.append(("forwarding-header-injection", f"forwarding headers the client shaped {fwd}: {seen}"))
        if any(k.lower().replace(b"_", b"-") in PRINCIPAL and v == b"spoofed" for k, v in rec.headers):
            out.append(("spoofed-principal", f"client-supplied principal header forwarded: {seen}"))
        creds = [k for k, _ in rec.headers if k.lower().replace(b"_", b"-") in (b"authorization", b"x-api-key")]
        if len(creds) > 1:
            out.append(
                ("two-credentials-forwarded", f"two credentials forwarded (which does the upstream trust?): {seen}")
            )
        if route in protected and not (len(credentials) == 1 and credentials[0] in ("valid-jwt", "valid-key")):
            out.append(
                (
                    "auth-route-without-one-valid-credential",
                    f"authenticated route reached with credentials {credentials}: {seen}",
                )
            )
    return out


def check(
    status: int | None,
    records: list[Recorded],
    route_of_port: dict[int, str],
    prefixes: dict[str, str],
    credentials: list[str],
) -> None:
    found = dict(violations(status, records, route_of_port, prefixes, credentials))
    assert "5xx" not in found, found["5xx"]
    assert "one-upstream-request" not in found, found["one-upstream-request"]
    assert "refused-route-reached" not in found, found["refused-route-reached"]
    assert "lenient-route-differs" not in found, found["lenient-route-differs"]
    assert "lenient-route-differs-extended" not in found, found["lenient-route-differs-extended"]
    assert "control-char" not in found, found["control-char"]
    assert "fold-or-malformed" not in found, found["fold-or-malformed"]
    assert "rewrite-header" not in found, found["rewrite-header"]
    assert "rewrite-header-extended" not in found, found["rewrite-header-extended"]
    assert "forwarding-header-injection" not in found, found["forwarding-header-injection"]
    assert "spoofed-principal" not in found, found["spoofed-principal"]
    assert "two-credentials-forwarded" not in found, found["two-credentials-forwarded"]
    assert "auth-route-without-one-valid-credential" not in found, found["auth-route-without-one-valid-credential"]
