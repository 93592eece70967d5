"""Issue 15 item 4: raw HTTP/1.1 requests of the known bypass classes, over a socket, to a real
gateway in front of a recording upstream (a port per route, so the port tells which route the
gateway matched). Invariants: see invariants.py. Failing examples found are kept as named
regression cases (`named_cases` in corpus.py; the `ext-` ones go beyond the issue's list of
lenient readings and override headers).

    PYTHONPATH=$PWD/src .venv/bin/python -m pytest -p no:cacheprovider -q tests/integration/edge
    ... -m slow tests/integration/edge      # the large budget
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import API_KEY, ROUTES, good_claims, hs256, send_raw
from .corpus import HypothesisChooser, named_cases, raw_request
from .invariants import check

VALID_JWT = hs256(good_claims(exp=4_102_444_800))  # 2100: stays valid for the corpus

FAST = settings(
    max_examples=120,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SLOW = settings(
    max_examples=3000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


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


REGRESSIONS = named_cases(VALID_JWT, API_KEY)


@pytest.mark.parametrize("name", list(REGRESSIONS))
def test_named_regressions(edge, name):
    data, credentials = REGRESSIONS[name]
    run_one(edge, data, credentials, data.split(b" ", 1)[0])
