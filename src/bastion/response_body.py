"""The one path for a response body that a policy wants to change (issue 22).

The gateway (`Gateway.forward`) and the ASGI middleware both hand an answer's body here when a
policy on the route registered a `ResponseRewriter` that `wants` it. This module then:

1. decodes the body (`Content-Encoding` gzip, deflate, br, zstd, or a list of them) with the
   project's bounded decoder (`bastion.content_coding`): an unknown coding, a corrupt stream or a
   decompression bomb (over `max_decoded_bytes`, or growing more than `max_ratio` times) is
   *unfilterable*;
2. decides whether the body is JSON: declared (`application/json`, `+json`) or, with `sniff_json`
   (the default), an answer declared `text/plain`, `text/html` or with no type whose body starts
   with `{` or `[`;
3. runs the rewriters' transforms in a chain, as a stream: `response_filter` rewrites JSON of any
   size in bounded memory (`bastion.json_stream`); rewriters that need the whole body (error
   masking, field encryption, OpenAPI `responses: remove`, GraphQL error masking) get it through
   `Buffered`, at most `max_buffered_bytes` — beyond that the body is unfilterable;
4. holds the answer's head until either the body is complete (then it gets a Content-Length) or
   `max_buffered_bytes` of output are ready (then it streams, chunked). The body is sent as
   identity (decoded): every client accepts identity, and re-compressing would cost CPU on a path
   whose upstream was asked (Accept-Encoding dropped) not to compress anyway;
5. fails closed: an unfilterable body found before the head was sent becomes a 502
   problem+json, logged (kind and route, never body content). Found after the head was sent
   (a stream that breaks late), the connection is cut without completing the chunked body, so no
   client mistakes a partial answer for a whole one. With `on_unfilterable: pass` (the
   `response_body` policy; `bastion check` warns about it) an unfilterable body found before the
   head went out passes as the upstream sent it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from bastion.content_coding import CodingError, Decoder, parse_codings
from bastion.http import Request, Response, is_json, media_type, problem
from bastion.json_stream import JsonRewriter, StreamError

log = logging.getLogger("bastion.response_body")

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BodyRules:
    """How answers a policy wants to change are handled (the `response_body` policy sets them)."""

    on_unfilterable: str = "refuse"  # or "pass"
    sniff_json: bool = True
    max_decoded_bytes: int = 1024 * MiB
    max_ratio: float = 200.0
    max_buffered_bytes: int = 1 * MiB
    max_depth: int = 512
    max_string_bytes: int = 16 * MiB


DEFAULT_RULES = BodyRules()


class Unfilterable(Exception):
    """A body that cannot be filtered. `kind`: unsupported, malformed or too-large."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class BodyRefused(Exception):
    """A streamed body turned out unfilterable after its head was sent: cut the connection."""


class BodyTransform(Protocol):
    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


@dataclass(slots=True)
class BodyInfo:
    """What a rewriter's `transform` may want to know about the body it will see."""

    rules: BodyRules
    sniffed: bool  # JSON by its content, not by its Content-Type
    # a declared sequence of JSON texts (NDJSON, JSON Lines, json-seq): only rewriters with
    # `sequences = True` get such a body, each text filtered as it completes
    sequence: bool = False


class Buffered:
    """For rewriters that need the whole (decoded) body: at most `limit` bytes are held.

    `rewrite(body) -> body` may raise `Unfilterable`. Over the limit the body is unfilterable —
    unless `needs` is given: then a body over the limit passes on as long as `needs(data)` says
    no part of it calls for the rewriter (checked on what was held and on every later chunk, with
    an overlap so that a marker split between chunks is seen); `needs=lambda d: False` suits a
    rewriter that only looks (schema logging).
    """

    __slots__ = ("rewrite", "limit", "needs", "parts", "size", "passing", "tail")
    OVERLAP = 64

    def __init__(
        self, rewrite: Callable[[bytes], bytes], limit: int, needs: Callable[[bytes], bool] | None = None
    ) -> None:
        self.rewrite = rewrite
        self.limit = limit
        self.needs = needs
        self.parts: list[bytes] = []
        self.size = 0
        self.passing = False
        self.tail = b""

    def _too_large(self) -> Unfilterable:
        return Unfilterable(
            "too-large", f"the body is larger than {self.limit} bytes (max_buffered_bytes) and a policy needs it whole"
        )

    def feed(self, data: bytes) -> bytes:
        if self.passing:
            assert self.needs is not None
            if self.needs(self.tail + data):
                raise self._too_large()
            self.tail = data[-self.OVERLAP :]
            return data
        self.parts.append(data)
        self.size += len(data)
        if self.size > self.limit:
            held, self.parts = b"".join(self.parts), []
            if self.needs is None or self.needs(held):
                raise self._too_large()
            self.passing = True
            self.tail = held[-self.OVERLAP :]
            return held
        return b""

    def finish(self) -> bytes:
        if self.passing:
            return b""
        body = b"".join(self.parts)
        self.parts = []
        return self.rewrite(body)


class JsonTransform:
    """JSON filtered whole (orjson, fastest) when it is at most `whole_limit` bytes, else as a
    stream (`JsonRewriter`). `whole(body)` must filter exactly as the stream does (the tests hold
    both to one reference). A sniffed body (declared text, starting like JSON) that turns out not
    to be JSON before any output was produced passes unchanged: it is not a JSON answer."""

    __slots__ = (
        "whole",
        "make_stream",
        "whole_limit",
        "sniffed",
        "parts",
        "size",
        "stream",
        "replay",
        "plain",
        "sequence",
    )

    def __init__(
        self,
        whole: Callable[[bytes], bytes],
        make_stream: Callable[[bool], JsonRewriter],
        whole_limit: int,
        sniffed: bool,
        sequence: bool = False,
    ) -> None:
        """`make_stream(sequence)`: a stream reading one JSON text, or a sequence of them. A
        declared sequence is streamed from its first byte (each text sent once it is complete); a
        sniffed body is read as a sequence when it is not one text (JSON Lines served as
        text/plain are filtered, not passed as "not JSON")."""
        self.whole = whole
        self.make_stream = make_stream
        self.whole_limit = whole_limit
        self.sniffed = sniffed
        self.parts: list[bytes] = []
        self.size = 0
        self.stream: JsonRewriter | None = None
        self.replay: list[bytes] | None = None  # sniffed input kept until the stream's first output
        self.plain = False
        self.sequence = sequence
        if sequence:
            self.whole_limit = -1  # (feed makes the stream at once)

    def _streamed(self, data: bytes, final: bool) -> bytes:
        assert self.stream is not None
        try:
            out = self.stream.feed(data) if data else b""
            if final:
                out += self.stream.finish()
        except StreamError as exc:
            if self.replay is None or self.stream.count:
                # (a sniffed body whose first texts held filtered content and whose rest is not
                # JSON: refused, since a reader that stops at the error has read those texts)
                raise Unfilterable(exc.kind, exc.detail) from None
            self.plain = True  # looked like JSON, is not: pass what was held, and the rest
            held, self.replay = b"".join(self.replay) + data, None
            return held
        if self.replay is not None:
            if out:
                self.replay = None
            else:
                self.replay.append(data)
        return out

    def feed(self, data: bytes) -> bytes:
        if self.plain:
            return data
        if self.stream is not None:
            return self._streamed(data, False)
        self.parts.append(data)
        self.size += len(data)
        if self.size <= self.whole_limit:
            return b""
        self.stream = self.make_stream(self.sequence or self.sniffed)
        held, self.parts = b"".join(self.parts), []
        if self.sniffed:
            self.replay = []
        return self._streamed(held, False)

    def finish(self) -> bytes:
        if self.plain:
            return b""
        if self.stream is not None:
            return self._streamed(b"", True)
        body = b"".join(self.parts)
        self.parts = []
        if self.sequence:  # (an empty declared sequence: nothing was fed)
            return body
        try:
            return self.whole(body)
        except StreamError as exc:
            if self.sniffed:  # not one JSON text: a sequence of them (JSON Lines as text/plain)?
                stream = self.make_stream(True)
                try:
                    return stream.feed(body) + stream.finish()
                except StreamError as err:
                    if stream.count:  # its first texts held filtered content: a reader that stops
                        raise Unfilterable(err.kind, err.detail) from None  # at the error read them
                    return body  # it looked like JSON but is not: it is not JSON
            raise Unfilterable(exc.kind, exc.detail) from None


def body_kind(resp: Response, rules: BodyRules) -> str | None:
    """'json' when declared JSON, 'seq' when declared a sequence of JSON texts (NDJSON, JSON
    Lines, json-seq), 'sniff' when it may be JSON mislabelled, else None."""
    ctype = resp.get_header(b"content-type")
    if is_json(ctype):
        return "json"
    if ctype is not None and sum(k == b"content-type" for k, _ in resp.headers) > 1:
        # several fields: clients join them into one list (http.client, fetch, requests), and a
        # list is read as such (the first field alone decides only whether JSON is declared)
        ctype = b", ".join(v for k, v in resp.headers if k == b"content-type")
    mt = media_type(ctype)
    if ctype is not None and any(s in mt for s in _JSON_STREAMS):
        return "seq"
    if rules.sniff_json and (ctype is None or _sniffable(mt)):
        return "sniff"
    return None


_WHITE = b" \t\r\n"
_LEADING_MARKS = _WHITE + b"\x1e\xef\xbb\xbf"  # and RFC 7464's record separator, a byte order mark
_BOM = b"\xef\xbb\xbf"
# What starts a JSON text: a container, a number, a string, or a literal as a whole word (a
# sequence of texts may start with any of them: `1\n{"password": ...}`); a body that starts with
# a literal's first letters is undecided until the word ends
_JSON_START = re.compile(rb'[{\["0-9-]|(?:true|false|null)(?![A-Za-z0-9_])')
_LITERAL_STARTS = frozenset(w[:i] for w in (b"true", b"false", b"null") for i in range(1, len(w) + 1))


def _sniffable(mt: bytes) -> bool:
    """Types a client may read as JSON although they do not declare it: text, none, and any type
    naming JSON that is not `application/json` or `+json` (`text/json`, `application/x-json`, a
    list-valued `application/json, text/plain`): requests' `.json()` and fetch's `Response.json()`
    read the body whatever the type. Sniffed, not declared: what is not JSON (one text or a
    sequence of them) passes. The JSON-sequence types (NDJSON, JSON Lines, json-seq) never get
    here: `body_kind` takes them as declared sequences, which stream (sniffing holds the body)."""
    return mt in (b"text/plain", b"text/html", b"") or mt.find(b"json") >= 0


_JSON_STREAMS = (b"ndjson", b"jsonl", b"json-seq", b"jsonlines")


class BodyJob:
    """Decoding plus the transforms' chain for one body. `feed`/`finish` raise `Unfilterable`."""

    def __init__(
        self, req: Request, resp: Response, ctx: Any, rewriters: list[Any], kind: str | None, rules: BodyRules
    ) -> None:
        codings: list[str] = []
        if resp.get_header(b"content-encoding") is not None:
            try:
                codings = parse_codings(v for k, v in resp.headers if k == b"content-encoding")
            except CodingError as exc:
                raise Unfilterable(exc.kind, exc.detail) from None
        self.decoder = (
            Decoder(codings, max_output=rules.max_decoded_bytes, max_ratio=rules.max_ratio) if codings else None
        )
        self.decoded = bool(codings)
        self.rules = rules
        self.size = 0
        self.req, self.resp, self.ctx = req, resp, ctx
        self.rewriters = rewriters
        self.kind = kind
        self.sniff_parts: list[bytes] | None = [] if kind == "sniff" else None
        self.transforms: list[BodyTransform] = []
        if kind != "sniff":
            self._build(sniffed=False, json=kind == "json", sequence=kind == "seq")

    def _build(self, sniffed: bool, json: bool, sequence: bool = False) -> None:
        info = BodyInfo(self.rules, sniffed, sequence)
        self.transforms = [
            r.transform(self.req, self.resp, self.ctx, info)
            for r in self.rewriters
            if json or r.wants(self.resp, False) or (sequence and getattr(r, "sequences", False))
        ]

    def _decode(self, raw: bytes, final: bool) -> bytes:
        try:
            if self.decoder is None:
                self.size += len(raw)
                if self.size > self.rules.max_decoded_bytes:
                    raise Unfilterable("too-large", f"the body is larger than {self.rules.max_decoded_bytes} bytes")
                return raw
            data = self.decoder.feed(raw) if raw else b""
            if final:
                self.decoder.finish()
            return data
        except CodingError as exc:
            raise Unfilterable(exc.kind, exc.detail) from None

    def _sniff(self, data: bytes, final: bool) -> bytes:
        assert self.sniff_parts is not None
        self.sniff_parts.append(data)
        text = b"".join(self.sniff_parts) if len(self.sniff_parts) > 1 else data
        # white space, record separators and byte order marks before the first text (a mark after
        # a line end too: a reader that splits records may skip it); a byte of a mark alone is
        # stripped too, so a mark split over reads leaves nothing to decide on yet
        head = text.lstrip(_LEADING_MARKS)
        bom = _BOM in text[: len(text) - len(head)]
        # undecided: only those so far, or the first letters of a literal
        if (not head or head in _LITERAL_STARTS) and not final:
            if len(text) <= self.rules.max_buffered_bytes:
                return b""
        json = _JSON_START.match(head) is not None
        # A byte order mark before JSON: Python's json.loads(bytes), requests' .json() and fetch's
        # Response.json() skip it and read the JSON. Taken as declared JSON, so what the parser
        # cannot read (the mark itself) is refused, never passed as "not JSON".
        self._build(sniffed=not (bom and json), json=json)
        self.sniff_parts = None
        return text

    def _chain(self, data: bytes, final: bool) -> bytes:
        if self.sniff_parts is not None:
            data = self._sniff(data, final)
            if self.sniff_parts is not None:
                return b""
        for t in self.transforms:
            if data:
                data = t.feed(data)
            if final:
                data += t.finish()
        return data

    def feed(self, raw: bytes) -> bytes:
        return self._chain(self._decode(raw, False), False)

    def finish(self) -> bytes:
        return self._chain(self._decode(b"", True), True)


def refuse(req: Request, resp: Response, ctx: Any, exc: Unfilterable, *, after_head: bool = False) -> bytes:
    """Log the refusal (never body content) and turn `resp` into the 502 problem."""
    ctx.log_fields["unfilterable"] = exc.kind
    log.warning(
        "request %s (route %s): response body unfilterable (%s: %s); %s",
        req.request_id,
        req.route_name or "-",
        exc.kind,
        exc.detail,
        "connection cut" if after_head else "refused with 502",
    )
    if after_head:
        return b""
    return resp.become(
        problem(
            502,
            "unfilterable-response",
            "the upstream's answer could not be checked by the gateway's response "
            "policies, so it is not delivered; quote the request id to the operators",
            request_id=req.request_id,
            extra={"reason": exc.kind},
        )
    )


# Headers that describe the upstream's bytes (RFC 9110 ETag, RFC 9530 Content-Digest and
# Repr-Digest, RFC 3230 Digest, RFC 1864 Content-MD5): false once the body sent differs (filtered,
# decoded, or replaced by a problem), so they are dropped. A cache keyed on a stale strong ETag
# would answer If-None-Match with the upstream's (unfiltered) representation's identity.
BYTES_VALIDATORS = frozenset({b"etag", b"digest", b"content-md5", b"content-digest", b"repr-digest"})


def _set_length(resp: Response, length: int | None, decoded: bool, changed: bool = True) -> None:
    drop = {b"content-length", b"content-encoding"} if decoded else {b"content-length"}
    if changed or decoded:
        drop |= BYTES_VALIDATORS
    resp.headers = [(k, v) for k, v in resp.headers if k not in drop]
    if length is not None:
        resp.headers.append((b"content-length", str(length).encode()))


class Gate:
    """Holds the head while the body is checked, then says what to send. Shared by both modes.

    `push(raw, more)` returns `(head_ready, chunks)`: once `head_ready`, the caller sends the
    (possibly changed) head of `resp`, then `chunks`; later pushes return chunks to send at once.
    `done` says that the whole body has been produced (refused or complete): stop reading.
    Raises `BodyRefused` when a streamed body fails after its head went out.
    """

    def __init__(
        self, req: Request, resp: Response, ctx: Any, rewriters: list[Any], rules: BodyRules, kind: str | None
    ) -> None:
        self.req, self.resp, self.ctx, self.rules = req, resp, ctx, rules
        self.passing = rules.on_unfilterable == "pass"
        self.raw: list[bytes] | None = [] if self.passing else None
        self.raw_size = 0
        self.out: list[bytes] = []
        self.out_size = 0
        self.held: list[bytes] | None = []  # the input while the head is held: was it changed?
        self.held_size = 0
        self.phase = "hold"
        self.done = False
        self.live = kind == "seq"
        self.first: list[bytes] = []
        try:
            self.job: BodyJob | None = BodyJob(req, resp, ctx, rewriters, kind, rules)
        except Unfilterable as exc:
            self.job = None
            self.first = self._fail(exc, b"")

    def _fail(self, exc: Unfilterable, raw: bytes) -> list[bytes]:
        if self.raw is not None:
            ctx, req = self.ctx, self.req
            ctx.log_fields["unfilterable"] = exc.kind
            log.warning(
                "request %s (route %s): response body unfilterable (%s: %s); passed untouched (on_unfilterable: pass)",
                req.request_id,
                req.route_name or "-",
                exc.kind,
                exc.detail,
            )
            self.phase = "pass"
            chunks = [*self.raw, raw] if raw else self.raw
            self.raw = None
            return chunks
        self.phase = "refused"
        self.done = True
        body = refuse(self.req, self.resp, self.ctx, exc)
        _set_length(self.resp, len(body), False)
        return [body]

    def push(self, raw: bytes, more: bool) -> tuple[bool, list[bytes]]:
        phase = self.phase
        if phase == "pass":
            return True, [raw] if raw else []
        if phase == "refused" or self.job is None:
            return True, []
        if phase == "stream":
            try:
                data = self.job.feed(raw) if raw else b""
                if not more:
                    data += self.job.finish()
                    self.done = True
            except Unfilterable as exc:
                refuse(self.req, self.resp, self.ctx, exc, after_head=True)
                self.done = True
                raise BodyRefused(exc.kind) from None
            return True, [data] if data else []
        # holding the head
        if self.raw is not None:
            if self.raw_size + len(raw) > self.rules.max_buffered_bytes:
                self.raw = None  # too much to replay: this body can no longer pass untouched
            else:
                self.raw.append(raw)
                self.raw_size += len(raw)
        if self.held is not None and raw:
            if self.held_size + len(raw) > self.rules.max_buffered_bytes:
                self.held = None  # too much to compare: taken as changed
            else:
                self.held.append(raw)
                self.held_size += len(raw)
        try:
            data = self.job.feed(raw) if raw else b""
            if not more:
                data += self.job.finish()
        except Unfilterable as exc:
            return True, self._fail(exc, b"")
        if data:
            self.out.append(data)
            self.out_size += len(data)
        if not more:
            self.phase = "complete"
            self.done = True
            chunks = self._flush()
            _set_length(self.resp, self.out_size, self.job.decoded, not self._same(chunks))
            return True, chunks
        # a declared sequence of JSON texts (NDJSON, json-seq) is often a live stream: its head goes
        # out with its first filtered text (a later text that cannot be filtered cuts the answer)
        if self.out_size >= self.rules.max_buffered_bytes or (self.live and self.out_size):
            self.phase = "stream"
            self.raw = self.held = None
            _set_length(self.resp, None, self.job.decoded)
            return True, self._flush()
        return False, []

    def _same(self, chunks: list[bytes]) -> bool:
        """Is the complete output (`chunks`, from `_flush`) the input as it came?"""
        held, self.held = self.held, None
        if held is None:
            return False
        before = b"".join(held)  # one chunk: that same object, no copy
        after = chunks[0] if chunks else b""
        return before is after or before == after

    def _flush(self) -> list[bytes]:
        out, self.out = self.out, []
        return [b"".join(out)] if out else []


def open_gate(req: Request, resp: Response, ctx: Any) -> Gate | None:
    """The gate for this answer, or None when no rewriter wants it (or it has no body)."""
    if not ctx.response_rewriters or req.method == "HEAD" or resp.status in (204, 304) or resp.status < 200:
        return None
    if resp.status < 500:  # only rewriters of server errors (error masking, on every request): none wants it
        for r in ctx.response_rewriters:
            if not getattr(r, "server_errors_only", False):
                break
        else:
            return None
    rules = ctx.body_rules or DEFAULT_RULES
    kind = body_kind(resp, rules)
    if kind == "seq":  # a sequence of JSON texts: the rewriters that read one, and status-based ones
        wanted = [r for r in ctx.response_rewriters if getattr(r, "sequences", False) or r.wants(resp, False)]
    else:
        wanted = [r for r in ctx.response_rewriters if r.wants(resp, kind is not None)]
    if not wanted:
        return None
    replacing = [r for r in wanted if getattr(r, "replaces_body", False)]
    if replacing:  # error masking answers its own body: filtering the one it drops is moot
        wanted = replacing[:1]
    return Gate(req, resp, ctx, wanted, rules, kind)


async def rewrite_body(req: Request, resp: Response, body: AsyncIterator[bytes], ctx: Any) -> AsyncIterator[bytes]:
    """The gateway's driver: returns the body to send once `resp`'s head is final (pull mode)."""
    gate = open_gate(req, resp, ctx)
    if gate is None:
        return body
    return await drive_gate(gate, body)


async def drive_gate(gate: Gate, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`rewrite_body` once the gate is open: the body to send after `gate.resp`'s head."""
    if gate.phase != "hold":  # refused or passed on the head alone (an unknown coding)
        return _replay(gate.first, body if gate.phase == "pass" else None)
    chunks: list[bytes] = []
    ready = False
    async for chunk in body:
        ready, chunks = gate.push(chunk, True)
        if ready:
            break
    else:
        ready, chunks = gate.push(b"", False)
    if gate.done:
        return _replay(chunks, None)
    return _follow(gate, chunks, body)


async def _replay(parts: Iterable[bytes], rest: AsyncIterator[bytes] | None) -> AsyncIterator[bytes]:
    for p in parts:
        if p:
            yield p
    if rest is not None:
        async for chunk in rest:
            yield chunk


async def _follow(gate: Gate, first: list[bytes], body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for p in first:
        yield p
    async for chunk in body:
        _, chunks = gate.push(chunk, True)
        for p in chunks:
            yield p
    if not gate.done:
        _, chunks = gate.push(b"", False)
        for p in chunks:
            yield p


class PushBody:
    """The middleware's driver (push mode: the app calls `send`): the same `Gate`."""

    def __init__(self, gate: Gate, send_head: Callable[[], Any], send: Callable[[dict[str, Any]], Any]) -> None:
        self.gate = gate
        self.send_head = send_head
        self.send = send
        self.head_sent = False
        self.closed = False

    async def start(self) -> None:
        if self.gate.phase != "hold":
            await self._head()
            await self._chunks(self.gate.first)
            if self.gate.done:
                await self._end()

    async def body(self, chunk: bytes, more: bool) -> None:
        if self.closed:
            return
        ready, chunks = self.gate.push(chunk, more)  # BodyRefused propagates to the app
        if ready and not self.head_sent:
            await self._head()
        if self.head_sent:
            await self._chunks(chunks)
            if self.gate.done or not more:
                await self._end()

    async def _head(self) -> None:
        self.head_sent = True
        await self.send_head()

    async def _chunks(self, chunks: list[bytes]) -> None:
        for c in chunks:
            if c:
                await self.send({"type": "http.response.body", "body": c, "more_body": True})

    async def _end(self) -> None:
        if not self.closed:
            self.closed = True
            await self.send({"type": "http.response.body", "body": b"", "more_body": False})
