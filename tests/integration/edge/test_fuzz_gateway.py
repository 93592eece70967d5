"""Issue 15 item 4: raw HTTP/1.1 requests of the known bypass classes, over a socket, to a real
gateway in front of a recording upstream (a port per route, so the port tells which route the
gateway matched). Invariants: see invariants.py. Failing examples found are kept below as
named regression cases.

    PYTHONPATH=$PWD/src .venv/bin/python -m pytest -p no:cacheprovider -q tests/integration/edge
    ... -m slow tests/integration/edge      # the large budget
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from .conftest import API_KEY, ROUTES, good_claims, hs256, send_raw
from .corpus import HypothesisChooser, raw_request
from .invariants import check

VALID_JWT = hs256(good_claims(exp=4_102_444_800))  # 2100: stays valid for the corpus

FAST = settings(max_examples=120, deadline=None, database=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SLOW = settings(max_examples=3000, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def run_one(edge, data: bytes, credentials: list[str], method: bytes = b"GET") -> None:
    port, recorder, route_of_port = edge
    recorder.take(0)  # nothing left over from an earlier case
    status, _ = send_raw(port, data, method.decode("latin-1"))
    check(status, recorder.take(), route_of_port, ROUTES, credentials)


@st.composite
def requests(draw):
    return raw_request(HypothesisChooser(draw), VALID_JWT, API_KEY)


@FAST
@given(req=requests())
def test_gateway_fuzz(edge, req):
    run_one(edge, req.render(), req.credentials, req.method)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@SLOW
@given(req=requests())
def test_gateway_fuzz_large(edge, req):
    run_one(edge, req.render(), req.credentials, req.method)


def test_sanity_the_harness_sees_what_it_must(edge):
    """The fixtures really route: public reaches the public port, admin is refused, account
    needs the credential (a fuzzer whose gateway refused everything would pass vacuously)."""
    port, recorder, route_of_port = edge
    recorder.take(0)
    assert send_raw(port, b"GET /public/a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 200
    assert [route_of_port[r.port] for r in recorder.take()] == ["public"]
    assert send_raw(port, b"GET /admin/a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 403
    assert send_raw(port, b"GET /account/a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 401
    assert recorder.take() == []
    ok = b"GET /account/a HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " + VALID_JWT.encode() + b"\r\n\r\n"
    assert send_raw(port, ok)[0] == 200
    assert [route_of_port[r.port] for r in recorder.take()] == ["account"]
    assert send_raw(port, b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")[0] == 200
    assert [route_of_port[r.port] for r in recorder.take()] == ["default"]


def _get(target: bytes, *headers: bytes, method: bytes = b"GET", body: bytes = b"") -> bytes:
    return method + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(h + b"\r\n" for h in headers) + \
        b"\r\n" + body


AUTH = b"Authorization: Bearer " + VALID_JWT.encode()
KEY = b"X-API-Key: " + API_KEY.encode()

# Named regression cases: the "what gets through today" list, and every failing example
# the fuzzer found (minimised by hand to one request each). id -> (raw request, credentials).
REGRESSIONS: dict[str, tuple[bytes, list[str]]] = {
    # path ambiguity (issue list)
    "case-Admin": (_get(b"/Admin"), []),
    "case-encoded-%41dmin": (_get(b"/%41dmin"), []),
    "case-ADMIN-subpath": (_get(b"/ADMIN/users"), []),
    "encoded-semicolon": (_get(b"/admin%3bx"), []),
    "double-encoded-dotdot": (_get(b"/public/%252e%252e/admin"), []),
    "double-encoded-digits": (_get(b"/public/%25%32%65%25%32%65/admin"), []),
    "trailing-dot": (_get(b"/admin."), []),
    "trailing-space-encoded": (_get(b"/admin%20"), []),
    "trailing-tab-encoded": (_get(b"/admin%09"), []),
    "dotdot-semicolon-glued": (_get(b"/admin..;/"), []),
    "dotdot-semicolon-tomcat": (_get(b"/public/..;/admin"), []),
    "double-encoded-slash": (_get(b"/public%252f..%252fadmin"), []),
    "double-encoded-semicolon": (_get(b"/admin%253bx"), []),
    "case-account-no-credential": (_get(b"/ACCOUNT/x"), []),
    "overlong-utf8-dot": (_get(b"/public/%c0%ae%c0%ae/admin"), []),
    # found by the fuzzer (minimised)
    "dotdot-encoded-space": (_get(b"/public/..%20/admin"), []),
    "dotdot-encoded-tab": (_get(b"/public/..%09/admin"), []),
    "dotdot-encoded-semicolon": (_get(b"/..%3b/a%64min/"), []),
    "trailing-dotdot-after-semicolon-backslash": (_get(b"/%61dmin..;\\"), []),
    "double-encoded-letter": (_get(b"/adm%2569n/x"), []),
    "case-public-via-default": (_get(b"/PUbliC"), []),
    "case-account-collapsed-slashes": (_get(b"///aCCouN%74/x"), []),
    # beyond the list of lenient readings (invariant "lenient-route-differs-extended"):
    # found after the first fixes, by the fuzzer and by probing them
    "ext-iis-u-double-encoded": (_get(b"/a%25u0064min"), []),
    "ext-iis-u-dotdot": (_get(b"/public/%25u002e%25u002e/admin"), []),
    "ext-accent-folding": (_get(b"/%C3%A0dmin"), []),
    "ext-dotted-capital-i": (_get(b"/adm%C4%B0n"), []),
    "ext-trailing-line-separator": (_get(b"/admin%E2%80%A8"), []),
    "ext-trailing-nel-c1-control": (_get(b"/admin%C2%85"), []),
    "ext-zero-width-space": (_get(b"/admin%E2%80%8B"), []),
    "ext-dotdot-line-separator": (_get(b"/public/..%E2%80%A8/admin/x"), []),
    "ext-ntfs-data-stream": (_get(b"/admin::$DATA"), []),
    "ext-ntfs-index-allocation": (_get(b"/admin::$INDEX_ALLOCATION/x"), []),
    # rewrite / override headers (issue list)
    "x-original-url": (_get(b"/public/x", b"X-Original-URL: /admin/x"), []),
    "x-rewrite-url": (_get(b"/public/x", b"X-Rewrite-URL: /admin/x"), []),
    "x-override-url": (_get(b"/public/x", b"X-Override-URL: /admin/x"), []),
    "x-http-method-override": (_get(b"/public/x", b"X-HTTP-Method-Override: DELETE"), []),
    "x-http-method": (_get(b"/public/x", b"X-HTTP-Method: DELETE"), []),
    "x-method-override": (_get(b"/public/x", b"X-Method-Override: DELETE"), []),
    # duplicate credentials (issue list)
    "two-authorization-valid-first": (_get(b"/account/x", AUTH, b"Authorization: Bearer unsigned.x.y"),
                                      ["valid-jwt", "junk"]),
    "jwt-and-api-key": (_get(b"/account/x", AUTH, KEY), ["valid-jwt", "valid-key"]),
    "two-api-keys": (_get(b"/account/x", KEY, b"X-API-Key: bk_edge_other"), ["valid-key", "junk"]),
    "two-authorization-public-route": (_get(b"/public/x", AUTH, b"Authorization: Bearer other"),
                                       ["valid-jwt", "junk"]),
    # control characters and framing
    "bare-cr-in-value": (_get(b"/public/x", b"X-Ctl: a\rZinj: 1"), []),
    "nul-in-value": (_get(b"/public/x", b"X-Ctl: a\x00b"), []),
    "vt-in-value": (_get(b"/public/x", b"X-Ctl: a\x0bb"), []),
    "del-in-value": (_get(b"/public/x", b"X-Ctl: a\x7fb"), []),
    "obs-fold": (_get(b"/public/x", b"X-Folded: a\r\n Zinj: 1"), []),
    "te-chunked-identity": (_get(b"/public/x", b"Transfer-Encoding: chunked, identity", b"Content-Length: 4",
                                 method=b"POST", body=b"0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), []),
    "te-cl-smuggle": (_get(b"/public/x", b"Transfer-Encoding: chunked", b"Content-Length: 4", method=b"POST",
                           body=b"0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"), []),
    "spoofed-principal-public": (_get(b"/public/x", b"X-Bastion-Subject: spoofed"), []),
}


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_named_regressions(edge, name):
    data, credentials = REGRESSIONS[name]
    run_one(edge, data, credentials, data.split(b" ", 1)[0])
