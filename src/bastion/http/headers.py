"""Header values: hygiene before anything is written upstream, identity values, cookies, media types."""

from __future__ import annotations

import re

Headers = list[tuple[bytes, bytes]]

# Headers that ask a framework to treat a POST as another method (edge.method_override).
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")


def php_field_name(name: str) -> str:
    """A query or form field's name as PHP registers it (php_register_variable_ex in
    main/php_variables.c): cut at a NUL, leading spaces dropped, spaces and dots before any '['
    turned into '_'. So `.method` and `_method\\x00x` are `_method` to Laravel and Symfony."""
    name = name.split("\x00", 1)[0].lstrip(" ")
    head, bracket, rest = name.partition("[")
    return head.replace(" ", "_").replace(".", "_") + bracket + rest


_RACK2_KEY = re.compile(r"[\[\]]*([^\[\]]+)\]*")


def rack2_field_name(name: str) -> str | None:
    """A form field's name as Rack 2 (Rails up to 7.0) reads it (`QueryParser#normalize_params`):
    brackets before the key and closing ones after it are dropped, so `[_method]` and `_method]`
    are `_method`; None when the name nests (`a[b]`, `a[]`: not a plain string field)."""
    m = _RACK2_KEY.match(name)
    return m.group(1) if m and m.end() == len(name) else None


# ---- header hygiene ---------------------------------------------------------------------------
# RFC 9110 5.1/5.5: a field name is a token; a value has no control character but HTAB. The
# fast check is `bytes.translate` deleting the allowed bytes from all names (or all values) joined:
# anything left is a byte that may not be there. A C loop over the bytes, cheaper than a regex
# per header (or even one regex over them all); the slow path finds which header it was.
_TOKEN_LIST = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+(?:\t[!#$%&'*+\-.^_`|~0-9A-Za-z]+)*")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_VALUE_BYTES = bytes(b for b in range(256) if b == 0x09 or (0x20 <= b and b != 0x7F))


def safe_fields(names: tuple[bytes, ...] | list[bytes], values: tuple[bytes, ...] | list[bytes]) -> bool:
    """Every name a non-empty token and no value with a control character (HTAB aside)."""
    return (
        all(names)
        and not b"".join(names).translate(None, _TOKEN_BYTES)
        and not b"".join(values).translate(None, _VALUE_BYTES)
    )


def unsafe_header(headers: Headers) -> bytes | None:
    """The name of the first header that may not be written on the wire (a name that is not a
    token, a value with CR, LF, NUL or another control character), or None when all are safe."""
    if not headers:
        return None
    names, values = zip(*headers, strict=True)
    if safe_fields(names, values):
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
        if _CONTROL.search(raw) is None and 0x09 not in raw:  # (HTAB by value: see paths.normalise_path)
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
