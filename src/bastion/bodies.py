"""Request bodies as the policies that inspect them must see them: one Content-Type, one content
coding undone, one charset family, and XML without a DTD.

Every policy that reads a request body (the WAF, OpenAPI validation, the GraphQL guard) goes
through this module, so none of them can be made to look at a different body than another
policy or the upstream:

- `content_type(req)` parses the one `Content-Type` header strictly enough to notice ambiguity:
  two `Content-Type` lines, two media types in one value, or a parameter given twice
  (`boundary=a; boundary=b`) are refused (400 `ambiguous-content-type`), because the gateway and
  the upstream could each pick a different one. A charset that is not ASCII-compatible
  (`utf-16`, `utf-32`, `utf-7`, `ebcdic`, ...) is refused (415): the rules match bytes, and a
  payload written in UTF-16 is not the same bytes as the one they look for.
- `read_body(req, ctx, limit=)` reads the body and undoes its `Content-Encoding` with the
  project's one bounded decoder (`bastion.content_coding`): unsupported codings are 415,
  corrupt ones 400, a decoded body over the limit 413 (a decompression bomb stops at the limit).
  The decoded body REPLACES the request's body and `Content-Encoding` is dropped upstream, so the
  upstream receives exactly the bytes that were inspected, never its own decoder's reading of
  them.
- `parse_xml(body, max_depth=)` is the gateway's one XML parser: defusedxml (expat underneath)
  with any DTD refused (so no external entity and no entity expansion, billion laughs included),
  nesting deeper than `max_depth` refused, and XML that is not well formed refused; it returns
  every string of the document (names, attribute values, text, CDATA, comments) for inspection.
- `sniff(body)` tells JSON, XML and urlencoded forms apart for a body sent without a type.

Hand-written parts: the Content-Type parser (the stdlib and werkzeug parsers both silently keep
one of two duplicated parameters, which is exactly what must be noticed here) and the sniffer.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from bastion.content_coding import CodingError, decode_body, parse_codings
from bastion.http import BodyTimeout, Request, Response, problem

Kind = Literal["json", "form", "multipart", "xml", "graphql", "other"]

# ASCII-compatible charsets: an attack string written in ASCII is the same bytes in each of them
# (the list CRS allows by default, rule 900270, plus US-ASCII).
TEXT_CHARSETS = frozenset(
    {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin1", "iso-8859-15", "windows-1252", "cp1252"}
)
DEFAULT_LIMIT = 1024 * 1024  # a decoded body, when neither the route nor the caller set a limit
_DECODED = "bodies.decoded"

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_MEDIA = re.compile(rf"[ \t]*({_TOKEN})/({_TOKEN})[ \t]*")
_PARAM = re.compile(rf"[ \t]*;[ \t]*(?:({_TOKEN})[ \t]*=[ \t]*(?:\"((?:[^\"\\\r\n]|\\[^\r\n])*)\"|([^;\"\s]*))[ \t]*)?")
_BOUNDARY_CHARS = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_FORM = re.compile(rb"[^=&\s{}<>\[\]\"]+=[^&\s]*(?:&[^=&\s]+=[^&\s]*)*&?")


class BodyRefused(Exception):
    """A body the gateway will not pass uninspected: status, problem type and detail."""

    def __init__(self, status: int, type_: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.type, self.detail = status, type_, detail

    def response(self, req: Request, stopped_by: str = "") -> Response:
        return problem(self.status, self.type, self.detail, request_id=req.request_id, stopped_by=stopped_by)


@dataclass(frozen=True, slots=True)
class ContentType:
    media: str  # "type/subtype", lower case
    params: dict[str, str] = field(default_factory=dict)  # names lower case, values unquoted

    @property
    def kind(self) -> Kind:
        return kind_of(self.media)

    @property
    def charset(self) -> str | None:
        c = self.params.get("charset")
        return c.strip().lower() if c is not None else None


def kind_of(media: str) -> Kind:
    """The body processor a media type calls for."""
    if media == "application/json" or media.endswith("+json"):
        return "json"
    if media == "application/x-www-form-urlencoded":
        return "form"
    if media.startswith("multipart/"):
        return "multipart"
    if media in ("application/xml", "text/xml") or media.endswith("+xml"):
        return "xml"
    if media == "application/graphql":
        return "graphql"
    return "other"


def parse_content_type(value: str) -> ContentType:
    """One Content-Type value (RFC 9110 8.3.1); `BodyRefused` when it is not exactly one media
    type with parameters each given once."""
    m = _MEDIA.match(value)
    if m is None:
        raise BodyRefused(400, "ambiguous-content-type", "the Content-Type header is not a media type")
    params: dict[str, str] = {}
    pos = m.end()
    while pos < len(value):
        p = _PARAM.match(value, pos)
        if p is None or p.end() == pos:
            raise BodyRefused(
                400,
                "ambiguous-content-type",
                "the Content-Type header has something other than parameters after its media type",
            )
        pos = p.end()
        name = p.group(1)
        if name is None:
            continue  # an empty parameter (`application/json;`), as some clients send
        name = name.lower()
        if name in params:
            raise BodyRefused(400, "ambiguous-content-type", f"the Content-Type parameter {name!r} is given twice")
        quoted = p.group(2)
        params[name] = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else (p.group(3) or "")
    return ContentType(f"{m.group(1)}/{m.group(2)}".lower(), params)


def content_type(req: Request) -> ContentType | None:
    """The request's one Content-Type (None without one), checked for ambiguity and charset."""
    values = [v for k, v in req.headers if k == b"content-type"]
    if not values:
        return None
    if len(values) > 1:
        raise BodyRefused(400, "ambiguous-content-type", "the request has more than one Content-Type header")
    ct = parse_content_type(values[0].decode("latin-1"))
    charset = ct.charset
    if charset is not None and charset not in TEXT_CHARSETS:  # UTF-7 turns "+ACc-" into "'"
        raise BodyRefused(
            415,
            "unsupported-charset",
            f"bodies are inspected as UTF-8 or an ASCII-compatible charset, not {charset[:40]!r}",
        )
    if ct.kind == "multipart":
        boundary = ct.params.get("boundary")
        if not boundary or _BOUNDARY_CHARS.fullmatch(boundary) is None:
            raise BodyRefused(
                400,
                "ambiguous-content-type",
                "a multipart body needs one boundary of 1-70 allowed characters (RFC 2046)",
            )
        if any(b != boundary for b in _lenient_boundaries(values[0].decode("latin-1"))):
            raise BodyRefused(
                400,
                "ambiguous-content-type",
                "the multipart boundary reads differently to other parsers (another parameter "
                "names 'boundary', or the boundary has a ',')",
            )
    return ct


# Rack's Content-Type match (rack/multipart.rb `MULTIPART`): greedy, so the LAST "boundary="
_RACK_BOUNDARY = re.compile(r'multipart/.*boundary="?([^";,]+)"?', re.IGNORECASE | re.DOTALL)


def _lenient_boundaries(raw: str) -> list[str]:
    """The boundaries that servers reading the header with a substring search take: Rack (the
    last `boundary=` anywhere, `xboundary=` and a quoted `x="boundary=..."` included) and PHP
    (main/rfc1867.c: the first "boundary" anywhere, then its '=', cut at ',' or ';'). A body whose
    parts are delimited by one of these and not by the real boundary would be read as other
    fields by the upstream than by the gateway."""
    out = []
    m = _RACK_BOUNDARY.match(raw)
    if m:
        out.append(m.group(1).strip())
    i = raw.find("boundary")
    if i < 0:
        i = raw.lower().find("boundary")
    j = raw.find("=", i) if i >= 0 else -1
    if j >= 0:
        v = raw[j + 1 :]
        v = v[1:].split('"', 1)[0] if v.startswith('"') else re.split(r"[,;]", v, maxsplit=1)[0]
        out.append(v.strip())
    return out


async def read_body(req: Request, ctx, *, limit: int | None = None) -> bytes:
    """The request body with its content codings undone, read once per request.

    After decoding, `req.body` holds the decoded bytes and `Content-Encoding` is dropped from
    what the upstream receives. Raises `BodyRefused` (415/400/413) for a coding that cannot be
    undone safely; `BodyTooLarge`/`BodyTimeout`/`ClientDisconnected` from reading pass through.
    """
    if ctx.values.get(_DECODED):
        return req.body or b""
    raw = await req.read_body()
    try:
        codings = parse_codings(v for k, v in req.headers if k == b"content-encoding")
    except CodingError as exc:
        raise BodyRefused(415, "unsupported-content-encoding", exc.detail) from None
    if codings:
        bounds = [x for x in (limit, req.body_limit) if x is not None]
        max_output = min(bounds) if bounds else DEFAULT_LIMIT
        try:
            decoded = decode_body(raw, codings, max_output=max_output)
        except CodingError as exc:
            if exc.kind == "too-large":
                raise BodyRefused(413, "body-too-large", exc.detail) from None
            if exc.kind == "unsupported":
                raise BodyRefused(415, "unsupported-content-encoding", exc.detail) from None
            raise BodyRefused(400, "malformed-body", exc.detail) from None
        req.body = decoded
        ctx.drop_request_headers.add(b"content-encoding")
        ctx.log_fields["body_decoded"] = ",".join(codings)
    ctx.values[_DECODED] = True
    return req.body or b""


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in pairs:
        if k in out:
            raise BodyRefused(400, "ambiguous-body", f"a JSON object has the key {k[:40]!r} twice")
        out[k] = v
    return out


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def check_json_unique(body: bytes) -> None:
    """Refuse (400 `ambiguous-body`) JSON with a key given twice in one object: parsers disagree
    on which one wins (orjson and Python keep the last, others the first), so a policy and the
    upstream could read different values. The body is known to be valid JSON (orjson parsed it);
    the stdlib parser is used here because it can see duplicates."""
    import json

    if body.count(b'"') < 4:  # no object with two keys
        return
    try:
        json.loads(body, object_pairs_hook=_unique_pairs, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return  # not JSON for the stdlib either: the caller's own parse reports it


def _multipart_parts(
    body: bytes, ct: ContentType, *, strict: bool = False
) -> list[tuple[list[str], str | None, bytes]]:
    """(names, filename, content with its transfer encoding undone) of each part of a multipart
    body, parsed by the stdlib's email parser; an unparsable body gives [] (ModSecurity's own
    strict parser refuses it anyway), or with `strict` the parser's exception. `names`: every `name` the part's Content-Disposition
    headers give it — one normally; a part that names itself twice (`name="a"; name="url"`, or
    two Content-Disposition lines) is read under each, since parsers disagree on which wins
    (werkzeug takes the last, the email package the first). `name*=utf-8''url` (RFC 2231,
    which werkzeug reads too) is the name `url`."""
    from email.message import Message
    from email.parser import BytesParser
    from email.policy import HTTP
    from email.utils import collapse_rfc2231_value

    boundary = ct.params.get("boundary", "").replace("\\", "\\\\").replace('"', '\\"')
    head = f'Content-Type: {ct.media}; boundary="{boundary}"\r\n\r\n'.encode("latin-1")
    try:
        msg = BytesParser(policy=HTTP).parsebytes(head + body)
        out: list[tuple[list[str], str | None, bytes]] = []
        for part in msg.iter_parts():
            names: list[str] = []
            for key, value in part.raw_items():  # the raw lines: the parsed header keeps one `name`
                if key.lower() != "content-disposition":
                    continue
                one = Message()
                one["content-disposition"] = str(value)
                for k, v in one.get_params(header="content-disposition") or []:
                    name = collapse_rfc2231_value(v) if k.lower() == "name" else None
                    if name is not None and name not in names:
                        names.append(name)
            payload = part.get_payload(decode=True)
            out.append((names, part.get_filename(), payload if isinstance(payload, bytes) else b""))
        return out
    except Exception:  # the email package raises many kinds on hostile input
        if strict:
            raise
        return []


def multipart_files(body: bytes, ct: ContentType) -> list[str]:
    """The contents of the file parts (those with a `filename`) of a multipart/form-data body
    that are text (no NUL byte; a transfer encoding such as base64 undone), decoded as UTF-8
    with replacement."""
    return [
        data.decode("utf-8", errors="replace")
        for _, filename, data in _multipart_parts(body, ct)
        if filename is not None and b"\x00" not in data
    ]


def multipart_fields(body: bytes, ct: ContentType, *, strict: bool = False) -> list[tuple[str, str]]:
    """The text fields of a multipart/form-data body (named parts without a `filename`: what
    `request.form` holds in Flask, `req.body` with multer), as (name, value) decoded as UTF-8
    with replacement, in order. A part with an empty `filename=""` is a field too: Go's
    mime/multipart (`r.FormValue`) reads it as one, where werkzeug and busboy see a file.
    `strict`: a body the parser cannot read raises instead of giving []."""
    return [
        (name, data.decode("utf-8", errors="replace"))
        for names, filename, data in _multipart_parts(body, ct, strict=strict)
        if not filename
        for name in names
    ]


async def peek(req: Request, n: int) -> bytes:
    """The first `n` bytes of the request body (fewer when it is shorter), without taking them
    from the next reader: the ASGI messages read are given back, unchanged, ahead of the rest."""
    if req.body is not None:
        return req.body[:n]
    taken: list[dict[str, Any]] = []
    size = 0
    while size < n:
        try:
            async with asyncio.timeout(req.body_timeout):
                message = await req.receive()
        except TimeoutError:
            raise BodyTimeout() from None
        taken.append(message)
        if message["type"] != "http.request":
            break  # a disconnect: the next reader sees it too
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    rest = req.receive

    async def receive() -> dict[str, Any]:
        return taken.pop(0) if taken else await rest()

    req.receive = receive
    return b"".join(m.get("body", b"") for m in taken if m["type"] == "http.request")[:n]


def looks_structured(head: bytes) -> bool:
    """Whether the start of a body could be JSON or an urlencoded form (what a lenient server
    parses whatever the declared type): a body whose first bytes are neither (an image, an
    archive, a PDF) is not either."""
    text = head.lstrip(b" \t\r\n")
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:].lstrip(b" \t\r\n")
    if text[:1] in (b"{", b"[", b'"') or wide_text(head):
        return True
    return re.match(rb"[^=&\s{}<>\[\]\"\x00-\x1f\x7f-\xff]+=", text) is not None


def wide_text(body: bytes) -> bool:
    """True for text in UTF-16 or UTF-32 (a byte-order mark, or the NUL pattern RFC 4627 used to
    detect them), which some parsers (Python's `json.loads`) decode silently."""
    head = body[:4]
    if head.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        return True
    return len(head) >= 2 and (head[0] == 0 or head[1] == 0)


def mentions_json(req: Request) -> bool:
    """Whether the Content-Type header contains "/json" or "+json" anywhere, parameters included
    (`image/png; type=/json`): Laravel then reads the body as JSON whatever the media type
    (`Request::isJson` is that substring test), so such a body is never passed unread."""
    return any(b"/json" in v.lower() or b"+json" in v.lower() for k, v in req.headers if k == b"content-type")


def sniff(body: bytes) -> Literal["json", "xml", "form", "text"]:
    """What a body without a (processable) type looks like: JSON (it parses), XML (it starts
    with `<`), an urlencoded form (`a=1&b=2`), or other text."""
    text = body.lstrip(b" \t\r\n")
    if text[:1] in (b"{", b"["):
        try:
            orjson.loads(text)
            return "json"
        except orjson.JSONDecodeError:
            pass
    if text.startswith(b"\xef\xbb\xbf"):
        text = text[3:]
    if text[:1] == b"<":
        return "xml"
    if _FORM.fullmatch(body.rstrip(b"\r\n")) is not None:
        return "form"
    return "text"


class _XmlStrings:
    """An ElementTree parser target that collects every string of a document in order and
    refuses nesting deeper than `max_depth` as it goes (before the tree exists)."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.depth = 0
        self.strings: list[str] = []

    @staticmethod
    def _local(name: str) -> str:
        return name.rsplit("}", 1)[-1]

    def start(self, tag: str, attrib: dict[str, str]) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise BodyRefused(400, "xml-too-deep", f"the XML body is nested deeper than {self.max_depth} elements")
        self.strings.append(self._local(tag))
        for k, v in attrib.items():
            self.strings.append(self._local(k))
            self.strings.append(v)

    def start_ns(self, prefix: str, uri: str) -> None:
        # namespace declarations are values too: xmltodict and DOM's getAttribute("xmlns:a")
        # hand them to the application
        self.strings.append(prefix or "xmlns")
        self.strings.append(uri)

    def end(self, tag: str) -> None:
        self.depth -= 1

    def data(self, data: str) -> None:
        if data.strip():
            self.strings.append(data)

    def comment(self, data: str) -> None:
        self.strings.append(data)

    def pi(self, target: str, data: str | None = None) -> None:
        self.strings.append(f"{target} {data or ''}")

    def close(self) -> None:
        return None


def parse_xml(body: bytes, *, max_depth: int) -> list[str]:
    """Parse XML with defusedxml (expat) and return every string in it: element and attribute
    names, attribute values, namespace prefixes and URIs, text and CDATA, comments and processing
    instructions (each distinct string once, in document order). A DTD (hence any entity),
    nesting deeper than `max_depth` or a document that is not well formed is a `BodyRefused` (400)."""
    import xml.parsers.expat

    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import DefusedXMLParser

    target = _XmlStrings(max_depth)
    parser = DefusedXMLParser(target=target, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    try:
        parser.feed(body)
        parser.close()
    except BodyRefused:
        raise
    except DefusedXmlException:
        raise BodyRefused(400, "xml-dtd-forbidden", "XML bodies may not carry a DTD or entity declarations") from None
    except (SyntaxError, xml.parsers.expat.ExpatError, ValueError):
        raise BodyRefused(400, "malformed-body", "the XML body is not well formed") from None
    return list(dict.fromkeys(target.strings))  # each distinct string once: the rules' verdict is the same
