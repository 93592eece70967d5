"""Raw HTTP/1.1 requests of the classes that let requests past real gateways, built from one
generator with two drivers: hypothesis (tests/integration/edge/test_fuzz_gateway.py) and a
seeded `random.Random` (bench/edge_corpus.py), so the fuzzer and the nginx comparison use the
same classes.

The generator only ever sends a Content-Length that is not larger than the bytes it sends, so a
gateway never waits for a body that will not come (the fuzzer stays fast).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .recorder import REWRITE_HEADERS, REWRITE_HEADERS_EXTENDED

WORDS = [b"admin", b"admin", b"account", b"public", b"x", b"static"]  # the refused route twice as often
DOT_SEGMENTS = [
    b".",
    b"..",
    b"%25u002e%25u002e",
    b"%u002e%u002e",
    b"..%C2%85",
    b"..%E2%80%A8",
    b"%2e",
    b"%2E%2e",
    b".%2e",
    b"%2e.",
    b"%252e%252e",
    b"%25%32%65%25%32%65",
    b"..;",
    b"..;x",
    b"..%3b",
    b"%c0%ae%c0%ae",
    b".. ",
    b"..%20",
    b"..%09",
    b"..%00",
    b"...",
    b"%2e%2e%2f",
]
SEPARATORS = [b"/", b"/", b"/", b"//", b"\\", b"%2f", b"%2F", b"%5c", b"%252f", b"%255c", b"/./", b"/;/", b"%c0%af"]
SUFFIXES = [
    b".",
    b"..",
    b" ",
    b"%20",
    b"%09",
    b"\t",
    b"%2e",
    b";",
    b";x=1",
    b";jsessionid=1",
    b"%3b",
    b"%3Bx",
    b"%253b",
    b"..;",
    b".json",
    b"%00",
    b"%2500",
    b"::$DATA",
    b"%0d%0aZinj:%201",
    b"/",
    b"%ff",
    b"\xff",
    b"\xc3\xa9",
    b"%C3%A9",
    b"~",
    b"*",
    b"::$DATA",
    b":$DATA",
    b"::$INDEX_ALLOCATION",
    b"%C2%85",
    b"%E2%80%A8",
    b"%E2%80%8B",
    b"%C2%A0",
    b"%E3%80%80",
    b"%25u002e",
    b"~1",
]
REWRITE_NAMES = sorted(n.decode() for n in REWRITE_HEADERS)
EXTENDED_NAMES = sorted(n.decode() for n in REWRITE_HEADERS_EXTENDED)


class Chooser:
    """What the generator needs from a source of randomness."""

    def choice(self, seq: Sequence[Any]) -> Any: ...
    def integer(self, lo: int, hi: int) -> int: ...
    def boolean(self, p: float = 0.5) -> bool: ...


class RandomChooser(Chooser):
    def __init__(self, rnd: random.Random) -> None:
        self.rnd = rnd

    def choice(self, seq):
        return self.rnd.choice(list(seq))

    def integer(self, lo, hi):
        return self.rnd.randint(lo, hi)

    def boolean(self, p=0.5):
        return self.rnd.random() < p


class HypothesisChooser(Chooser):
    def __init__(self, draw: Callable[[Any], Any]) -> None:
        from hypothesis import strategies as st

        self.st, self.draw = st, draw

    def choice(self, seq):
        return self.draw(self.st.sampled_from(list(seq)))

    def integer(self, lo, hi):
        return self.draw(self.st.integers(lo, hi))

    def boolean(self, p=0.5):
        # hypothesis shrinks booleans towards False: "nothing odd" is the simple example
        return self.draw(self.st.integers(0, 999)) < int(p * 1000)


@dataclass
class RawRequest:
    method: bytes
    target: bytes
    version: bytes = b"HTTP/1.1"
    headers: list[bytes] = field(default_factory=list)  # whole header lines, without the line end
    body: bytes = b""
    eol: bytes = b"\r\n"
    credentials: list[str] = field(default_factory=list)  # "valid-jwt", "valid-key", "junk", ...
    classes: set[str] = field(default_factory=set)

    def render(self) -> bytes:
        e = self.eol
        return (
            self.method
            + b" "
            + self.target
            + b" "
            + self.version
            + e
            + b"".join(h + e for h in self.headers)
            + e
            + self.body
        )

    @property
    def credential_headers(self) -> int:
        return len(self.credentials)

    def __repr__(self) -> str:  # what hypothesis prints for a failing example: copy-pasteable bytes
        return f"RawRequest({self.render()!r})"


# --- pieces --------------------------------------------------------------------------------------


def word(c: Chooser) -> bytes:
    w = c.choice(WORDS)
    if c.boolean(0.3):  # letter case
        w = bytes(ch ^ 0x20 if c.boolean() and 0x61 <= ch <= 0x7A else ch for ch in w)
        if w == w.lower():
            w = w[:1].upper() + w[1:]
    if c.boolean(0.3):  # percent-encode one letter: once, twice, digit by digit, overlong, lower-case hex
        i = c.integer(0, len(w) - 1)
        ch = w[i]
        enc = c.choice(
            [
                b"%%%02X" % ch,
                b"%%%02x" % ch,
                b"%%25%02X" % ch,
                b"%%25%%%02X%%%02X" % (0x30 + (ch >> 4), ord(b"%X" % (ch & 15))),
                b"%%%02X%%%02X" % (0xC0 | ch >> 6, 0x80 | ch & 0x3F),
                b"%%u%04X" % ch,
                b"%%25u%04X" % ch,
                b"%%25u%04x" % ch,
            ]
        )
        w = w[:i] + enc + w[i + 1 :]
    if c.boolean(0.2):  # Unicode look-alikes, raw or encoded (fullwidth a, dotless i, Kelvin sign...)
        alike = c.choice(
            [
                "\uff41",
                "\u0131",
                "\u0430",
                "\u212a",
                "\u00e0",
                "\u00e1",
                "a\u0301",
                "\u0101",
                "\u00aa",
                "\u1d43",
                "\u24d0",
            ]
        ).encode()
        if c.boolean():
            alike = b"".join(b"%%%02X" % b for b in alike)
        if c.boolean(0.3) and b"i" in w:  # dotted capital I / i with accents
            w = w.replace(b"i", c.choice(["\u0130", "\u00ed", "\u00ef", "i\u200b"]).encode(), 1)
        else:
            w = w.replace(b"a", alike, 1) if b"a" in w else w + alike
    if c.boolean(0.3):
        w += c.choice(SUFFIXES)
    return w


def path(c: Chooser) -> bytes:
    parts: list[bytes] = []
    if c.boolean(0.5):
        parts.append(c.choice([b"public", b"x", b"static/css"]))
    for _ in range(c.integer(1, 4)):
        parts.append(c.choice(DOT_SEGMENTS) if c.boolean(0.35) else word(c))
    out = b""
    for p in parts:
        out += (c.choice(SEPARATORS) if out and c.boolean(0.3) else b"/") + p
    if c.boolean(0.15):
        out += c.choice([b"/", b"/.", b"/..", b"//", b"%2f", b"\\"])
    if c.boolean(0.1):
        out = c.choice([b"http://127.0.0.1", b"//", b"", b"HTTP://x"]) + out
    if c.boolean(0.15):
        out += c.choice(
            [
                b"?q=1",
                b"?/admin",
                b"?a=%0d%0a",
                b"#x",
                b"?x=..%2f..%2fadmin",
                b"?a=%zz",
                b"?\xc3\xa9=\xff",
                b"?a=1&a=2&api_key=x",
            ]
        )
    return out


def token_like(c: Chooser, valid_jwt: str, api_key: str) -> tuple[bytes, str]:
    kind = c.choice(["valid-jwt", "valid-key", "junk", "junk-jwt", "basic"])
    return {
        "valid-jwt": valid_jwt.encode(),
        "valid-key": api_key.encode(),
        "junk": b"x",
        "junk-jwt": b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
        "basic": b"YWRtaW46YWRtaW4=",
    }[kind], kind


def header_line(c: Chooser, req: RawRequest, valid_jwt: str, api_key: str) -> bytes:
    kind = c.choice(
        [
            "rewrite",
            "override",
            "authorization",
            "apikey",
            "fold",
            "control",
            "badname",
            "spoof",
            "connection",
            "host",
            "content",
            "edge-owned",
            "plain",
        ]
    )
    req.classes.add(kind)
    if kind == "rewrite":
        name = c.choice([n for n in REWRITE_NAMES if "url" in n])
        return _case(c, name).encode() + b": " + c.choice([b"/admin/x", b"/Admin", b"/account/x", b"/admin%2e"])
    if kind == "override":
        name = c.choice([n for n in REWRITE_NAMES if "method" in n])
        return _case(c, name).encode() + b": " + c.choice([b"DELETE", b"PUT", b"GET", b"delete", b"TRACE"])
    if kind == "edge-owned":
        name = c.choice(EXTENDED_NAMES)
        value = (
            b"127.0.0.1"
            if "ip" in name or "addr" in name
            else b"middleware:middleware:middleware:middleware:middleware"
            if "middleware" in name
            else b"evil.example"
            if "host" in name or "server" in name
            else b"/admin/x"
        )
        return _case(c, name).encode() + b": " + value
    if kind == "authorization":
        value, what = token_like(c, valid_jwt, api_key)
        req.credentials.append(what)
        scheme = b"Basic " if what == "basic" else c.choice([b"Bearer ", b"bearer ", b"BEARER  "])
        return _case(c, "authorization").encode() + b": " + scheme + value
    if kind == "apikey":
        value, what = token_like(c, valid_jwt, api_key)
        req.credentials.append(what)
        return _case(c, "x-api-key").encode() + b": " + value
    if kind == "fold":  # obs-fold: a continuation line; sometimes the folded part is a credential
        if c.boolean(0.3):
            req.credentials.append("folded")
            return b"Authorization: Bearer" + req.eol + b" " + valid_jwt.encode()
        return (
            b"X-Folded: a" + req.eol + c.choice([b" b", b"\tb", b" Zinj: 1", b"\t" + b"X-Api-Key: " + api_key.encode()])
        )
    if kind == "control":
        ch = c.choice([b"\x00", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x7f", b"\r", b"\n", b"\t", b"\r\x00"])
        tail = c.choice([b"b", b"Zinj: 1", b"", b"\xc3\xa9"])
        return c.choice([b"X-Ctl", b"User-Agent", b"X-Forwarded-For", b"Referer"]) + b": a" + ch + tail
    if kind == "badname":
        return c.choice(
            [
                b"X-Sp ace: v",
                b"X-Colon : v",
                b"X-Ctl\x01: v",
                b"X-Del\x7f: v",
                b"\x00X: v",
                b": v",
                b"X-\xc3\xa9: v",
                b"X-Tab\t: v",
                b" X-Lead: v",
            ]
        )
    if kind == "spoof":
        return c.choice(
            [
                b"X-Bastion-Subject: spoofed",
                b"x-bastion-tier: spoofed",
                b"X-Bastion-Scopes: spoofed",
                b"X-Bastion-Key-Id: spoofed",
                b"X-Forwarded-For: 10.0.0.1",
                b"X_Bastion_Subject: spoofed",
                b"x_bastion_tier: spoofed",
            ]
        )
    if kind == "connection":  # hop-by-hop abuse: ask the proxy to strip a header it added
        return b"Connection: " + c.choice(
            [b"close", b"keep-alive, X-Bastion-Subject", b"X-Forwarded-For", b"Authorization", b"upgrade"]
        )
    if kind == "host":
        return b"Host: " + c.choice(
            [
                b"",
                b"127.0.0.1:99999",
                b"[::1",
                b"a b",
                b"evil.example",
                b"127.0.0.1:0",
                b"\xc3\xa9.example",
                b"x" * 300,
                b"127.0.0.1, evil.example",
                b"@evil",
                b'x";for=10.0.0.1;proto=https;by="',
                b"x;proto=https",
                b"127.0.0.1:80@evil.example",
                b'127.0.0.1"',
                b"127.0.0.1\tx",
            ]
        )
    if kind == "content":
        return c.choice(
            [
                b"Content-Encoding: gzip",
                b"Content-Encoding: br, gzip",
                b"Content-Encoding: zstd",
                b"Content-Type: application/json",
                b"Content-Type: application/x-www-form-urlencoded",
                b"Expect: 100-continue",
                b"Content-Type: multipart/form-data; boundary=",
                b"Upgrade: h2c",
                b"X-Request-Id: " + b"\xc3\xa9" * 3,
                b"X-Request-Id: " + b"r" * 500,
                b"Range: bytes=0-0,1-1",
            ]
        )
    return c.choice([b"Accept: */*", b"User-Agent: fuzz", b"X-Request-Id: r1", b"Cookie: a=b"])


def _case(c: Chooser, name: str) -> str:
    if c.boolean(0.15):  # the WSGI/CGI spelling: X_Original_URL is HTTP_X_ORIGINAL_URL there too
        name = name.replace("-", "_")
    pick = c.choice(["canon", "lower", "upper"])
    if pick == "lower":
        return name
    if pick == "upper":
        return name.upper()
    return "-".join(p.capitalize() for p in name.split("-"))


def framing(c: Chooser, req: RawRequest) -> None:
    kind = c.choice(["none", "none", "cl", "chunked", "cl+te", "te-variant", "cl-variant", "smuggle", "bad-chunk"])
    req.classes.add("framing:" + kind)
    chunked = b"3\r\nabc\r\n0\r\n\r\n"
    if kind == "none":
        return
    if kind == "cl":
        req.body = b"abc"
        req.headers.append(b"Content-Length: 3")
    elif kind == "chunked":
        req.body = chunked
        req.headers.append(b"Transfer-Encoding: chunked")
    elif kind == "cl+te":
        req.body = chunked
        req.headers += [b"Content-Length: %d" % len(chunked), b"Transfer-Encoding: chunked"]
    elif kind == "te-variant":
        req.body = chunked
        te = c.choice(
            [
                b"Chunked",
                b"chunked ",
                b" chunked",
                b"chunked, chunked",
                b"identity, chunked",
                b"chunked, identity",
                b"xchunked",
                b"chunked\x0b",
                b"\tchunked",
                b"chunk",
                b"gzip, chunked",
            ]
        )
        req.headers.append(b"Transfer-Encoding: " + te)
        if c.boolean():
            req.headers.append(b"Content-Length: %d" % c.integer(0, len(chunked)))
        if c.boolean(0.3):
            req.headers.append(b"Transfer-Encoding: chunked")
    elif kind == "cl-variant":
        req.body = b"abcdef"
        req.headers += c.choice(
            [
                [b"Content-Length: 3", b"Content-Length: 6"],
                [b"Content-Length: 6, 6"],
                [b"Content-Length: 6", b"Content-Length: 6"],
                [b"Content-Length: +6"],
                [b"Content-Length: 0x6"],
                [b"Content-Length: -1"],
                [b"Content-Length:  6 "],
                [b"Content-Length: 99999999999999999999999"],
                [b"Content-Length: 6\x00"],
            ]
        )
    elif kind == "smuggle":
        inner = (
            b"GET "
            + c.choice([b"/admin/smuggled", b"/public/smuggled", b"/account/smuggled"])
            + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        )
        req.body = b"0\r\n\r\n" + inner
        req.headers += c.choice(
            [
                [b"Transfer-Encoding: chunked", b"Content-Length: 4"],
                [b"Content-Length: 4", b"Transfer-Encoding: chunked"],
                [b"Content-Length: %d" % len(req.body), b"Transfer-Encoding: chunked"],
                [b"Transfer-Encoding: chunked, identity", b"Content-Length: 4"],
                [b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity"],
                [b"Transfer-Encoding: identity", b"Content-Length: 4"],
            ]
        )
        # only framings that conflict: a server must refuse them or close the connection after
        # answering, so a second upstream request is a desync (plain pipelining is not generated)
    elif kind == "bad-chunk":
        req.body = c.choice(
            [
                b"3;ext=1\r\nabc\r\n0\r\n\r\n",
                b"0x3\r\nabc\r\n0\r\n\r\n",
                b"-3\r\nabc\r\n0\r\n\r\n",
                b"3\nabc\n0\n\n",
                b"3\r\nabcdef\r\n0\r\n\r\n",
                b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
                b"3\r\nabc\r\n0\r\nX-Trailer: \x00\r\n\r\n",
            ]
        )
        req.headers.append(b"Transfer-Encoding: chunked")


def raw_request(c: Chooser, valid_jwt: str, api_key: str) -> RawRequest:
    method = c.choice(
        [b"GET", b"GET", b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"get", b"GeT", b"PATCH", b"TRACE"]
    )
    req = RawRequest(method, path(c))
    if c.boolean(0.05):
        req.version = c.choice([b"HTTP/1.0", b"HTTP/1.10", b"http/1.1", b"HTTP/1.1 "])
    if c.boolean(0.05):
        req.eol = b"\n"
        req.classes.add("bare-lf")
    host = b"Host: 127.0.0.1"
    req.headers.append(host)
    if c.boolean(0.05):
        req.headers.append(c.choice([b"Host: evil.example", b"host: 127.0.0.1"]))
        req.classes.add("dup-host")
    for _ in range(c.integer(0, 4)):
        req.headers.append(header_line(c, req, valid_jwt, api_key))
    if c.boolean(0.4):
        framing(c, req)
    if c.boolean(0.2):  # header order matters to "first one wins" vs "last one wins" parsers
        first, rest = req.headers[0], req.headers[1:]
        req.headers = rest[::-1] + [first]
    return req


def corpus(seed: int, n: int, valid_jwt: str, api_key: str) -> list[RawRequest]:
    """A fixed corpus: the same seed gives the same requests."""
    c = RandomChooser(random.Random(seed))
    return [raw_request(c, valid_jwt, api_key) for _ in range(n)]


def _get(target: bytes, *headers: bytes, method: bytes = b"GET", body: bytes = b"") -> bytes:
    return (
        method
        + b" "
        + target
        + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + b"".join(h + b"\r\n" for h in headers)
        + b"\r\n"
        + body
    )


def named_cases(valid_jwt: str, api_key: str) -> dict[str, tuple[bytes, list[str]]]:
    """Named regression cases, one class each: the issue's "what gets through today" list and
    every failing example the fuzzer found (minimised by hand). id -> (raw request, credentials)."""
    AUTH = b"Authorization: Bearer " + valid_jwt.encode()
    KEY = b"X-API-Key: " + api_key.encode()
    return {
        # path ambiguity (issue list)
        "case-Admin": (_get(b"/Admin"), []),
        "case-encoded-%41dmin": (_get(b"/%41dmin"), []),
        "case-ADMIN-subpath": (_get(b"/ADMIN/users"), []),
        "encoded-semicolon": (_get(b"/admin%3bx"), []),
        "double-encoded-dotdot": (_get(b"/public/%252e%252e/admin"), []),
        "double-encoded-digits": (_get(b"/public/%25%32%65%25%32%65/admin"), []),
        "trailing-dot": (_get(b"/admin."), []),
        "trailing-space-encoded": (_get(b"/admin%20"), []),
        "trailing-tab-encoded": (_get(b"/admin%09"), []),
        "dotdot-semicolon-glued": (_get(b"/admin..;/"), []),
        "dotdot-semicolon-tomcat": (_get(b"/public/..;/admin"), []),
        "double-encoded-slash": (_get(b"/public%252f..%252fadmin"), []),
        "double-encoded-semicolon": (_get(b"/admin%253bx"), []),
        "case-account-no-credential": (_get(b"/ACCOUNT/x"), []),
        "overlong-utf8-dot": (_get(b"/public/%c0%ae%c0%ae/admin"), []),
        # found by the fuzzer (minimised)
        "dotdot-encoded-space": (_get(b"/public/..%20/admin"), []),
        "dotdot-encoded-tab": (_get(b"/public/..%09/admin"), []),
        "dotdot-encoded-semicolon": (_get(b"/..%3b/a%64min/"), []),
        "trailing-dotdot-after-semicolon-backslash": (_get(b"/%61dmin..;\\"), []),
        "double-encoded-letter": (_get(b"/adm%2569n/x"), []),
        "case-public-via-default": (_get(b"/PUbliC"), []),
        "case-account-collapsed-slashes": (_get(b"///aCCouN%74/x"), []),
        # beyond the list of lenient readings (invariant "lenient-route-differs-extended"):
        # found after the first fixes, by the fuzzer and by probing them
        "ext-iis-u-double-encoded": (_get(b"/a%25u0064min"), []),
        "ext-iis-u-dotdot": (_get(b"/public/%25u002e%25u002e/admin"), []),
        "ext-accent-folding": (_get(b"/%C3%A0dmin"), []),
        "ext-dotted-capital-i": (_get(b"/adm%C4%B0n"), []),
        "ext-trailing-line-separator": (_get(b"/admin%E2%80%A8"), []),
        "ext-trailing-nel-c1-control": (_get(b"/admin%C2%85"), []),
        "ext-zero-width-space": (_get(b"/admin%E2%80%8B"), []),
        "ext-dotdot-line-separator": (_get(b"/public/..%E2%80%A8/admin/x"), []),
        "ext-ntfs-data-stream": (_get(b"/admin::$DATA"), []),
        "ext-ntfs-index-allocation": (_get(b"/admin::$INDEX_ALLOCATION/x"), []),
        # rewrite / override headers (issue list)
        "x-original-url": (_get(b"/public/x", b"X-Original-URL: /admin/x"), []),
        "x-rewrite-url": (_get(b"/public/x", b"X-Rewrite-URL: /admin/x"), []),
        "x-override-url": (_get(b"/public/x", b"X-Override-URL: /admin/x"), []),
        "x-http-method-override": (_get(b"/public/x", b"X-HTTP-Method-Override: DELETE"), []),
        "x-http-method": (_get(b"/public/x", b"X-HTTP-Method: DELETE"), []),
        "x-method-override": (_get(b"/public/x", b"X-Method-Override: DELETE"), []),
        # duplicate credentials (issue list)
        "two-authorization-valid-first": (
            _get(b"/account/x", AUTH, b"Authorization: Bearer unsigned.x.y"),
            ["valid-jwt", "junk"],
        ),
        "jwt-and-api-key": (_get(b"/account/x", AUTH, KEY), ["valid-jwt", "valid-key"]),
        "two-api-keys": (_get(b"/account/x", KEY, b"X-API-Key: bk_edge_other"), ["valid-key", "junk"]),
        "two-authorization-public-route": (
            _get(b"/public/x", AUTH, b"Authorization: Bearer other"),
            ["valid-jwt", "junk"],
        ),
        # control characters and framing
        "bare-cr-in-value": (_get(b"/public/x", b"X-Ctl: a\rZinj: 1"), []),
        "nul-in-value": (_get(b"/public/x", b"X-Ctl: a\x00b"), []),
        "vt-in-value": (_get(b"/public/x", b"X-Ctl: a\x0bb"), []),
        "del-in-value": (_get(b"/public/x", b"X-Ctl: a\x7fb"), []),
        "obs-fold": (_get(b"/public/x", b"X-Folded: a\r\n Zinj: 1"), []),
        "te-chunked-identity": (
            _get(
                b"/public/x",
                b"Transfer-Encoding: chunked, identity",
                b"Content-Length: 4",
                method=b"POST",
                body=b"0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            ),
            [],
        ),
        "te-cl-smuggle": (
            _get(
                b"/public/x",
                b"Transfer-Encoding: chunked",
                b"Content-Length: 4",
                method=b"POST",
                body=b"0\r\n\r\nGET /public/smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            ),
            [],
        ),
        "spoofed-principal-public": (_get(b"/public/x", b"X-Bastion-Subject: spoofed"), []),
        "spoofed-principal-underscore": (_get(b"/account/x", AUTH, b"X_Bastion_Subject: spoofed"), ["valid-jwt"]),
        "ext-x-envoy-original-path": (_get(b"/public/x", b"X-Envoy-Original-Path: /admin/x"), []),
        "ext-x-ms-original-url": (_get(b"/public/x", b"X-MS-Original-URL: /admin/x"), []),
        "ext-x-original-path": (_get(b"/public/x", b"X-Original-Path: /admin/x"), []),
        "ext-x-rewrite-path": (_get(b"/public/x", b"X-Rewrite-Path: /admin/x"), []),
        "ext-nextjs-middleware-subrequest": (
            _get(b"/public/x", b"X-Middleware-Subrequest: middleware:middleware:middleware:middleware:middleware"),
            [],
        ),
        "ext-nextjs-invoke-path": (_get(b"/public/x", b"X-Invoke-Path: /admin/x"), []),
        "ext-x-custom-ip-authorization": (_get(b"/public/x", b"X-Custom-IP-Authorization: 127.0.0.1"), []),
        "ext-true-client-ip": (_get(b"/public/x", b"True-Client-IP: 127.0.0.1"), []),
        "ext-x-client-ip": (_get(b"/public/x", b"X-Client-IP: 127.0.0.1"), []),
        "ext-x-host": (_get(b"/public/x", b"X-Host: evil.example"), []),
        "ext-x-original-host": (_get(b"/public/x", b"X-Original-Host: evil.example"), []),
        "host-forwarded-parameter-injection": (
            b'GET /public/x HTTP/1.1\r\nHost: x";for=10.0.0.1;proto=https;by="\r\n\r\n',
            [],
        ),
        "host-x-forwarded-host-list": (b"GET /public/x HTTP/1.1\r\nHost: 127.0.0.1, evil.example\r\n\r\n", []),
        "host-userinfo": (b"GET /public/x HTTP/1.1\r\nHost: 127.0.0.1:80@evil.example\r\n\r\n", []),
        "host-with-space": (b"GET /public/x HTTP/1.1\r\nHost: a b\r\n\r\n", []),
        "host-unclosed-ipv6": (b"GET /public/x HTTP/1.1\r\nHost: [::1\r\n\r\n", []),
        "host-non-ascii": (b"GET /public/x HTTP/1.1\r\nHost: \xc3\xa9\xff\r\n\r\n", []),
        "x-original-url-underscore": (_get(b"/public/x", b"X_Original_URL: /admin/x"), []),
        "method-override-underscore": (_get(b"/public/x", b"X_HTTP_Method_Override: DELETE"), []),
        "api-key-dash-and-underscore": (_get(b"/account/x", KEY, b"X_API_Key: bk_edge_other"), ["valid-key", "junk"]),
    }
