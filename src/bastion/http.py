"""The neutral request model: built once per request, seen by every policy.

The path in `Request.path` is the one that is routed, checked by policies and forwarded
upstream. It is computed by `normalise_path` from the raw bytes the client sent.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import orjson

Headers = list[tuple[bytes, bytes]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

PROBLEM_BASE = "https://bastion.dev/problems/"

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")
# Bytes never allowed in a path when percent-encoded: each decodes, on some server, into a
# separator or a character that changes which resource is meant ('/', '\', ';' path parameters
# of Java servers, '?' and '#' for a server that decodes before splitting), or a control
# character (CR/LF in logs and headers, NUL ending C strings).
_FORBIDDEN_ENCODED = {
    0x2F: "an encoded '/'",
    0x5C: "a '\\'",
    0x3B: "an encoded ';'",
    0x3F: "an encoded '?'",
    0x23: "an encoded '#'",
    0x00: "a NUL byte",
    0x25: None,
}  # '%' itself: allowed unless it starts another escape (below)
for _c in (*range(0x01, 0x20), 0x7F):
    _FORBIDDEN_ENCODED[_c] = "an encoded control character"
# A decoded '%' followed by two hex digits: a second decoding (double-decoding frameworks)
# would turn it into another character, e.g. `%252e%252e` -> `%2e%2e` -> `..`.
# IIS also decodes `%uXXXX`.
_DOUBLE_ENCODED = re.compile(rb"%(?:[0-9A-Fa-f]{2}|[uU][0-9A-Fa-f]{4})")
# Characters a lenient server strips from the end of a segment (IIS, Windows file names,
# trimming frameworks): `/admin.` or `/admin%20` would be `/admin` there.
_STRIPPED_TAIL = (b".", b" ", b"\t")
_SHORT_NAME = re.compile(rb"[^~]{1,6}~[0-9]{1,6}(?:\.[^.]{0,3})?")


class BadPath(ValueError):
    """The request target cannot be normalised safely: answered with 400."""


class BodyTooLarge(Exception):
    """The body passed the route's limit (413)."""


class BodyTimeout(Exception):
    """The client stopped sending its body (408)."""


class ClientDisconnected(Exception):
    pass


# Segments of plain characters, none ending in '.' (so neither `.` nor `..`, nor a trailing dot
# that some servers strip): such a path is already canonical.
_PLAIN_PATH = re.compile(rb"(?:/[A-Za-z0-9\-._~!$&'()*+,=:@]*[A-Za-z0-9\-_~!$&'()*+,=:@])+/?|/")


def normalise_path(raw: bytes) -> str:
    """Return the one canonical form of a request path, or refuse it (`BadPath`, answered 400).

    The rule it holds: no server that reads the forwarded path more leniently than the gateway
    (decoding twice, dropping `;params`, stripping trailing dots and spaces, folding Unicode to
    ASCII) can take it for another route than the one the gateway matched. So:

    - percent-escapes of unreserved characters are decoded (`/%61dmin` -> `/admin`), other
      escapes are kept with upper-case hex;
    - refused: encoded `/`, `\\`, `;`, `?`, `#` and control characters; any `\\` or NUL;
      escapes that do not decode to valid UTF-8; a decoded `%` that starts another escape
      (double encoding); a segment ending in `.`, space or tab; a non-ASCII character that
      Unicode normalisation or case mapping turns into ASCII (`ｃ`, the Kelvin sign);
    - `;params` are stripped from every segment (also `..;`, which then resolves as `..`);
    - empty segments are collapsed (`//admin` -> `/admin`), dot segments resolved
      (`/x/../admin` -> `/admin`); climbing above the root is refused.

    A trailing slash is kept (`/admin/.` -> `/admin/`); the router treats `/a` and `/a/`
    alike, so the slash cannot be used to reach another route. Letter case is kept as sent;
    the router matches case-insensitively unless configured otherwise.
    """
    if _PLAIN_PATH.fullmatch(raw) is not None and b":$" not in raw and b"~" not in raw:
        return raw.decode("ascii")  # nothing to decode, collapse or resolve: already canonical
    return _normalise(raw)


def _normalise(raw: bytes) -> str:
    if not raw.startswith(b"/"):
        if raw == b"*" or not raw:
            raise BadPath("the request target must be an absolute path")
        raise BadPath("the request target must start with '/'")
    segments: list[str] = []
    raw_segments = raw.split(b"/")
    last = len(raw_segments) - 1
    trailing = False
    for index, seg in enumerate(raw_segments):
        semi = seg.find(b";")
        if semi >= 0:
            seg = seg[:semi]
        if seg:
            seg = _decode_segment(seg)
        if seg in (b"", b"."):
            trailing = index == last and index > 0
            continue
        if seg == b"..":
            if not segments:
                raise BadPath("the path climbs above the root")
            segments.pop()
            trailing = index == last
            continue
        if seg.endswith(_STRIPPED_TAIL) or seg.endswith((b"%20", b"%09")):
            raise BadPath("a path segment ends with a dot or white space")
        if b":$" in seg or b":%24" in seg:  # NTFS alternate data streams: `/admin::$DATA` is `/admin` on IIS
            raise BadPath("a path segment names an NTFS data stream")
        if b"~" in seg and _SHORT_NAME.fullmatch(seg):  # Windows 8.3: `/ADMINI~1` is `/administrator`
            raise BadPath("a path segment is a Windows short (8.3) file name")
        segments.append(seg.decode("ascii"))
        trailing = False
    path = "/" + "/".join(segments)
    if trailing and segments:
        path += "/"
    return path


def _decode_segment(seg: bytes) -> bytes:
    if b"\\" in seg or b"\x00" in seg:
        raise BadPath("the path contains a '\\' or NUL byte")
    if b"#" in seg or b"?" in seg:
        raise BadPath("the path contains a '#' or '?'")
    if b"%" not in seg:
        if not seg.isascii():
            # Raw non-ASCII bytes: must be UTF-8, forwarded percent-encoded.
            _check_unicode(seg)
            return b"".join(b"%%%02X" % b if b >= 0x80 else bytes((b,)) for b in seg)
        return seg
    out = bytearray()
    decoded = bytearray()  # the fully decoded form, to check UTF-8 and double encoding
    i, n = 0, len(seg)
    while i < n:
        b = seg[i]
        if b == 0x25:  # '%'
            if i + 2 >= n:
                raise BadPath("the path has a truncated percent-escape")
            h1, h2 = seg[i + 1], seg[i + 2]
            if h1 not in _HEX or h2 not in _HEX:
                raise BadPath("the path has an invalid percent-escape")
            value = int(seg[i + 1 : i + 3], 16)
            why = _FORBIDDEN_ENCODED.get(value)
            if why:
                raise BadPath(f"the path contains {why}")
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%%%02X" % value
            decoded.append(value)
            i += 3
        else:
            if b >= 0x80:
                out += b"%%%02X" % b
            else:
                out.append(b)
            decoded.append(b)
            i += 1
    if 0x25 in decoded and _DOUBLE_ENCODED.search(decoded):
        raise BadPath("the path is encoded twice (a '%' escape decodes to another escape)")
    _check_unicode(bytes(decoded))
    return bytes(out)


def _check_unicode(decoded: bytes) -> None:
    """Valid UTF-8, and no character that a normalising or case-folding server would read as
    ASCII (full-width letters, ligatures, the Kelvin sign, dotless i...)."""
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPath("the path is not valid UTF-8") from None
    if text.isascii():
        return
    for ch in text:
        if ch.isascii() or ch in _UNICODE_OK:
            continue
        if unicodedata.category(ch) in _INVISIBLE:
            raise BadPath("the path has an invisible, space or control character")
        folded = unicodedata.normalize("NFKC", ch)
        if (
            any(c.isascii() for c in folded)
            or (len(ch.lower()) == 1 and ch.lower().isascii())
            or (len(ch.upper()) == 1 and ch.upper().isascii())
        ):
            raise BadPath("the path has a character that other servers read as ASCII")
        if len(_UNICODE_OK) < 4096:
            _UNICODE_OK.add(ch)


_UNICODE_OK: set[str] = set()  # characters already checked (bounded)
# Unicode controls (C1, NEL), format characters (zero-width space, bidi marks), spaces and line
# separators: invisible in logs and trimmed or split on by lenient servers.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"})


_COOKIELESS = re.compile(r"/\([A-Za-z]\([^/]*\)\)(?=/|$)")  # ASP.NET's /(S(session))/ segments
_SCRIPT = re.compile(r"^(?:/[^/]+)*?/[^/]+\.(?:php\d?|phtml|cgi|pl|asp|aspx|jsp)(?=/)", re.IGNORECASE)


def alternative_readings(path: str) -> list[str]:
    """Other paths that a common server would take `path` for, beyond what normalisation
    resolves: the gateway routes each and refuses the request when one names another route than
    the path itself (so `/admin.json` cannot be public while `/admin` is protected).

    - IIS/ASP.NET drop cookieless-session segments: `/(S(x))/admin` -> `/admin`;
    - a front controller or CGI script receives the rest as PATH_INFO and routes by it
      (Symfony, Laravel, CodeIgniter): `/index.php/admin` -> `/admin`;
    - format suffixes (Rails `(.:format)`, Spring's suffix matching, Struts `.do`/`.action`):
      `/admin.json` -> `/admin`;
    - accent- and case-folding servers: see `ascii_skeleton`.
    """
    out: list[str] = []
    if "(" in path:
        stripped = _COOKIELESS.sub("", path) or "/"
        if stripped != path:
            out.append(stripped)
    if "." in path:
        m = _SCRIPT.match(path)
        if m:
            out.append(path[m.end() :] or "/")
        last = path.rstrip("/").rsplit("/", 1)[-1]
        dot = last.rfind(".")
        if dot > 0:
            out.append(path.rstrip("/")[: len(path.rstrip("/")) - len(last) + dot] or "/")
    skeleton = ascii_skeleton(path)
    if skeleton is not None and skeleton != path:
        out.append(skeleton)
    return out


def ascii_skeleton(path: str) -> str | None:
    """The path as a server that strips accents and folds case would read it (NFKD, combining
    marks dropped, case folded), re-encoded; None when the path has no non-ASCII character. The
    gateway routes the skeleton too and refuses a path whose skeleton names another route
    (`/%C3%A0dmin` -> `/admin`, `/se%C3%9Fion` -> `/session`), without refusing `/users/José`."""
    if "%" not in path or not _NON_ASCII_ESCAPE.search(path):
        return None
    text = unquote(path)
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)).casefold()
    return quote(folded, safe="/!$&'()*+,;=:@~-._%")


_NON_ASCII_ESCAPE = re.compile(r"%[89A-F][0-9A-F]")


# ---- header hygiene ---------------------------------------------------------------------------
# RFC 9110 5.1/5.5: a field name is a token; a value has no control character but HTAB. Checked
# once for the whole list (names joined by '\t', values joined by '\t'): two regex calls a request.
_TOKEN_LIST = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\t[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def unsafe_header(headers: Headers) -> bytes | None:
    """The name of the first header that may not be written on the wire (a name that is not a
    token, a value with CR, LF, NUL or another control character), or None when all are safe."""
    if not headers:
        return None
    names = b"\t".join(k for k, _ in headers)
    if _TOKEN_LIST.fullmatch(names) is not None and _CONTROL.search(b"\t".join(v for _, v in headers)) is None:
        return None
    for k, v in headers:
        if _TOKEN_LIST.fullmatch(k) is None or _CONTROL.search(v) is not None:
            return k[:64]
    return None


def identity_header_value(text: str) -> bytes:
    """A value the gateway derives from a credential (subject, scopes, tier, key id), made safe
    for a header: a control character (TAB included) is refused (`ValueError`: the credential is
    answered 401); non-ASCII characters, '%' itself and spaces at either end (which parsers trim)
    are percent-encoded as UTF-8, so every value has exactly one encoding and no two values read
    alike (`José` -> `Jos%C3%A9`; a literal `Jos%C3%A9` -> `Jos%25C3%25A9`)."""
    if text.isascii() and "%" not in text and text[:1] != " " and text[-1:] != " ":
        raw = text.encode("ascii")
        if _CONTROL.search(raw) is None and b"\t" not in raw:
            return raw
    lead = len(text) - len(text.lstrip(" "))
    tail = len(text.rstrip(" "))
    out = bytearray()
    for i, ch in enumerate(text):
        o = ord(ch)
        if o < 0x20 or o == 0x7F:
            raise ValueError("a credential claim contains a control character")
        if o < 0x80 and ch != "%" and not (ch == " " and (i < lead or i >= tail)):
            out.append(o)
        else:
            out += "".join("%%%02X" % b for b in ch.encode("utf-8", "surrogatepass")).encode()
    return bytes(out)


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


def parse_cookies(header: bytes | None) -> dict[str, str]:
    """`name=value` pairs of a Cookie header: names and values trimmed, RFC 6265 quotes removed;
    for a name sent twice the first non-empty value wins."""
    out: dict[str, str] = {}
    if not header:
        return out
    for part in header.decode("latin-1").split(";"):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip().strip('"')
        if sep and name and not out.get(name):
            out[name] = value
    return out


def media_type(value: bytes | None) -> bytes:
    """`application/json; charset=utf-8` -> `application/json` (lower case)."""
    return (value or b"").split(b";", 1)[0].strip().lower()


def is_json(value: bytes | None) -> bool:
    mt = media_type(value)
    return mt == b"application/json" or mt.endswith(b"+json")


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


@dataclass(slots=True)
class Request:
    """One client request as every policy sees it."""

    method: str
    path: str
    query: bytes
    headers: Headers  # lower-case names, as received
    client_ip: IPAddress | None
    peer_ip: IPAddress | None
    peer_trusted: bool
    scheme: str
    host: str
    receive: Callable[[], Awaitable[dict[str, Any]]]
    started: float = field(default_factory=time.perf_counter)
    request_id: str = ""
    route_name: str = ""
    path_params: dict[str, str] = field(default_factory=dict)
    body_limit: int | None = None
    body_timeout: float = 30.0
    body: bytes | None = None  # set once read (by a policy that needs it, or the proxy)
    bytes_in: int = 0
    tls: dict[str, Any] | None = None  # the ASGI TLS extension: verified client certificate (mTLS)
    refusal: str = ""  # set when the request line or headers are unacceptable (answered 400)
    _header_map: dict[bytes, bytes] | None = None
    _cookies: dict[str, str] | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, counted against `body_limit`, each piece within
        `body_timeout`. Reading consumes it: use `read_body` when a policy needs it whole."""
        if self.body is not None:
            if self.body:
                yield self.body
            return
        limit = self.body_limit
        while True:
            try:
                async with asyncio.timeout(self.body_timeout):
                    message = await self.receive()
            except TimeoutError:
                raise BodyTimeout() from None
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            chunk = message.get("body", b"")
            self.bytes_in += len(chunk)
            if limit is not None and self.bytes_in > limit:
                raise BodyTooLarge()
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def read_body(self) -> bytes:
        """The whole body (capped by `body_limit`), read once and kept for the proxy."""
        if self.body is None:
            parts = [c async for c in self.chunks()]
            self.body = b"".join(parts)
        return self.body

    def header(self, name: bytes) -> bytes | None:
        """First value of a header, by lower-case name."""
        if self._header_map is None:
            m: dict[bytes, bytes] = {}
            for k, v in self.headers:
                m.setdefault(k, v)
            self._header_map = m
        return self._header_map.get(name)

    def cookies(self) -> dict[str, str]:
        """The Cookie header's pairs (parsed once; see `parse_cookies`)."""
        if self._cookies is None:
            self._cookies = parse_cookies(self.header(b"cookie"))
        return self._cookies

    def header_str(self, name: bytes) -> str | None:
        value = self.header(name)
        return None if value is None else value.decode("latin-1")

    def content_length(self) -> int | None:
        value = self.header(b"content-length")
        if value is None:
            return None
        if not value.isdigit():
            raise ValueError("invalid Content-Length")
        return int(value)

    def has_body(self) -> bool:
        return self.header(b"content-length") not in (None, b"0") or self.header(b"transfer-encoding") is not None

    def carries_credentials(self) -> bool:
        h = self.header
        return (
            h(b"authorization") is not None
            or h(b"cookie") is not None
            or h(b"x-api-key") is not None
            or h(b"proxy-authorization") is not None
        )


@dataclass(slots=True)
class Response:
    """A response produced by the gateway or the head of a proxied one.

    `body` is used for gateway-made responses; proxied bodies stream separately.
    """

    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""
    stopped_by: str = ""  # the policy (or core step) that produced this response
    reason: str = ""  # why, for the audit line

    def get_header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def set_header(self, name: bytes, value: bytes) -> None:
        self.headers = [(k, v) for k, v in self.headers if k != name]
        self.headers.append((name, value))

    def add_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def remove_headers(self, names: frozenset[bytes] | set[bytes]) -> None:
        self.headers = [(k, v) for k, v in self.headers if k not in names]

    def become(self, other: Response) -> bytes:
        """Turn this (proxied) response into `other` (a problem): its status and content
        headers; the caller sends the returned body in place of the original."""
        self.status = other.status
        drop = {b"content-type", b"content-encoding", b"content-language", b"content-length"}
        self.headers = [(k, v) for k, v in self.headers if k not in drop]
        self.headers.extend((k, v) for k, v in other.headers if k != b"content-length")
        return other.body


TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    410: "Gone",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def body_problem(exc: Exception, req: Request, stopped_by: str = "") -> Response | None:
    """The answer for a body that could not be read (413, 408); None when the client left."""
    if isinstance(exc, BodyTooLarge):
        return problem(
            413,
            "body-too-large",
            f"the request body is larger than {req.body_limit} bytes",
            request_id=req.request_id,
            stopped_by=stopped_by,
            extra={"max_bytes": req.body_limit},
        )
    if isinstance(exc, BodyTimeout):
        return problem(
            408,
            "body-timeout",
            "the request body did not arrive in time",
            request_id=req.request_id,
            stopped_by=stopped_by,
        )
    return None


def problem(
    status: int,
    type_: str,
    detail: str,
    *,
    request_id: str = "",
    stopped_by: str = "",
    headers: Headers | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """An RFC 7807 `application/problem+json` response with a stable `type`."""
    doc: dict[str, Any] = {
        "type": PROBLEM_BASE + type_,
        "title": TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if request_id:
        doc["request_id"] = request_id
    if extra:
        doc.update(extra)
    body = orjson.dumps(doc)
    hs: Headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if headers:
        hs.extend(headers)
    return Response(status, hs, body, stopped_by=stopped_by, reason=type_)
