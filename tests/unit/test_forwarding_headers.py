"""The forwarding headers (`Gateway.upstream_headers`), remembered per (peer, scheme, Host) for
untrusted peers: always what the header-by-header construction gives."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.gateway import app as app_module
from bastion.gateway.app import Gateway
from bastion.http import Request
from bastion.pipeline import Context


def reference(req: Request, body_len):
    """The construction before session 6 (forwarding part), one request at a time."""
    peer = str(req.peer_ip) if req.peer_ip else "unknown"
    prior_xff = prior_fwd = None
    if req.peer_trusted:
        for k, v in req.headers:
            if k == b"x-forwarded-for":
                prior_xff = v if prior_xff is None else prior_xff + b", " + v
            elif k == b"forwarded":
                prior_fwd = v if prior_fwd is None else prior_fwd + b", " + v
    xff = (prior_xff + b", " if prior_xff else b"") + peer.encode()
    for_ = f'"[{peer}]"' if ":" in peer else peer
    fwd = f"for={for_};proto={req.scheme}"
    if req.host:
        fwd += f';host="{req.host}"'
    out = [(b"x-forwarded-for", xff), (b"x-forwarded-proto", req.scheme.encode())]
    if req.host:
        out.append((b"x-forwarded-host", req.host.encode("latin-1")))
    out.append((b"forwarded", (prior_fwd + b", " if prior_fwd else b"") + fwd.encode("latin-1")))
    if body_len is not None:
        out.append((b"content-length", str(body_len).encode()))
    return out


peers = st.one_of(
    st.none(),
    st.sampled_from(["10.0.0.1", "127.0.0.1", "192.0.2.7", "::1", "2001:db8::5"]).map(ipaddress.ip_address),
)
hosts = st.one_of(
    st.sampled_from(["", "api.example.com", "a:8080", "[::1]:443"]),
    st.text(max_size=300).map(lambda t: t.encode("latin-1", "replace").decode("latin-1")),
)
priors = st.lists(
    st.tuples(st.sampled_from([b"x-forwarded-for", b"forwarded", b"accept"]), st.sampled_from([b"1.2.3.4", b"for=x"])),
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(peers, st.sampled_from(["http", "https"]), hosts, st.booleans(), priors), max_size=8))
def test_forwarding_headers_are_the_per_request_construction(requests):
    app_module._FORWARDING_MADE.clear()
    for peer, scheme, host, trusted, prior in requests + requests:  # repeats: remembered ones used
        req = Request(
            method="GET",
            path="/",
            query=b"",
            headers=list(prior),
            client_ip=peer,
            peer_ip=peer,
            peer_trusted=trusted,
            scheme=scheme,
            host=host,
            receive=None,  # type: ignore[arg-type]
        )
        got = Gateway.upstream_headers(None, req, Context(), 12)  # type: ignore[arg-type]
        forwarded = [
            h
            for h in got
            if h[0] in {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"content-length"}
        ]
        assert forwarded == reference(req, 12), (peer, scheme, host, trusted, prior)
