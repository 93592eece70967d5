"""The connection gate's pure parts: client keys, per-offender logging, counting."""

from __future__ import annotations

import ipaddress
import logging

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.gateway.edge import ConnectionGate, EdgeLimits, OffenderLog, client_key


def test_client_keys():
    assert client_key("192.0.2.7") == "192.0.2.7"
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"  # a dual-stack listener sees IPv4 like this
    assert client_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert client_key("fe80::1%eth0") == "fe80::/64"
    assert client_key(None) == "" and client_key("") == ""
    assert client_key("not-an-ip") == "not-an-ip"  # e.g. a unix socket's name: one bucket


@given(st.ip_addresses(v=6), st.integers(0, 2**64 - 1))
def test_an_ipv6_subscriber_cannot_escape_the_cap_by_changing_its_interface_id(ip, low):
    if ip.ipv4_mapped is not None:
        return
    sibling = ipaddress.IPv6Address((int(ip) >> 64 << 64) | low)
    assert client_key(str(ip)) == client_key(str(sibling))
    other = ipaddress.IPv6Address(int(ip) ^ (1 << 64))
    assert client_key(str(ip)) != client_key(str(other))


def test_offenders_are_logged_once_per_interval_with_a_count(caplog):
    now = [0.0]
    offenders = OffenderLog(logging.getLogger("test.edge"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.edge"):
        for _ in range(1000):
            offenders.note("cap", "192.0.2.7", "refused %s", "192.0.2.7")
        offenders.note("cap", "192.0.2.8", "refused %s", "192.0.2.8")
        offenders.note("timeout", "192.0.2.7", "timed out %s", "192.0.2.7")
        assert len(caplog.records) == 3
        now[0] = 61
        offenders.note("cap", "192.0.2.7", "refused %s", "192.0.2.7")
    assert len(caplog.records) == 4
    assert "999 more" in caplog.records[-1].getMessage()


def test_offender_memory_is_bounded():
    offenders = OffenderLog(logging.getLogger("test.edge.bounded"), max_keys=10)
    for i in range(1000):
        offenders.note("cap", f"10.0.{i // 256}.{i % 256}", "refused")
    assert len(offenders._seen) == 10


@settings(max_examples=200)
@given(st.integers(1, 5), st.one_of(st.none(), st.integers(1, 3)),
       st.lists(st.tuples(st.booleans(), st.sampled_from(["a", "b", "c"])), max_size=60))
def test_gate_never_exceeds_its_caps_and_counts_back_to_zero(total, per, ops):
    gate = ConnectionGate(EdgeLimits(max_connections=total, max_per_client=per))
    held: list[str] = []
    for opening, key in ops:
        if opening:
            why = gate.admit(key)
            if why is None:
                held.append(key)
            else:
                assert why == ("total" if len(held) >= total else "client")
        elif key in held:
            held.remove(key)
            gate.release(key)
        assert gate.total == len(held) <= total
        assert all(n == held.count(k) and (per is None or n <= per) for k, n in gate.per_client.items())
        assert 0 not in gate.per_client.values()
    for key in held:
        gate.release(key)
    assert gate.total == 0 and gate.per_client == {}


def test_listener_limits_are_validated_and_linted():
    import pytest

    from bastion.config.lint import lint
    from bastion.config.loader import ConfigError, load_config_text

    for bad in ("client_header_timeout: 0", "keepalive_timeout: -1", "max_connections: 0",
                "max_connections_per_ip: 0", "max_header_count: 0", "max_header_bytes: 100"):
        with pytest.raises(ConfigError) as exc:
            load_config_text(f"listeners: [{{host: 127.0.0.1, {bad}}}]\n")
        assert bad.split(":")[0] in str(exc.value)
    cfg = load_config_text("listeners: [{host: 127.0.0.1, max_connections_per_ip: null}]\n")
    assert cfg.listeners[0].max_connections_per_ip is None
    behind = load_config_text("listeners: [{host: 127.0.0.1}]\ntrusted_proxies: ['10.0.0.0/8']\n")
    assert ("warning", "listeners[0].max_connections_per_ip") in {(f.severity, f.key) for f in lint(behind)}
    off = load_config_text("listeners: [{host: 127.0.0.1, max_connections_per_ip: null}]\n"
                           "trusted_proxies: ['10.0.0.0/8']\n")
    assert not [f for f in lint(off) if "max_connections_per_ip" in f.key]
