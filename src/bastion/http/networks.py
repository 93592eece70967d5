"""Client addresses and CIDR sets (trusted proxies, IP rules)."""

from __future__ import annotations

import functools
import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str | None) -> IPAddress | None:
    """Parse an address; IPv4-mapped IPv6 (`::ffff:1.2.3.4`) becomes plain IPv4."""
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def check_networks(values: list[str]) -> list[str]:
    """Config validation for CIDR lists: the error names the bad entry."""
    for v in values:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise ValueError(f"{v!r} is not an IP address or CIDR network") from None
    return values


@functools.lru_cache(maxsize=4096)
def ip_text(ip: IPAddress) -> str:
    """`str(ip)`, cached: ipaddress formats slowly and the same clients come back."""
    return str(ip)


class NetworkSet:
    """CIDR networks (IPv4 and IPv6) compiled to integer masks, with a bounded answer cache:
    the same clients come back, so most lookups are one dict hit."""

    __slots__ = ("networks", "_v4", "_v6", "_cache")
    CACHE_SIZE = 65536

    def __init__(self, values: list[str]) -> None:
        nets: list[Network] = []
        for v in values:
            net = ipaddress.ip_network(v, strict=False)
            if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped:
                # ::ffff:10.0.0.0/104 means 10.0.0.0/8; clients are compared as IPv4.
                mapped = net.network_address.ipv4_mapped
                net = ipaddress.ip_network(f"{mapped}/{max(0, net.prefixlen - 96)}", strict=False)
            nets.append(net)
        self.networks = tuple(nets)
        self._v4 = tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 4)
        self._v6 = tuple((int(n.network_address), int(n.netmask)) for n in nets if n.version == 6)
        self._cache: dict[IPAddress, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, ip: IPAddress | None) -> bool:
        if ip is None:
            return False
        hit = self._cache.get(ip)
        if hit is None:
            value = int(ip)
            pairs = self._v4 if ip.version == 4 else self._v6
            hit = any(value & mask == net for net, mask in pairs)
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            self._cache[ip] = hit
        return hit
