"""The invariants of issue 15 item 4, checked on one client request and what the upstream got.

Each invariant is its own `assert` line, so hypothesis reports every distinct failure class
(it groups failures by exception and line), not only the first it met.
"""

from __future__ import annotations

from .recorder import REWRITE_HEADERS, Recorded, control_chars, lenient_route

PRINCIPAL = (b"x-bastion-subject", b"x-bastion-tier", b"x-bastion-scopes", b"x-bastion-key-id")


def upstream_report(records: list[Recorded], route_of_port: dict[int, str]) -> str:
    return "; ".join(f"[{route_of_port.get(r.port)}] {r.head!r}" for r in records)


def check(status: int | None, records: list[Recorded], route_of_port: dict[int, str],
          prefixes: dict[str, str], credentials: list[str]) -> None:
    seen = upstream_report(records, route_of_port)
    # 1. no 5xx the gateway made (the recording upstream only ever answers 200)
    assert status is None or status < 500, f"gateway answered {status}; upstream saw: {seen}"
    # 2. at most one upstream request per client request (a second one is smuggled)
    assert len(records) <= 1, f"{len(records)} upstream requests for one client request: {seen}"
    for rec in records:
        route = route_of_port[rec.port]
        # 3. a refused route is never reached
        assert route != "admin", f"the refused /admin route was reached: {seen}"
        # 4. the path, read leniently, is the route the gateway matched and checked
        lenient = lenient_route(rec.target, prefixes)
        assert lenient == route, f"gateway routed to {route!r}, a lenient upstream reads {lenient!r}: {seen}"
        # 5. no control character in the request line or any header name or value; no obs-fold,
        #    no header line without a colon (an injected line)
        bad = [(k, v) for k, v in rec.headers if control_chars(k) or control_chars(v)]
        assert not control_chars(rec.request_line) and not bad, f"control characters forwarded {bad}: {seen}"
        assert not rec.folded and not rec.malformed, f"folded or malformed header line forwarded: {seen}"
        # 6. no rewrite / method-override header
        names = {k.lower() for k, _ in rec.headers}
        assert not names & REWRITE_HEADERS, f"rewrite/override header forwarded {names & REWRITE_HEADERS}: {seen}"
        # 7. a principal header the client sent is never forwarded as the gateway's word
        spoofed = [k for k, v in rec.headers if k.lower() in PRINCIPAL and v == b"spoofed"]
        assert not spoofed, f"client-supplied principal header forwarded: {seen}"
        # 8. one credential at most: the upstream never gets two, and an authenticated route is
        #    reached only with exactly one credential, a valid one
        assert len(rec.named(b"authorization")) + len(rec.named(b"x-api-key")) <= 1, \
            f"two credentials forwarded (which one does the upstream trust?): {seen}"
        if route == "account":
            assert len(credentials) == 1 and credentials[0] in ("valid-jwt", "valid-key"), \
                f"authenticated route reached with credentials {credentials}: {seen}"
