"""Where a URL or a host/port value would send a client: every plausible reading of it, and
whether any of them is an internal address (the SSRF guard's address logic).

No one parser is the truth: the upstream that fetches the URL may use a WHATWG parser
(browsers, Node's `URL`, Go's net/url is close), an RFC 3986 one (Python's urllib, requests,
Java's `URI`), curl, or hand `inet_aton` a host. They disagree on backslashes, on which `@`
ends the user info, on numeric hosts (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`), on tabs
and control characters, on percent-encoded and full-width hosts. So this module does not parse
the value once: it collects the hosts that *any* of these readings yields (`readings`), and the
caller refuses the value when one of them is internal. Over-collecting costs at most a false
refusal of a value no honest client sends; under-collecting is a bypass.

Hand-written parts, and why: the WHATWG IPv4 number parser (`ipaddress` accepts only dotted
decimal; `socket.inet_aton`, also used, is glibc's reading and differs from WHATWG on trailing
dots and empty hex parts), and the splitting of an authority by each parser's rules (no library
exposes several parsers' readings at once). IPv6, IDNA/UTS 46 mapping and CIDR logic come from
`ipaddress` and `idna`.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import unquote, unwrap

import idna

from bastion.http.networks import IPAddress, NetworkSet

# ----------------------------------------------------------------------------- addresses

# Special-purpose ranges (IANA IPv4/IPv6 special-purpose registries) a server-side fetch must
# not reach, each with the reason logged. IPv6 forms that embed an IPv4 address (mapped,
# compatible, translated, NAT64, 6to4) are unwrapped and the IPv4 address is judged instead.
_V4 = [
    ("0.0.0.0/8", "unspecified"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "cgnat"),  # also Alibaba Cloud's metadata 100.100.100.200
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),  # 169.254.169.254 (AWS, GCP, Azure, OCI...), 169.254.170.2 (ECS)
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "reserved"),
    ("192.0.2.0/24", "reserved"),
    ("192.88.99.0/24", "reserved"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "reserved"),
    ("198.51.100.0/24", "reserved"),
    ("203.0.113.0/24", "reserved"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),  # and 255.255.255.255
    ("168.63.129.16/32", "metadata"),  # Azure's WireServer: a public address, internal service
]
_V6 = [
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "private"),  # local-use NAT64
    ("100::/64", "reserved"),
    ("2001::/23", "reserved"),  # IETF protocol assignments, Teredo (its IPv4 is obfuscated)
    ("2001:db8::/32", "reserved"),
    ("3fff::/20", "reserved"),
    ("5f00::/16", "reserved"),
    ("fc00::/7", "private"),  # ULA; AWS's metadata fd00:ec2::254
    ("fe80::/10", "link-local"),
    ("fec0::/10", "private"),  # deprecated site-local
    ("ff00::/8", "multicast"),
]
_V4_NETS = [(ipaddress.IPv4Network(n), r) for n, r in _V4]
_V6_NETS = [(ipaddress.IPv6Network(n), r) for n, r in _V6]
_METADATA_IPS = {
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "168.63.129.16", "fd00:ec2::254")
}
_COMPAT = ipaddress.IPv6Network("::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if any: mapped (::ffff:a.b.c.d), compatible
    (::a.b.c.d), SIIT-translated (::ffff:0:a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:AABB:CCDD::)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _COMPAT or ip in _TRANSLATED or ip in _NAT64:
        low = int(ip) & 0xFFFFFFFF
        if ip in _COMPAT and low <= 1:
            return None  # :: and ::1 are themselves
        return ipaddress.IPv4Address(low)
    return None


@functools.lru_cache(maxsize=4096)
def classify_ip(ip: IPAddress) -> str | None:
    """Why a fetch must not go to `ip` ("loopback", "private", "metadata", ...), or None."""
    if ip in _METADATA_IPS:
        return "metadata"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
        v4 = embedded_ipv4(ip)
        if v4 is not None:
            return classify_ip(v4)
        for net6, why in _V6_NETS:
            if ip in net6:
                return why
    else:
        for net4, why in _V4_NETS:
            if ip in net4:
                return why
    if not ip.is_global:  # Python's own table, as a backstop for anything missed above
        return "reserved"
    return None


def parse_ipv4_number(host: str) -> ipaddress.IPv4Address | None | Literal[False]:
    """The WHATWG URL Standard's IPv4 parser: `127.1`, `0x7f.1`, `0177.0.0.1`, `2130706433`,
    `127.0.0.1.` all are 127.0.0.1. Returns the address, None when `host` is not numeric, or
    False when it ends in a number but is no valid address (a WHATWG parser then fails)."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()
    if not parts or not (_DEC.fullmatch(parts[-1]) or _number(parts[-1]) is not None):
        return None
    if len(parts) > 4:
        return False
    numbers: list[int] = []
    for part in parts:
        n = _number(part)
        if n is None:
            return False
        numbers.append(n)
    if any(n > 255 for n in numbers[:-1]) or numbers[-1] >= 256 ** (5 - len(numbers)):
        return False
    value = numbers[-1]
    for i, n in enumerate(numbers[:-1]):
        value += n * 256 ** (3 - i)
    return ipaddress.IPv4Address(value)


_DEC = re.compile(r"[0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]+")
_OCT = re.compile(r"[0-7]+")


def _number(part: str) -> int | None:
    if part[:2] in ("0x", "0X"):
        digits = part[2:]
        if not digits:
            return 0
        return int(digits, 16) if _HEX.fullmatch(digits) else None
    if len(part) > 1 and part[0] == "0":
        return int(part[1:], 8) if _OCT.fullmatch(part[1:]) else None
    return int(part) if part and _DEC.fullmatch(part) else None


# ----------------------------------------------------------------------------- readings

# Names that are internal wherever they are looked up: RFC 6761 localhost, the private-use
# TLDs (.internal, ICANN 2024), mDNS .local, home networks; and the clouds' metadata names.
INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".home.arpa", ".localdomain")
METADATA_NAMES = frozenset(
    {
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.com",
        "metadata.tencentyun.com",
    }
)
INTERNAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_PORTISH = re.compile(r"[0-9]+(?:[/?#\\]|$)")
_SPECIAL = frozenset({"http", "https", "ws", "wss", "ftp"})  # WHATWG's special schemes with hosts
_CUT = re.compile(r"[\x00-\x20\x7f]")
_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_\-]*[a-z0-9_])?)*")
_TABS = re.compile(r"[\t\n\r]")
_IDEOGRAPHIC_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


@dataclass(frozen=True, slots=True)
class Reading:
    """One host a client could take from the value: an address, or a name (ASCII, lower case,
    without a trailing dot) still to be resolved."""

    ip: IPAddress | None = None
    name: str | None = None
    guess: bool = False  # only from reading a schemeless value as `host[/path]`


@dataclass(frozen=True, slots=True)
class Parsed:
    schemes: frozenset[str]  # lower case, as the value (or a decoding of it) states them
    readings: tuple[Reading, ...]  # addresses first, then names, in a stable order
    malformed: bool = False  # some reading ends in a number that is no IPv4 address


def readings(value: str, *, bare: bool = True) -> Parsed:
    """Every host a client could connect to for `value` (a URL, `//host/...`, or with `bare`
    a `host`, `host:port` or `[v6]:port`). Relative references (`/path`, `./x`) have none.
    The schemes are the ones the value states (checked against an allowlist by the caller).
    Short values (the usual case: the same webhook URL again and again) are cached."""
    if len(value) <= 512:
        return _readings_cached(value, bare)
    return _readings(value, bare)


@functools.lru_cache(maxsize=4096)
def _readings_cached(value: str, bare: bool) -> Parsed:
    return _readings(value, bare)


def _readings(value: str, bare: bool) -> Parsed:
    hosts: set[tuple[str, bool]] = set()
    schemes: set[str] = set()
    for text in _variants(value):
        s, authorities, guess = _authorities(text, bare)
        if s is not None:
            schemes.add(s)
        for authority in authorities:
            hosts.update((h, guess) for h in _hosts_of_authority(authority))
    found: set[Reading] = set()
    malformed = False
    for host, guess in hosts:
        for form in _host_forms(host):
            r = _reading(form)
            if r is False:
                malformed = malformed or not guess
            elif r is not None:
                found.add(Reading(r.ip, r.name, guess) if guess else r)
    ordered = sorted(
        found, key=lambda r: (r.name is not None, r.name or "", r.ip.version if r.ip else 0, int(r.ip or 0))
    )
    return Parsed(frozenset(schemes), tuple(ordered), malformed)


def _variants(value: str) -> list[str]:
    """The value as each kind of client may clean it: stripped of C0 controls and spaces at
    both ends (WHATWG), of any Unicode white space and a `<URL:...>` wrapper (Python's
    urllib.request), tabs and newlines removed inside (WHATWG), percent-decoded once and
    twice (a value decoded again by the upstream)."""
    v = value.strip(
        "\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f "
    )
    out = [v]
    py = unwrap(value)  # urllib.request: str.strip() (Unicode white space too), `<...>`, `URL:`
    if py != v:
        out.append(py)  # (requests also drops leading Unicode white space)
    if _TABS.search(v):
        out.append(_TABS.sub("", v))
    for text in list(out):
        once = unquote(text, errors="replace")
        if once != text:
            out.append(once)
            twice = unquote(once, errors="replace")
            if twice != once:
                out.append(twice)
    return out


def _authorities(text: str, bare: bool) -> tuple[str | None, list[str], bool]:
    """(scheme, authorities, guessed): `guessed` when a schemeless value is read as curl reads
    `host/path` (it may as well be a relative path: `images/cat.png`)."""
    m = _SCHEME.match(text)
    # `host:8080` is a host and a port, but `http:0` is a URL to 0.0.0.0 (WHATWG: a special
    # scheme needs no slashes), so digits after a special scheme do not make it a port
    if m is not None and (m.group(1).lower() in _SPECIAL or not _PORTISH.match(text, m.end())):
        scheme = m.group(1).lower()
        rest = text[m.end() :]
    elif text[:2] in ("//", "\\\\", "/\\", "\\/"):
        scheme, rest = None, text
    elif bare and text and text[0] not in "/.?#\\":
        return None, [_until(text, "/?#\\"), _until(text, "/?#")], True
    else:
        return None, [], False  # a relative reference: no host of its own
    out: list[str] = []
    if rest.startswith("//"):
        out.append(_until(rest[2:], "/?#"))  # RFC 3986 (urllib, requests, Java's URI)
    if scheme is None or scheme in _SPECIAL:
        out.append(_until(rest.lstrip("/\\"), "/?#\\"))  # WHATWG: any run of / and \, \ ends it
    elif rest.startswith("//"):
        out.append(_until(rest[2:], "/?#\\"))
    return scheme, out, False


def _until(text: str, stops: str) -> str:
    for i, ch in enumerate(text):
        if ch in stops:
            return text[:i]
    return text


def _hosts_of_authority(authority: str) -> set[str]:
    """Hosts of `user:pass@host:port` as parsers split it: after the last `@` (WHATWG, urllib),
    and every piece between two `@`s (`http://a@evil:80@good/`: older parsers, PHP's
    `parse_url`, took `evil`), each also cut at the first space or control character (C
    libraries stop there: `inet_aton("127.0.0.1 x")` is 127.0.0.1)."""
    pieces = authority.split("@")
    candidates = set(pieces[1:]) if len(pieces) > 1 else {authority}
    out: set[str] = set()
    for c in candidates:
        for piece in {c, _CUT.split(c, 1)[0]}:
            out.update(_strip_port(piece))
    out.discard("")
    return out


def _strip_port(hostport: str) -> set[str]:
    if hostport.startswith("["):
        inside, bracket, _ = hostport[1:].partition("]")
        return {"[" + inside + "]"} if bracket else set()  # `[::` (cut short) is no host
    if hostport.count(":") > 1:
        return {hostport, hostport.partition(":")[0], hostport.rpartition(":")[0]}  # a bare IPv6 or junk
    return {hostport.partition(":")[0]}


def _host_forms(host: str) -> set[str]:
    """The host as clients spell it before resolving: percent-decoded, UTS 46-mapped (full-width
    digits, ideographic dots, case), lower-cased, trailing dots dropped."""
    decoded = unquote(host, errors="replace")
    forms = {decoded} if decoded != host else {host}  # no client connects to a literal `%`
    for f in list(forms):
        forms.add(f.translate(_IDEOGRAPHIC_DOTS))
        if not f.isascii():
            try:
                forms.add(idna.uts46_remap(f, std3_rules=False, transitional=False))
            except idna.IDNAError:
                pass
    return {f.lower() for f in forms}


def _reading(host: str) -> Reading | None | Literal[False]:
    if host.startswith("["):
        return _ip6(host[1:-1] if host.endswith("]") else host[1:])
    if ":" in host:
        return _ip6(host)
    name = host.rstrip(".")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii").rstrip(".")
        except (idna.IDNAError, UnicodeError):
            return None  # no client can resolve it
    if not name:
        return None
    number = parse_ipv4_number(name)
    if number is False:
        return False
    if number is not None:
        return Reading(ip=number)
    try:
        packed = socket.inet_aton(name)  # glibc's reading, where it is more lenient
        return Reading(ip=ipaddress.IPv4Address(packed))
    except (OSError, ValueError):
        pass
    if not _HOSTNAME.fullmatch(name):
        return None
    return Reading(name=name)


def _ip6(text: str) -> Reading | None:
    text = text.partition("%")[0]  # a zone id (`%25eth0`, `%eth0`) names an interface, not a host
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None  # no client connects to it
    return Reading(ip=ip)


def name_is_internal(name: str) -> str | None:
    """Why a name is internal whatever a resolver says ("loopback", "metadata", "internal-name")."""
    if name in METADATA_NAMES:
        return "metadata"
    if name in INTERNAL_NAMES or name.endswith(".localhost"):
        return "loopback"
    if name.endswith(INTERNAL_SUFFIXES):
        return "internal-name"
    return None


# ----------------------------------------------------------------------------- resolution


class ResolveError(Exception):
    """The name does not resolve (or not in time)."""


class Resolver(Protocol):
    async def resolve(self, name: str) -> list[IPAddress]: ...


class SystemResolver:
    """The system's resolver (`getaddrinfo` in the loop's executor), with a timeout and a small
    TTL cache of answers and failures. getaddrinfo does not report DNS TTLs, so the cache keeps
    each answer `ttl` seconds; a short one bounds how stale the gateway's view can be."""

    def __init__(self, *, timeout: float = 2.0, ttl: float = 30.0, max_entries: int = 4096) -> None:
        self.timeout = timeout
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[float, list[IPAddress] | None]] = {}
        self.lookups = 0

    async def resolve(self, name: str) -> list[IPAddress]:
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            if hit[1] is None:
                raise ResolveError(name)
            return hit[1]
        self.lookups += 1
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                infos = await loop.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            addresses: list[IPAddress] | None = sorted(
                {ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos}, key=str
            )
        except (OSError, TimeoutError, UnicodeError, ValueError):
            addresses = None
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[name] = (now + self.ttl, addresses)
        if not addresses:
            raise ResolveError(name)
        return addresses


# ----------------------------------------------------------------------------- the check


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # "loopback", "private", "metadata", "scheme", "unresolvable", "malformed", ...
    target: str  # the host or address that was refused (for the log; never the whole value)


MAX_NAMES = 8  # distinct host names one value may yield across its readings
# Longer values are refused unread: every reading (percent-decoding twice, IDNA, each piece
# between @s) is linear but not cheap, and 900 KB of `%25` took a second of CPU (red team).
# No URL or host an API takes comes near it (browsers' practical limit is 2 KB to 64 KB).
MAX_VALUE = 16 * 1024


class TargetPolicy:
    """What may be fetched: allowed schemes, allowlisted names (`api.example.com`,
    `*.example.com`) and networks, extra blocked names and networks, and what to do with a name
    that does not resolve."""

    def __init__(
        self,
        *,
        schemes: Iterable[str] = ("http", "https"),
        allow_hosts: Iterable[str] = (),
        allow_networks: Iterable[str] = (),
        block_hosts: Iterable[str] = (),
        block_networks: Iterable[str] = (),
        unresolvable: str = "refuse",
        resolver: Resolver | None = None,
    ) -> None:
        self.schemes = frozenset(s.lower() for s in schemes)
        hosts = [h.lower().rstrip(".") for h in allow_hosts]
        self.allow_names = frozenset(h for h in hosts if not h.startswith("*."))
        self.allow_suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))
        self.allow_networks = NetworkSet(list(allow_networks))
        self.block_names = frozenset(h.lower().rstrip(".") for h in block_hosts)
        self.block_networks = NetworkSet(list(block_networks))
        self.unresolvable = unresolvable
        self.resolver: Resolver = resolver or SystemResolver()

    def _name_allowed(self, name: str) -> bool:
        return name in self.allow_names or name.endswith(self.allow_suffixes)

    def judge_ip(self, ip: IPAddress) -> str | None:
        if ip in self.block_networks:
            return "blocked"
        if self.allow_networks and _plain(ip) in self.allow_networks:
            return None
        return classify_ip(ip)

    async def check(self, value: str, *, bare: bool = True, host: bool = False) -> Refusal | None:
        """A refusal when any reading of `value` would reach an internal target, else None.
        `host`: the value is known to be a host (an argument named `host`), so a schemeless
        reading is no guess and a name that does not resolve is `unresolvable`."""
        if len(value) > MAX_VALUE:
            return Refusal("too-long", f"{len(value)} characters")
        parsed = readings(value, bare=bare)
        for scheme in sorted(parsed.schemes - self.schemes):
            return Refusal("scheme", scheme + ":")
        names: dict[str, bool] = {}  # name -> only guessed
        for r in parsed.readings:
            if r.ip is not None:
                why = self.judge_ip(r.ip)
                if why is not None:
                    return Refusal(why, str(r.ip))
            elif r.name is not None and not self._name_allowed(r.name):
                why = "blocked" if r.name in self.block_names else name_is_internal(r.name)
                if why is not None:
                    return Refusal(why, r.name)
                names[r.name] = names.get(r.name, True) and r.guess and not host
        if parsed.malformed:
            return Refusal("malformed", "host")
        if not names:
            return None
        if len(names) > MAX_NAMES:  # no honest URL has many hosts: bound the lookups one value costs
            return Refusal("ambiguous", f"{len(names)} host names")
        answers: list[list[IPAddress] | BaseException]
        if len(names) == 1:  # the usual case: no task to create (a cached answer costs one dict hit)
            try:
                answers = [await self.resolver.resolve(next(iter(names)))]
            except Exception as exc:  # any failure of an injected resolver counts as no answer
                answers = [exc]
        else:
            answers = await asyncio.gather(*(self.resolver.resolve(n) for n in names), return_exceptions=True)
        for (name, guessed), answer in zip(names.items(), answers, strict=True):
            if isinstance(answer, BaseException):
                if self.unresolvable == "refuse" and not guessed:
                    return Refusal("unresolvable", name)
                continue
            for ip in answer:
                why = self.judge_ip(ip)
                if why is not None:
                    return Refusal(why, f"{name} ({ip})")
        return None


def _plain(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        v4 = embedded_ipv4(ip)
        if v4 is not None:
            return v4
    return ip
