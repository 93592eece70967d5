"""The Host values the gateway accepted are remembered (session 9): on generated Host values,
asked twice and among many others, a request is refused exactly when the RFC 9110 pattern
refuses its Host, and the remembered values stay bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.gateway import app as app_module
from bastion.gateway.app import _HOST, Gateway
from bastion.gateway.server import build_state


async def _receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


def _gateway(tmp_path) -> tuple[Gateway, object]:
    path = tmp_path / "g.yaml"
    path.write_text(
        "listeners: [{host: 127.0.0.1, port: 0}]\n"
        "upstreams: {up: {urls: ['http://127.0.0.1:9']}}\n"
        "routes: [{path: /*, upstream: up}]\n"
    )
    state = build_state(str(path), 1)
    return Gateway(state), state


def _refused(gateway: Gateway, state: object, host: str) -> bool:
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "path": "/",
        "headers": [(b"host", host.encode("latin-1"))],
        "client": ("127.0.0.1", 1),
    }
    req = gateway.build_request(scope, _receive, state)  # type: ignore[arg-type]
    return bool(req.refusal)


hosts = st.one_of(
    st.sampled_from(["127.0.0.1", "api.example.com", "api.example.com:8443", "[::1]:80", "a_b.c", "x.", "-x.com"]),
    st.sampled_from(["a b", "a,b", "user@host", '"q"', "h\u00e9.com", "a:99999x", "[zz]", "a..b", ""]),
    st.text(alphabet="abz09-_.:[]@ ,\"'", max_size=12),
)


def test_a_host_is_refused_exactly_when_the_pattern_refuses_it(tmp_path):
    gateway, state = _gateway(tmp_path)

    @settings(max_examples=500, deadline=None)
    @given(st.lists(hosts, min_size=1, max_size=10))
    def check(values):
        for host in values * 2:  # the second time, an accepted value is a remembered one
            want = not host or _HOST.fullmatch(host) is None  # (HTTP/1.1: no Host is refused too)
            assert _refused(gateway, state, host) == want, host

    check()


def test_the_remembered_hosts_are_bounded(tmp_path):
    gateway, state = _gateway(tmp_path)
    for i in range(app_module._GOOD_HOSTS_MAX * 2 + 10):
        assert not _refused(gateway, state, f"h{i}.example.com")
        assert len(app_module._GOOD_HOSTS) <= app_module._GOOD_HOSTS_MAX
    assert _refused(gateway, state, "h1.example.com, evil.com")
