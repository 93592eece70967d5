"""Content codings (RFC 9110 8.4): the one decoding path for every body a policy inspects.

A body sent or answered with `Content-Encoding: gzip` (or `deflate`, `br`, `zstd`, or a list of
them) is decoded here, as a stream, before any policy looks at it: a policy that inspects bodies
must never look away because of the encoding. Decoding is bounded: output is produced in slices
of at most `SLICE` bytes and counted as it is produced, so a decompression bomb is stopped after
`max_output` bytes (or when the output grows past `max_ratio` times the input), never after it has
filled memory. Every failure is a `CodingError` whose `kind` says why (unsupported, malformed,
too large); callers turn it into their refusal (400/413/415 for requests, 502 for answers).

Libraries: zlib (stdlib) for gzip/deflate, `brotli` (Google's bindings; `output_buffer_limit`
bounds each call) and `compression.zstd` (stdlib from 3.14, the `backports.zstd` package before)
whose `max_length` bounds each call.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import brotli

try:  # Python 3.14+
    from compression import zstd
except ImportError:  # pragma: no cover - depends on the interpreter
    from backports import zstd

SLICE = 64 * 1024  # the most output one decompression call may produce
SUPPORTED = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd"})
RATIO_FLOOR = 1024 * 1024  # the ratio rule applies only once this much has been produced


class CodingError(ValueError):
    """A body that cannot be decoded safely. `kind`: "unsupported", "malformed" or "too-large"."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def parse_codings(values: Iterable[bytes | None]) -> list[str]:
    """The codings of one or more `Content-Encoding` values, in the order they were applied
    (`identity` dropped). An unknown coding is a `CodingError("unsupported")`."""
    out: list[str] = []
    for value in values:
        if not value:
            continue
        for token in value.split(b","):
            name = token.strip().lower().decode("latin-1")
            if not name or name == "identity":
                continue
            if name not in SUPPORTED:
                raise CodingError("unsupported", f"the content coding {name[:40]!r} is not supported")
            out.append("gzip" if name == "x-gzip" else name)
    return out


class _Step:
    """One coding's decompressor behind one interface: `pump(data)` yields bounded slices."""

    def pump(self, data: bytes) -> Iterable[bytes]:  # pragma: no cover - interface
        raise NotImplementedError

    def finish(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError


class _Zlib(_Step):
    """gzip (every member of a multi-member body) and deflate (zlib-wrapped as RFC 9110 says, or
    raw as some servers send it: told apart by the zlib header's check bits)."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self.obj: zlib._Decompress | None = None
        self.head = b""

    def _new(self, first: bytes) -> zlib._Decompress:
        if self.coding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        zlib_wrapped = len(first) >= 2 and first[0] & 0x0F == 8 and (first[0] << 8 | first[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)

    def pump(self, data: bytes) -> Iterable[bytes]:
        if self.obj is None:
            self.head += data
            if len(self.head) < 2:
                return
            data, self.head = self.head, b""
            self.obj = self._new(data)
        while data:
            try:
                out = self.obj.decompress(data, SLICE)
                if out:
                    yield out
                data = self.obj.unconsumed_tail
                while not data and not self.obj.eof and len(out) == SLICE:
                    out = self.obj.decompress(b"", SLICE)
                    if out:
                        yield out
                    data = self.obj.unconsumed_tail
            except zlib.error as exc:
                raise CodingError("malformed", f"the {self.coding} body is corrupt ({exc})") from None
            if self.obj.eof:
                rest = self.obj.unused_data
                if self.coding == "gzip" and rest.strip(b"\x00"):  # another gzip member follows
                    self.obj = self._new(rest)
                    data = rest
                elif rest.strip(b"\x00"):
                    raise CodingError("malformed", f"data after the end of the {self.coding} stream")
                else:
                    data = b""

    def finish(self) -> None:
        if self.head or (self.obj is not None and not self.obj.eof):
            raise CodingError("malformed", f"the {self.coding} body ends early")


class _Brotli(_Step):
    def __init__(self) -> None:
        self.obj = brotli.Decompressor()
        self.any = False

    def pump(self, data: bytes) -> Iterable[bytes]:
        try:
            if data:
                self.any = True
                out = self.obj.process(data, output_buffer_limit=SLICE)
                if out:
                    yield out
            # brotli keeps output back past the limit even when it says it can accept more
            # input (1.2: can_accept_more_data() is True with output pending): drain until dry
            while not self.obj.is_finished():
                out = self.obj.process(b"", output_buffer_limit=SLICE)
                if not out:
                    break
                yield out
        except brotli.error as exc:
            raise CodingError("malformed", f"the br body is corrupt ({exc})") from None

    def finish(self) -> None:
        if self.any and not self.obj.is_finished():
            raise CodingError("malformed", "the br body ends early")


class _Zstd(_Step):
    def __init__(self) -> None:
        self.obj = zstd.ZstdDecompressor()
        self.any = False

    def pump(self, data: bytes) -> Iterable[bytes]:
        try:
            while True:
                if self.obj.eof:
                    rest = self.obj.unused_data + data
                    if not rest:
                        return
                    self.obj = zstd.ZstdDecompressor()  # concatenated frames
                    data = rest
                self.any = True
                out = self.obj.decompress(data, SLICE)
                data = b""
                if out:
                    yield out
                if self.obj.needs_input and not self.obj.eof:
                    return
                if self.obj.eof and not self.obj.unused_data:
                    return
        except zstd.ZstdError as exc:
            raise CodingError("malformed", f"the zstd body is corrupt ({exc})") from None

    def finish(self) -> None:
        if self.any and not self.obj.eof:
            raise CodingError("malformed", "the zstd body ends early")


def _step(coding: str) -> _Step:
    if coding in ("gzip", "deflate"):
        return _Zlib(coding)
    if coding == "br":
        return _Brotli()
    return _Zstd()


class Decoder:
    """Decodes a body coded with `codings` (as `parse_codings` returns them) chunk by chunk.

    `feed(chunk)` returns the decoded bytes so far (possibly b""); `finish()` checks that the
    stream was complete. Either raises `CodingError("too-large")` as soon as the
    output passes `max_output` bytes or `max_ratio` times the input (past `RATIO_FLOOR`).
    """

    def __init__(self, codings: list[str], *, max_output: int, max_ratio: float = 200.0) -> None:
        self.steps = [_step(c) for c in reversed(codings)]  # undo the last applied first
        self.max_output = max_output
        self.max_ratio = max_ratio
        self.bytes_in = 0
        self.bytes_out = 0

    def _count(self, out: bytes) -> bytes:
        self.bytes_out += len(out)
        if self.bytes_out > self.max_output:
            raise CodingError("too-large", f"the decoded body is larger than {self.max_output} bytes")
        if self.bytes_out > RATIO_FLOOR and self.bytes_out > self.max_ratio * max(self.bytes_in, 1):
            raise CodingError("too-large", f"the body expands more than {self.max_ratio:g} times when decoded")
        return out

    def _run(self, index: int, data: bytes, out: list[bytes]) -> None:
        if index == len(self.steps):
            if data:
                out.append(self._count(data))
            return
        for piece in self.steps[index].pump(data):
            self._run(index + 1, piece, out)

    def feed(self, chunk: bytes) -> bytes:
        self.bytes_in += len(chunk)
        out: list[bytes] = []
        if chunk:
            self._run(0, chunk, out)
        return b"".join(out)

    def finish(self) -> None:
        for step in self.steps:
            step.finish()


def decode_body(data: bytes, codings: list[str], *, max_output: int, max_ratio: float = 200.0) -> bytes:
    """A whole body decoded at once (same bounds as `Decoder`)."""
    if not codings:
        return data
    dec = Decoder(codings, max_output=max_output, max_ratio=max_ratio)
    out = dec.feed(data)
    dec.finish()
    return out
