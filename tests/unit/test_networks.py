import ipaddress

from bastion.http import NetworkSet, parse_ip


def test_ipv4_and_ipv6_membership():
    nets = NetworkSet(["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"])
    assert parse_ip("10.255.0.1") in nets
    assert parse_ip("11.0.0.1") not in nets
    assert parse_ip("2001:db8:1::5") in nets
    assert parse_ip("2001:db9::1") not in nets
    assert parse_ip("192.0.2.7") in nets and parse_ip("192.0.2.8") not in nets
    assert None not in nets


def test_ipv4_mapped_clients_are_compared_as_ipv4():
    nets = NetworkSet(["10.0.0.0/8"])
    assert parse_ip("::ffff:10.1.2.3") in nets  # parse_ip unmaps
    mapped_rule = NetworkSet(["::ffff:10.0.0.0/104"])
    assert parse_ip("10.9.9.9") in mapped_rule


def test_v4_address_never_matches_a_v6_network_with_the_same_integer():
    nets = NetworkSet(["::/96"])  # integers 0..2**32 as IPv6
    assert ipaddress.ip_address("10.0.0.1") not in nets


def test_answers_stay_right_after_the_cache_fills(monkeypatch):
    monkeypatch.setattr(NetworkSet, "CACHE_SIZE", 10)
    nets = NetworkSet(["10.0.0.0/8"])
    for i in range(50):
        assert (ipaddress.ip_address(f"10.0.0.{i}") in nets) is True
        assert (ipaddress.ip_address(f"11.0.0.{i}") in nets) is False
    assert len(nets._cache) <= 10
