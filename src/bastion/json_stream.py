"""Streaming JSON rewriting: a JSON document of any size filtered as it passes, with memory bounded
by the nesting depth, the longest string and one bounded "element" — never by the body size.

How: a small structural walker (objects, arrays, member names, commas) runs only at the levels of
the document that are too large to hold; every value smaller than `element_bytes` is parsed whole
by CPython's C JSON scanner (`json.scanner.c_make_scanner`, which returns the end offset of the
value it parsed, so no second scan is needed), filtered as a Python object by the caller's tree
filter, and sent on as the original text when nothing changed (or re-serialised by orjson when it
did). Most of a large answer (an array of records) is therefore parsed in C and copied as slices.

Why hand-written: measured on this machine (bench/json_stream.py), ijson's C backend (yajl2_c)
yields one Python event per token and the answer must then be re-serialised token by token: it
filters at a fraction of this walker's speed (the figures are in docs/policies.md). No library
rewrites a JSON stream while passing untouched parts through as text.

Names are compared decoded (`"pass\\u0077ord"` is `password`): the C scanner decodes keys and
strings exactly as a JSON client will. Malformed JSON, a string longer than `max_string`, nesting
deeper than `max_depth` or invalid UTF-8 raise `StreamError`; the caller refuses the body.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from json.scanner import make_scanner
from typing import Any

import orjson


class StreamError(ValueError):
    """The document cannot be filtered. `kind`: "malformed" or "too-large"."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _Strict(json.JSONDecoder):
    def __init__(self) -> None:
        super().__init__(parse_constant=_no_constant)


# the C scanner: scan(text, index) -> (value, end); typeshed types make_scanner as taking itself
_scan = make_scanner(_Strict())  # type: ignore[arg-type]


class Number:
    """A number kept as its text: one a double cannot hold (an integer beyond 64 bits, a decimal
    of 16 or more digits, an exponent beyond a double's range), written back as it came."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _exact_int(text: str) -> Any:
    return int(text) if len(text) < 19 else Number(text)


class _Exact(json.JSONDecoder):
    def __init__(self) -> None:
        super().__init__(parse_constant=_no_constant, parse_float=Number, parse_int=_exact_int)


# the same scanner with numbers kept as their text: for an element that holds a number a double
# would round (LONG_NUMBER), parsed again before it is checked and written out
_scan_exact = make_scanner(_Exact())  # type: ignore[arg-type]
# 16+ significant digits, or an exponent of 3+ digits (1e400 reads as inf, 1e-400 as 0.0): text
# inside strings matches too (then the element only takes the exact parse: the same result)
LONG_NUMBER = re.compile(r"\d(?:\.?\d){15}|\d[eE][+-]?\d{3}")


def _number_fragment(value: Any) -> Any:
    if type(value) is Number:
        return orjson.Fragment(value.text.encode())
    raise TypeError(f"{type(value).__name__} is not JSON")


def _number_value(value: Any) -> Any:
    if type(value) is Number:  # (the stdlib writer cannot take text: an integer stays exact)
        text = value.text
        return int(text) if text.lstrip("-").isdigit() else float(text)
    raise TypeError(f"{type(value).__name__} is not JSON")


def exact(text: str) -> Any:
    """`text` (one JSON value) parsed with its long numbers kept as `Number`s."""
    return _scan_exact(text, 0)[0]


_WS = re.compile(r"[ \t\n\r]*")
_SEPARATOR = re.compile(r"[ \t\n\r\x1e\ufeff]*")  # between the texts of a sequence (a byte order mark too)


def _string_end(buf: str, start: int) -> int:
    """The index just after the quote closing the string whose body starts at `start`, or -1
    when it is not in `buf` yet. str.find in C; a quote is escaped when an odd number of
    backslashes precede it."""
    find = buf.find
    i = find('"', start)
    while i >= 0:
        j = i
        while j > start and buf[j - 1] == "\\":
            j -= 1
        if (i - j) % 2 == 0:
            return i + 1
        i = find('"', i + 1)
    return -1


_SCALAR = re.compile(r"[-+0-9a-zA-Z.]+")

# walker states
_VALUE, _KEY_OR_END, _KEY, _COLON, _COMMA_OR_END, _VALUE_OR_END, _END = range(7)


class Filter:
    """What a streaming rewrite asks of its policy (response_filter implements it)."""

    def name_action(self, key: str) -> bool:  # pragma: no cover - interface
        """True when the member named `key` is filtered (removed or masked)."""
        raise NotImplementedError

    def value_sensitive(self, value: str) -> bool:  # pragma: no cover - interface
        """True when a string value is filtered wherever it is."""
        raise NotImplementedError

    def tree(self, doc: Any, raw: str | None = None) -> tuple[Any, int, bool]:  # pragma: no cover - interface
        """Filter a parsed value (whose JSON text is `raw`) in place; return it, the number of
        changes, and whether it must be written out again rather than sent as `raw` (also when
        nothing changed: the text may hold a duplicate member the parse dropped)."""
        raise NotImplementedError


class _Frame:
    __slots__ = ("kind", "count", "skip")

    def __init__(self, kind: str, skip: bool) -> None:
        self.kind = kind
        self.count = 0  # members or items written out so far (for the commas)
        self.skip = skip  # the container is being dropped: checked, not written


class _TooDeep(Exception):
    """A parsed element is too deep to write back in one piece: the walker goes into it."""


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, default=_number_fragment).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, a lone surrogate, deep nesting
        try:
            return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_number_value)
        except RecursionError:
            raise _TooDeep() from None
        except ValueError as exc:
            raise StreamError("malformed", f"a value cannot be written back as JSON ({exc})") from None


class JsonRewriter:
    """Feed bytes, get filtered bytes. `feed(data)` returns what can be sent so far;
    `finish()` the rest, after checking the document was complete."""

    def __init__(
        self,
        flt: Filter,
        *,
        remove: bool,
        mask: str,
        element_bytes: int = 64 * 1024,
        max_depth: int = 512,
        max_string: int = 16 * 1024 * 1024,
        on_count: Callable[[int], None] | None = None,
        sequence: bool = False,
    ) -> None:
        """`sequence`: the body is a sequence of JSON texts (NDJSON, JSON Lines, RFC 7464's
        json-seq, or texts separated by white space), each filtered as a document; what stands
        between them (white space, the record separator 0x1E) is kept as it came."""
        self.flt = flt
        self.sequence = sequence
        self.remove = remove
        self.mask_json = _dumps(mask)
        self.element = element_bytes
        self.max_depth = max_depth
        self.max_string = max_string
        self.on_count = on_count
        self.count = 0
        self.utf8 = codecs.getincrementaldecoder("utf-8")("strict")
        self.buf = ""
        self.pos = 0
        self.stack: list[_Frame] = []
        self.state = _VALUE
        self.key_out = ""  # the pending member's `"name":`, written with its value
        self.key_hit = False  # the pending member's name is filtered
        self.started = False
        self.out: list[str] = []
        self.need = 0  # characters to wait for before the next try at an incomplete token
        self.tail: list[str] = []  # text received while waiting for `need` (joined on the next try)
        self.tail_size = 0
        self.budget = 0  # characters the tries on a line end may still read (8 per one received)

    # ---- public -----------------------------------------------------------------------------
    def feed(self, data: bytes) -> bytes:
        try:
            text = self.utf8.decode(data)
        except UnicodeDecodeError:
            raise StreamError("malformed", "the body is not UTF-8") from None
        if text:
            # an incomplete token (a long string, a record split by the chunking) is tried again
            # only once the text after it has doubled, and the text that comes meanwhile is kept
            # in pieces, joined then (copying the pending text on every read was quadratic in a
            # long string trickled in small reads): linear time, whatever the sizes. A sequence's
            # text ends at a line end: tried then too, so that each record of a live NDJSON
            # stream goes out once it is complete, as long as those tries have read at most
            # eight times the text received (a line end in every read of a long record).
            pending = len(self.buf) - self.pos + self.tail_size + len(text)
            line = self.sequence and "\n" in text
            if pending < self.need and not (line and self.budget + 8 * len(text) >= pending):
                self.tail.append(text)
                self.tail_size += len(text)
                self.budget += 8 * len(text)
                return self._take()
            if pending < self.need:  # (a try on a line end, paid from the budget)
                self.budget -= pending
            self.budget += 8 * len(text)
            self.tail.append(text)
            self.buf = self.buf[self.pos :] + "".join(self.tail)
            self.tail.clear()
            self.tail_size = 0
            self.pos = 0
            self._run(False)
        return self._take()

    def finish(self) -> bytes:
        try:
            self.buf = self.buf[self.pos :] + "".join(self.tail) + self.utf8.decode(b"", final=True)
            self.tail.clear()
            self.tail_size = 0
        except UnicodeDecodeError:
            raise StreamError("malformed", "the body is not UTF-8") from None
        self.pos = 0
        self._run(True)
        if self.state != _END:
            if not self.started:  # an empty body has nothing to filter
                return self._take()
            raise StreamError("malformed", "the JSON document ends early")
        if self.count and self.on_count is not None:
            self.on_count(self.count)
        return self._take()

    # ---- internals ----------------------------------------------------------------------------
    def _take(self) -> bytes:
        if not self.out:
            return b""
        try:
            data = "".join(self.out).encode()
        except UnicodeEncodeError:  # "\ud800": a lone surrogate escape, which UTF-8 cannot write
            raise StreamError("malformed", "a string holds an unpaired surrogate escape") from None
        self.out.clear()
        return data

    def _emit(self, text: str) -> None:
        """Write one member or item into the current container (with its comma)."""
        frame = self.stack[-1] if self.stack else None
        if frame is not None:
            if frame.skip:
                return
            if frame.count:
                self.out.append(",")
            frame.count += 1
        self.out.append(text)

    def _bad(self, what: str) -> StreamError:
        return StreamError("malformed", f"{what} at offset {self.pos} of the current window")

    def _run(self, final: bool) -> None:
        buf = self.buf
        n = len(buf)
        self.need = 0
        while True:
            if self.sequence and not self.stack and (self.state == _END or self.state == _VALUE):
                # between two texts of a sequence: the separator as it came, then the next text
                pos = _SEPARATOR.match(buf, self.pos).end()  # type: ignore[union-attr]
                if pos > self.pos:
                    self.out.append(buf[self.pos : pos])
                if pos < n and self.state == _END:
                    self.state = _VALUE
            else:
                pos = _WS.match(buf, self.pos).end()  # type: ignore[union-attr]  # `*`: always matches
            self.pos = pos
            if pos >= n:
                return
            state = self.state
            c = buf[pos]
            if state == _VALUE or state == _VALUE_OR_END:
                if state == _VALUE_OR_END and c == "]":
                    self._close(c)
                    continue
                if not self._value(buf, pos, n, final):
                    self.need = 2 * (n - pos)
                    return
            elif state == _KEY_OR_END or state == _KEY:
                if c == "}" and state == _KEY_OR_END:
                    self._close(c)
                    continue
                if c != '"':
                    raise self._bad("a member name was expected")
                if _string_end(buf, pos + 1) < 0:
                    if n - pos > self.max_string:
                        raise StreamError("too-large", f"a member name is longer than {self.max_string} characters")
                    if final:
                        raise self._bad("the document ends inside a member name")
                    self.need = 2 * (n - pos)
                    return
                try:
                    key, end = _scan(buf, pos)
                except (StopIteration, ValueError):
                    raise self._bad("a member name is not a valid JSON string") from None
                skip = self.stack[-1].skip
                self.key_hit = not skip and self.flt.name_action(key)
                self.key_out = "" if skip else buf[pos:end] + ":"
                self.pos = end
                self.state = _COLON
            elif state == _COLON:
                if c != ":":
                    raise self._bad("':' was expected after a member name")
                self.pos = pos + 1
                self.state = _VALUE
            elif state == _COMMA_OR_END:
                frame = self.stack[-1]
                if c == ",":
                    self.pos = pos + 1
                    self.state = _KEY if frame.kind == "{" else _VALUE
                elif (c == "}" and frame.kind == "{") or (c == "]" and frame.kind == "["):
                    self._close(c)
                else:
                    raise self._bad("',' or the end of the container was expected")
            else:  # _END: only white space may follow the document
                raise self._bad("data after the end of the JSON document")

    def _close(self, c: str) -> None:
        frame = self.stack.pop()
        if not frame.skip:
            self.out.append(c)
        self.pos += 1
        self._after_value()

    def _after_value(self) -> None:
        self.state = _COMMA_OR_END if self.stack else _END

    def _value(self, buf: str, pos: int, n: int, final: bool) -> bool:
        """Handle one value at `pos`; False when more input is needed."""
        self.started = True
        c = buf[pos]
        in_object = bool(self.stack) and self.stack[-1].kind == "{" and self.state == _VALUE
        skip = bool(self.stack) and self.stack[-1].skip
        if c == '"':
            end_hint = _string_end(buf, pos + 1)
            if end_hint < 0:
                if n - pos > self.max_string:
                    raise StreamError("too-large", f"a string is longer than {self.max_string} characters")
                if final:
                    raise self._bad("the document ends inside a string")
                return False
        elif c == "{" or c == "[":
            end_hint = -1
        else:
            m = _SCALAR.match(buf, pos)
            if m is None:
                raise self._bad("a value was expected")
            if m.end() == n and not final:  # a number may go on in the next chunk
                return False
            end_hint = m.end()
        try:
            value, end = _scan(buf, pos)
        except (StopIteration, ValueError, RecursionError):
            if end_hint >= 0:
                raise self._bad("not a valid JSON value") from None
            if n - pos < self.element and not final:  # a container not yet complete: wait for more
                return False
            return self._descend(c, in_object, skip)  # the walker goes in (and finds any error)
        raw = buf[pos:end]
        if end_hint >= 0 and end != end_hint:  # the scanner stopped inside the token
            self.pos = end
            raise self._bad("not a valid JSON value")
        count, out = self.count, len(self.out)
        try:
            self._place(value, raw, in_object, skip)
        except _TooDeep:  # undo, and filter it level by level instead
            self.count = count
            del self.out[out:]
            return self._descend(c, in_object, skip)
        self.pos = end
        self._after_value()
        return True

    def _place(self, value: Any, raw: str, in_object: bool, skip: bool) -> None:
        if skip:
            return
        flt = self.flt
        if in_object:
            if self.key_hit:
                self.count += 1
                if not self.remove:
                    self._emit(self.key_out + self.mask_json)
                return
            if type(value) is str:
                if flt.value_sensitive(value):
                    self.count += 1
                    if not self.remove:
                        self._emit(self.key_out + self.mask_json)
                    return
            elif type(value) is dict or type(value) is list:
                if LONG_NUMBER.search(raw) is not None:
                    value = exact(raw)
                value, changed, rewrite = flt.tree(value, raw)
                self.count += changed
                if rewrite:
                    raw = _dumps(value)
            self._emit(self.key_out + raw)
            return
        if type(value) is str:  # an array item, or the whole answer: masked where it stands
            if flt.value_sensitive(value):
                self.count += 1
                self._emit(self.mask_json)
                return
        if type(value) is dict or type(value) is list:
            if LONG_NUMBER.search(raw) is not None:
                value = exact(raw)
            value, changed, rewrite = flt.tree(value, raw)
            self.count += changed
            if rewrite:
                raw = _dumps(value)
        self._emit(raw)

    def _descend(self, c: str, in_object: bool, skip: bool) -> bool:
        if len(self.stack) >= self.max_depth:
            raise StreamError("too-large", f"the document nests deeper than {self.max_depth} levels")
        drop = skip
        if in_object and not skip:
            if self.key_hit:
                self.count += 1
                if self.remove:
                    drop = True
                else:
                    self._emit(self.key_out + self.mask_json)
                    drop = True
            else:
                self._emit(self.key_out + c)
        elif not skip:
            self._emit(c)
        self.stack.append(_Frame(c, drop))
        self.pos += 1
        self.state = _KEY_OR_END if c == "{" else _VALUE_OR_END
        return True
