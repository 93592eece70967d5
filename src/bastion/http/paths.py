"""Path normalisation: the one canonical path that is routed, checked and forwarded, or a
`BadPath` (400); and the other readings of a path that common servers make (`alternative_readings`)."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import quote, unquote

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
    # (`raw.find(b":$")` and the byte's value, not `b":$" in raw`: CPython's bytes `in` first
    # tries its operand as an integer and formats a TypeError it then drops, ~115 ns a test)
    if _PLAIN_PATH.fullmatch(raw) is not None and raw.find(b":$") < 0 and 0x7E not in raw:  # 0x7E: "~"
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
