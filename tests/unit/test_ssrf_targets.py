"""The SSRF guard's address logic (bastion.net.targets): every spelling of an internal address
is refused, every spelling of a public one passes, names resolve through a real resolver."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bastion.net.targets import (
    ResolveError,
    SystemResolver,
    TargetPolicy,
    classify_ip,
    parse_ipv4_number,
    readings,
)


class FakeResolver:
    """Names from a dict; every other name does not resolve."""

    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = {k: [ipaddress.ip_address(a) for a in v] for k, v in (answers or {}).items()}
        self.asked: list[str] = []

    async def resolve(self, name: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        self.asked.append(name)
        if name not in self.answers:
            raise ResolveError(name)
        return self.answers[name]


PUBLIC_NAMES = {"example.com": ["93.184.216.34"], "good.com": ["8.8.8.8"], "api.example.org": ["2606:4700::1"]}


def check(value: str, **kw) -> str | None:
    kw.setdefault("resolver", FakeResolver(PUBLIC_NAMES))
    refusal = asyncio.run(TargetPolicy(**kw).check(value))
    return None if refusal is None else refusal.reason


# ----------------------------------------------------------------------------- examples

REFUSED = {
    "http://127.0.0.1/": "loopback",
    "http://2130706433/": "loopback",
    "http://0177.0.0.1/": "loopback",
    "http://0x7f.1/": "loopback",
    "http://0x7F000001/": "loopback",
    "http://127.1/": "loopback",
    "http://127.0.0.1./": "loopback",
    "http://0/": "unspecified",
    "http://0.0.0.0:8080/": "unspecified",
    "http://[::]/": "unspecified",
    "http://[::1]:6379/": "loopback",
    "http://[0:0:0:0:0:0:0:1]/": "loopback",
    "http://[::ffff:127.0.0.1]/": "loopback",
    "http://[::ffff:7f00:1]/": "loopback",
    "http://[::127.0.0.1]/": "loopback",  # IPv4-compatible
    "http://[::ffff:0:a00:1]/": "private",  # SIIT-translated 10.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/": "metadata",  # NAT64 169.254.169.254
    "http://[2002:c0a8:101::1]/": "private",  # 6to4 of 192.168.1.1
    "http://[fe80::1%25eth0]/": "link-local",
    "http://[fe80::1%eth0]/": "link-local",
    "http://[fd00:ec2::254]/latest/meta-data/": "metadata",
    "http://[fc00::1]/": "private",
    "http://[ff02::1]/": "multicast",
    "http://10.1.2.3/": "private",
    "http://172.16.0.1/": "private",
    "http://192.168.0.1/": "private",
    "http://100.64.0.1/": "cgnat",
    "http://100.100.100.200/": "metadata",
    "http://169.254.169.254/latest/meta-data/": "metadata",
    "http://169.254.170.2/v2/credentials": "metadata",
    "http://168.63.129.16/": "metadata",
    "http://169.254.1.1/": "link-local",
    "http://224.0.0.1/": "multicast",
    "http://255.255.255.255/": "reserved",
    "http://198.18.0.1/": "reserved",
    "http://metadata.google.internal/computeMetadata/v1/": "metadata",
    "http://metadata.google.internal./": "metadata",
    "http://METADATA.GOOGLE.INTERNAL/": "metadata",
    "http://metadata/": "metadata",
    "http://localhost/": "loopback",
    "http://LocalHost./": "loopback",
    "http://foo.localhost/": "loopback",
    "http://redis.internal/": "internal-name",
    "http://printer.local/": "internal-name",
    "http://good.com@127.0.0.1/": "loopback",
    "http://user:pass@127.0.0.1:80/": "loopback",
    "http://127.0.0.1\\@good.com/": "loopback",  # WHATWG: host 127.0.0.1 (\ ends it)
    "http://good.com\\@127.0.0.1/": "loopback",  # urllib: host 127.0.0.1
    "http://1.1.1.1 &@127.0.0.1# @3.3.3.3/": "loopback",
    "http://8.8.8.8 &@127.0.0.1/": "loopback",
    "http:\\\\127.0.0.1\\x": "loopback",
    "http:/127.0.0.1/": "loopback",
    "http:///127.0.0.1/": "loopback",
    "http://a@b@127.0.0.1/": "loopback",
    "http://a@127.0.0.1:80@good.com/": "loopback",  # older parsers: the host after the first @
    "http:127.0.0.1": "loopback",
    "//127.0.0.1/x": "loopback",
    "\\\\127.0.0.1\\x": "loopback",
    "/\\127.0.0.1": "loopback",
    "  http://127.0.0.1/": "loopback",
    "\x00http://127.0.0.1/": "loopback",
    "ht\ttp://127.0.0.1/": "loopback",
    "http://127.0.\n0.1/": "loopback",
    "HTTP://127.0.0.1/": "loopback",
    "http://%31%32%37.0.0.1/": "loopback",
    "http://%6c%6f%63%61%6c%68%6f%73%74/": "loopback",
    "http%3A%2F%2F127.0.0.1%2F": "loopback",
    "http%253A%252F%252F127.0.0.1%252F": "loopback",
    "http://127.0.0.1%00.good.com/": "loopback",
    "http://127.0.0.1%09.good.com/": "loopback",
    "http://１２７。０。０。１/": "loopback",  # full-width digits, ideographic dots (UTS 46)
    "http://ｌｏｃａｌｈｏｓｔ/": "loopback",
    "http://127.0.0.1:80:80/": "loopback",
    "http://1.2.3.4.5/": "malformed",
    "http://0x100000000/": "malformed",
    "gopher://127.0.0.1:6379/_INFO": "scheme",
    "gopher://good.com/": "scheme",
    "file:///etc/passwd": "scheme",
    "FILE:///etc/passwd": "scheme",
    "dict://good.com:11211/stat": "scheme",
    "ftp://good.com/": "scheme",
    "ldap://good.com/": "scheme",
    "jar:http://good.com!/": "scheme",
    "file%3A%2F%2F%2Fetc%2Fpasswd": "scheme",
    "127.0.0.1": "loopback",
    "127.0.0.1:6379": "loopback",
    "localhost:8080": "loopback",
    "localhost/admin": "loopback",
    "::1": "loopback",
    "[::1]:6379": "loopback",
    "2130706433": "loopback",
    "10.0.0.5:22": "private",
    "http://unknown.invalid/": "unresolvable",
    "https://nowhere.example.net/x": "unresolvable",
}

PASSED = [
    "https://example.com/",
    "https://example.com:8443/a/b?c=http://127.0.0.1#frag",
    "http://user:pass@good.com/",
    "https://93.184.216.34/",
    "http://8.8.8.8:80/",
    "http://[2001:4860:4860::8888]/",
    "http://[2606:4700::1]:443/",
    "HTTPS://EXAMPLE.COM./",
    "https://api.example.org/v1",
    "//example.com/x",
    "example.com",
    "example.com:443",
    "93.184.216.34",
    "/relative/path",
    "./x",
    "images/cat.png",  # a relative reference read as a host: `images` does not resolve, only a guess
    "?q=1",
    "#top",
    "",
]


@pytest.mark.parametrize("value,reason", sorted(REFUSED.items()))
def test_refused(value: str, reason: str) -> None:
    assert check(value) == reason


@pytest.mark.parametrize("value", PASSED)
def test_passed(value: str) -> None:
    assert check(value) is None


def test_allowlists_and_blocklists() -> None:
    assert check("http://10.1.2.3/", allow_networks=["10.1.0.0/16"]) is None
    assert check("http://[::ffff:10.1.2.3]/", allow_networks=["10.1.0.0/16"]) is None
    assert check("http://10.2.0.1/", allow_networks=["10.1.0.0/16"]) == "private"
    assert check("http://hooks.corp.internal/", allow_hosts=["*.corp.internal"]) is None
    assert check("http://corp.internal/", allow_hosts=["*.corp.internal"]) == "internal-name"
    assert check("http://relay/", allow_hosts=["relay"]) is None
    assert check("http://good.com/", block_hosts=["good.com"]) == "blocked"
    assert check("http://8.8.8.8/", block_networks=["8.8.0.0/16"]) == "blocked"
    assert check("http://good.com/", block_networks=["8.8.0.0/16"]) == "blocked"  # by what it resolves to
    assert check("ftp://good.com/", schemes=["http", "https", "ftp"]) is None
    assert check("http://unknown.invalid/", unresolvable="allow") is None


def test_names_are_judged_by_every_address_they_resolve_to() -> None:
    resolver = FakeResolver({"mixed.example": ["8.8.8.8", "10.0.0.1"], "v6.example": ["::1"]})
    assert check("http://mixed.example/", resolver=resolver) == "private"
    assert check("http://v6.example/", resolver=resolver) == "loopback"
    resolver = FakeResolver({"mapped.example": ["::ffff:169.254.169.254"]})
    assert check("http://mapped.example/", resolver=resolver) == "metadata"


def test_a_value_with_many_hosts_costs_few_lookups() -> None:
    resolver = FakeResolver(PUBLIC_NAMES)
    value = "http://" + "@".join(f"h{i}.example.com" for i in range(500)) + "/"
    assert check(value, resolver=resolver) == "ambiguous"
    assert resolver.asked == []


def test_literal_addresses_are_never_resolved() -> None:
    resolver = FakeResolver(PUBLIC_NAMES)
    for value in ("http://2130706433/", "http://0x7f.1/", "http://[::1]/", "http://8.8.8.8/"):
        check(value, resolver=resolver)
    assert resolver.asked == []


def test_ipv4_number_parser_matches_whatwg() -> None:
    # examples from the URL Standard's IPv4 parser and WPT's url tests
    assert parse_ipv4_number("0x7f.1") == ipaddress.IPv4Address("127.0.0.1")
    assert parse_ipv4_number("0x.0x.0") == ipaddress.IPv4Address("0.0.0.0")
    assert parse_ipv4_number("4294967295") == ipaddress.IPv4Address("255.255.255.255")
    assert parse_ipv4_number("4294967296") is False
    assert parse_ipv4_number("256.0.0.1") is False
    assert parse_ipv4_number("09.0.0.1") is False  # 09 is octal and invalid
    assert parse_ipv4_number("1.2.3.4.") == ipaddress.IPv4Address("1.2.3.4")
    assert parse_ipv4_number("example.com") is None
    assert parse_ipv4_number("1.2.example") is None


def test_system_resolver_on_names_this_machine_resolves() -> None:
    """The real resolver: `localhost` and this machine's own name (from /etc/hosts) resolve to
    addresses the policy refuses; a name under .invalid (RFC 6761) never resolves."""
    resolver = SystemResolver(timeout=5, ttl=60)
    loop_addresses = asyncio.run(resolver.resolve("localhost"))
    assert any(ip.is_loopback for ip in loop_addresses)
    assert asyncio.run(resolver.resolve("localhost")) == loop_addresses
    assert resolver.lookups == 1  # the second answer came from the cache
    with pytest.raises(ResolveError):
        asyncio.run(resolver.resolve("no-such-host.invalid"))
    me = socket.gethostname().lower()
    mine = {info[4][0] for info in socket.getaddrinfo(me, None)}
    assert mine, "this machine's name resolves"
    policy = TargetPolicy(resolver=resolver)
    refusal = asyncio.run(policy.check(f"http://{me}:8080/"))
    if all(classify_ip(ipaddress.ip_address(a.partition("%")[0])) for a in mine):
        assert refusal is not None and me in refusal.target
    else:
        assert refusal is None


def test_resolver_timeout_refuses() -> None:
    resolver = SystemResolver(timeout=0.05, ttl=0)

    async def run() -> object:
        loop = asyncio.get_running_loop()

        async def slow_getaddrinfo(*a, **kw):
            await asyncio.sleep(10)

        loop.getaddrinfo = slow_getaddrinfo  # type: ignore[method-assign]
        return await TargetPolicy(resolver=resolver).check("http://slow.example/")

    refusal = asyncio.run(run())
    assert refusal is not None and refusal.reason == "unresolvable"


# ----------------------------------------------------------------------------- generators

INTERNAL_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
]


@st.composite
def internal_v4(draw) -> ipaddress.IPv4Address:
    net = ipaddress.IPv4Network(draw(st.sampled_from(INTERNAL_V4)))
    return net[draw(st.integers(0, net.num_addresses - 1))]


@st.composite
def public_v4(draw) -> ipaddress.IPv4Address:
    ip = ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))
    assume(classify_ip(ip) is None)
    return ip


def _part(draw, n: int) -> str:
    style = draw(st.sampled_from(["dec", "oct", "hex", "HEX"]))
    if style == "oct":
        return "0" + "0" * draw(st.integers(0, 2)) + format(n, "o")
    if style == "hex":
        return "0x" + "0" * draw(st.integers(0, 2)) + format(n, "x")
    if style == "HEX":
        return "0X" + format(n, "X")
    return str(n)


@st.composite
def v4_spelling(draw, ip: ipaddress.IPv4Address) -> str:
    """Dotted quad, 3-, 2- and 1-part forms, each part decimal, octal or hex; a trailing dot."""
    b = ip.packed
    value = int(ip)
    parts_n = draw(st.integers(1, 4))
    if parts_n == 4:
        nums = list(b)
    elif parts_n == 3:
        nums = [b[0], b[1], value & 0xFFFF]
    elif parts_n == 2:
        nums = [b[0], value & 0xFFFFFF]
    else:
        nums = [value]
    text = ".".join(_part(draw, n) for n in nums)
    if draw(st.booleans()) and parts_n == 4 and all(p.isdigit() for p in text.split(".")):
        text = text.translate(str.maketrans("0123456789.", "０１２３４５６７８９。"))  # full width
    if draw(st.integers(0, 4)) == 0:
        text += "."
    return text


@st.composite
def v6_spelling(draw, ip: ipaddress.IPv4Address) -> str:
    """IPv6 forms that carry the IPv4 address: mapped, compatible, translated, NAT64, 6to4."""
    hi, lo = int(ip) >> 16, int(ip) & 0xFFFF
    form = draw(st.sampled_from(["mapped", "mapped-hex", "mapped-long", "compat", "nat64", "6to4", "translated"]))
    text = {
        "mapped": f"::ffff:{ip}",
        "mapped-hex": f"::ffff:{hi:x}:{lo:x}",
        "mapped-long": f"0:0:0:0:0:ffff:{hi:04x}:{lo:04x}",
        "compat": f"::{ip}",
        "nat64": f"64:ff9b::{hi:x}:{lo:x}",
        "6to4": f"2002:{hi:x}:{lo:x}::{draw(st.integers(0, 0xFFFF)):x}",
        "translated": f"::ffff:0:{ip}",
    }[form]
    if form == "compat":
        assume(int(ip) > 1)
    if draw(st.booleans()):
        text = text.upper()
    if draw(st.integers(0, 3)) == 0:
        text += draw(st.sampled_from(["%25eth0", "%eth0", "%251"]))
    return "[" + text + "]"


def _percent(draw, host: str) -> str:
    """Some of the host's letters and digits percent-encoded (WHATWG decodes a host)."""
    if draw(st.integers(0, 3)) != 0 or not host.isascii():
        return host
    return "".join(f"%{ord(c):02x}" if c.isalnum() and draw(st.booleans()) else c for c in host)


@st.composite
def url_around(draw, host: str, *, v6: bool, tab_anywhere: bool = True) -> str:
    """The host wrapped as clients accept it: scheme case, slashes and backslashes, user info,
    a port, a path, spaces around, tabs inside, percent-encoding, or a bare host[:port]. A tab
    inside the host itself makes C readers (`inet_aton`) stop there: `tab_anywhere=False` keeps
    it in the scheme (for public addresses, whose cut-short host may be internal: `1\t2.3.4`)."""
    if not v6:
        host = _percent(draw, host)
    port = draw(st.sampled_from(["", ":80", ":8080", ":6379", ":"]))
    userinfo = draw(st.sampled_from(["", "user@", "user:pass@", "good.com@", "example.com:443@"]))
    path = draw(st.sampled_from(["", "/", "/latest/meta-data/", "/a?b=c", "#x", "?url=https://example.com/"]))
    if draw(st.integers(0, 5)) == 0:
        return host + port + path.replace("#x", "")  # a bare host/port value
    scheme = draw(st.sampled_from(["http", "https", "HTTP", "hTTpS"]))
    slashes = draw(st.sampled_from(["//", "//", "\\\\", "/\\", "///", ""]))
    text = f"{scheme}:{slashes}{userinfo}{host}{port}{path}"
    if draw(st.integers(0, 6)) == 0:
        i = draw(st.integers(0, len(text) if tab_anywhere else len(scheme)))
        text = text[:i] + "\t" + text[i:]
    if draw(st.integers(0, 6)) == 0:
        text = " " + text + " \n"
    return text


@st.composite
def internal_url(draw) -> str:
    ip = draw(internal_v4())
    if draw(st.booleans()):
        return draw(url_around(draw(v4_spelling(ip)), v6=False))
    return draw(url_around(draw(v6_spelling(ip)), v6=True))


@st.composite
def public_url(draw) -> str:
    ip = draw(public_v4())
    if draw(st.booleans()):
        return draw(url_around(draw(v4_spelling(ip)), v6=False, tab_anywhere=False))
    return draw(url_around(draw(v6_spelling(ip)), v6=True, tab_anywhere=False))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(internal_url())
def test_every_spelling_of_an_internal_address_is_refused(value: str) -> None:
    assert check(value) is not None, value


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(public_url())
def test_every_spelling_of_a_public_address_passes(value: str) -> None:
    assert check(value) is None, value


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_any_text_is_judged_without_error(value: str) -> None:
    check(value)
    readings(value)


def _parser_hosts(value: str) -> dict[str, str]:
    """The host each real client library takes from `value` (None when it refuses the URL)."""
    import httpx
    import yarl
    from urllib3.util import parse_url

    parsers = {
        "urllib": lambda u: urlsplit(u).hostname,
        "yarl": lambda u: yarl.URL(u).host,
        "httpx": lambda u: httpx.URL(u).host,
        "urllib3": lambda u: parse_url(u).host,
    }
    out = {}
    for name, parse in parsers.items():
        try:
            host = parse(value)
        except Exception:  # noqa: S112 (a parser that refuses the URL connects nowhere)
            continue
        if host:
            out[name] = host
    return out


def _connect_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a client connects to for a host its parser returned, when it is numeric:
    getaddrinfo reads IPv4 as inet_aton does (`0x7f.1`, `2130706433`)."""
    text = host.strip("[]")
    if ":" in text:
        text = text.partition("%")[0]  # an IPv6 zone id
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


odd = st.sampled_from(["", "@", "\\", "\\@", "@good.com", "#@", "?@", " ", "%40", ":80@", "/"])


@st.composite
def tricky_url(draw) -> str:
    """Two hosts glued with the separators parsers disagree on."""
    a = draw(v4_spelling(draw(internal_v4())))
    b = draw(st.sampled_from(["good.com", "8.8.8.8", "example.com"]))
    first, second = (a, b) if draw(st.booleans()) else (b, a)
    scheme = draw(st.sampled_from(["http://", "https://", "http:\\\\", "//", "http:/"]))
    return f"{scheme}{first}{draw(odd)}{second}{draw(odd)}/x"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.one_of(internal_url(), public_url(), tricky_url()))
def test_the_readings_include_the_host_every_client_library_takes(value: str) -> None:
    """Differential oracle: Python's urllib, yarl (WHATWG-like), httpx and urllib3 each parse the
    value; whatever numeric address one of them would connect to is among the readings, so the
    policy judges it (and an internal one is refused)."""
    found = {r.ip for r in readings(value).readings if r.ip is not None}
    plain = {ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip.version == 6 else ip for ip in found}
    names = {r.name for r in readings(value).readings if r.name is not None}
    for parser, host in _parser_hosts(value.strip()).items():
        ip = _connect_address(host)
        if ip is None:
            if re.fullmatch(r"[A-Za-z0-9_.-]+", host) and host.strip("."):
                number = parse_ipv4_number(host)  # `0.`: a WHATWG reader's address
                if isinstance(number, ipaddress.IPv4Address):
                    assert number in found, (parser, value, host, found)
                elif number is None:
                    assert host.lower().rstrip(".") in names, (parser, value, host, names)
            continue
        assert ip in found or ip in plain, (parser, value, host, found)
        if classify_ip(ip) is not None:
            assert check(value) is not None, (parser, value, host)


def test_an_overlong_value_is_refused_unread() -> None:
    """Reading costs CPU per character (900 KB of `%25` took a second): values over the cap are
    refused before any reading, however they would read."""
    assert check("%25" * 300_000) == "too-long"
    assert check("http://example.com/" + "a" * (16 * 1024)) == "too-long"
    assert check("http://93.184.216.34/" + "a" * 100) is None
