"""Red team (session 7, s7-rt-perf): the client-keyed caches of the CORS and ip_rules policies
stay bounded under floods of distinct keys, and every answer stays the uncached one (the
matcher's / the network sets'), before, during and after the caches are cleared."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.http import Request
from bastion.pipeline import Context, PolicyEnv
from bastion.policies.cors import Cors, CorsConfig
from bastion.policies.ip_rules import IpRules, IpRulesConfig


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


def request(origin: bytes | None, ip: Any = None) -> Request:
    headers = [] if origin is None else [(b"origin", origin)]
    return Request("GET", "/x", b"", headers, ip, ip, False, "https", "gw.test", _no_body)


CORS = CorsConfig(allow_origins=["https://app.example.com", "https://*.example.com"], allow_credentials=True)


def test_cors_answers_bounded_under_a_flood_of_origins() -> None:
    """3 x CACHE_SIZE distinct origins, some allowed, some over KEY_MAX bytes: the cache never
    holds more than CACHE_SIZE entries nor a key over KEY_MAX; each answer is the matcher's."""
    policy = Cors(CORS, PolicyEnv())
    biggest = 0
    for i in range(3 * Cors.CACHE_SIZE):
        label = f"h{i}" if i % 3 else "x" * (Cors.KEY_MAX + i % 7)
        origin = f"https://{label}.example.com" if i % 2 else f"https://{label}.evil.com"
        ctx = Context()
        assert policy.on_request_sync(request(origin.encode()), ctx) is None
        allowed = policy.matcher.allows(origin)
        assert (
            # (since session 9 the entry starts with the Vary: Origin the response phase appends)
            ctx.values.get("cors.answer", ())[:2]
            == ((b"vary", b"Origin"), (b"access-control-allow-origin", origin.encode()))
        ) == allowed
        biggest = max(biggest, len(policy._answers))
        assert all(len(k) <= Cors.KEY_MAX for k in policy._answers)
    assert 0 < biggest <= Cors.CACHE_SIZE


def test_ip_verdicts_bounded_under_a_flood_of_addresses() -> None:
    policy = IpRules(IpRulesConfig(allow=["10.0.0.0/8", "2001:db8::/32"], block=["10.9.0.0/16"]), PolicyEnv())
    nets_allow = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
    block = ipaddress.ip_network("10.9.0.0/16")
    biggest = 0
    for i in range(IpRules.CACHE_SIZE + 5000):
        ip = ipaddress.ip_address((10 << 24) + i * 37) if i % 2 else ipaddress.ip_address(0x20010DB8 << 96 | i)
        refused = policy.on_request_sync(request(None, ip), Context()) is not None
        expected = (ip.version == 4 and ip in block) or not any(ip in n for n in nets_allow if n.version == ip.version)
        assert refused == expected, ip
        biggest = max(biggest, len(policy._verdicts))
    assert biggest <= IpRules.CACHE_SIZE


addresses = st.one_of(
    st.ip_addresses(v=4),
    st.ip_addresses(v=6),
    st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}")),
    st.sampled_from(["10.0.0.1", "10.9.0.1", "::ffff:10.9.0.1", "fe80::1%eth0", "fe80::1", "2001:db8::1"]).map(
        ipaddress.ip_address
    ),
)


@settings(max_examples=300, deadline=None)
@given(seq=st.lists(addresses, min_size=1, max_size=20))
def test_ip_verdict_cache_is_the_uncached_verdict(seq: list[Any]) -> None:
    """A cache of 2 entries (evicting constantly) and the full one: every verdict is `verdict`'s."""
    cfg = IpRulesConfig(allow=["10.0.0.0/8", "fe80::/10"], block=["10.9.0.0/16"])
    small, full, oracle = IpRules(cfg, PolicyEnv()), IpRules(cfg, PolicyEnv()), IpRules(cfg, PolicyEnv())
    small.CACHE_SIZE = 2
    for ip in seq:
        want = oracle.verdict(ip)
        for p in (small, full):
            resp = p.on_request_sync(request(None, ip), Context())
            assert (resp is not None) == bool(want), ip
