"""Response filtering (OWASP API3, API8): sensitive fields removed or masked from JSON answers,
by name (recursively, case-insensitive, with patterns) and by value (card numbers that pass
Luhn, private key blocks, JWT-shaped strings).

Bodies of any size and content coding are filtered (`bastion.response_body` decodes them and
refuses what cannot be filtered): up to `max_bytes` in one piece with orjson, larger ones as a
stream (`bastion.json_stream`) in bounded memory. Names are compared decoded and lower-cased."""

from __future__ import annotations

import gc
import re
import threading
from typing import Any, ClassVar, Literal

import orjson
import simdjson
from pydantic import Field, field_validator

from bastion.http import Request, Response
from bastion.json_splice import (
    SUBSTITUTABLE,
    find_members,
    member_pattern,
    name_pattern,
    splice,
    substitute,
    substitution,
)
from bastion.json_stream import LONG_NUMBER, Filter, JsonRewriter
from bastion.pipeline import Context, Policy, PolicyConfig
from bastion.response_body import BodyInfo, JsonTransform

try:
    import hyperscan
except ImportError:  # pragma: no cover - no wheel for this platform (pyproject): the byte scans
    hyperscan = None  # type: ignore[assignment]

DEFAULT_FIELDS = [
    "password",
    "password_hash",
    "ssn",
    "credit_card",
    "secret",
    "secret_key",
    "token",
    "api_key",
    "private_key",
]
# digits with spaces/dashes, long enough for a card (ASCII digits: what `luhn` can read, and what
# the byte pre-check in `values_possible` looks for)
_CARD_RUN = re.compile(r"[0-9][0-9 -]{11,60}[0-9]")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}")
_DIGITS_AS_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_CARD_DIGITS = b"0" * 13
VALUE_KINDS = {"card": None, "private_key": _PRIVATE_KEY, "jwt": _JWT}
# The only characters outside ASCII whose lower case is ASCII only: U+212A KELVIN SIGN -> "k"
# (U+0130 lowers to "i" plus a combining dot, which no ASCII name matches). Checked over all of
# Unicode by tests/unit/test_response_filter.py.
_KELVIN = "\u212a".encode()
# characters a JSON encoder may write escaped other than with \u: a name holding one cannot be
# found by a plain byte search ("a/b" may be written "a\/b")
_ESCAPABLE = frozenset('"\\/')
# what may follow a JSON string's closing quote (printable: tab, CR, LF are not names' already)
_AFTER_STRING = frozenset(" ,:]}")


def luhn(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        alt = not alt
    return total % 10 == 0


def _has_card(text: str) -> bool:
    """A 13-19 digit number (groups separated by spaces or dashes allowed) that passes Luhn.
    In a longer run, only whole groups are combined: a 25-digit order number is not a card."""
    for m in _CARD_RUN.finditer(text):
        groups = re.split(r"[ -]+", m.group())
        for i in range(len(groups)):
            digits = ""
            for g in groups[i:]:
                digits += g
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn(digits):
                    return True
    return False


def _needles(names: frozenset[str]) -> list[bytes] | None:
    """The byte strings `"name"` that `may_match` searches for, or None when some name cannot be
    found that way: not ASCII (lower-casing outside ASCII is not a byte operation), holding a
    character JSON may write escaped without `\\u` (a quote, a backslash, a slash, a control), or
    beginning with a character that may follow a string's closing quote (white space, `,:]}`):
    then `"name` could begin at a closing quote (`", "` is in `["x", ":", "}"]`), and the splice
    reads every needle's quote as an opening one."""
    out = []
    for n in names:
        if not n.isascii() or not n.isprintable() or _ESCAPABLE.intersection(n) or n[:1] in _AFTER_STRING:
            return None
        out.append(b'"' + n.encode() + b'"')
    return out


def _stems(needles: list[bytes]) -> list[tuple[bytes, list[bytes]]]:
    """The needles grouped under byte strings to search for first: `"name` without its closing
    quote, and only the shortest of those that begin one another (`"password` finds both
    `"password"` and `"password_hash"`): fewer scans of a clean answer (each ~55 µs per 100 KB)."""
    groups: dict[bytes, list[bytes]] = {}
    for needle in sorted(needles, key=len):
        stem = needle[:-1]
        for s in groups:
            if stem.startswith(s):
                groups[s].append(needle)
                break
        else:
            groups[stem] = [needle]
    return list(groups.items())


_BOM = b"\xef\xbb\xbf"


def valid_json(body: bytes) -> bool:
    """Is `body` one JSON text (RFC 8259: UTF-8, no byte order mark)? simdjson checks it without
    building a Python object: ~10x cheaper than `orjson.loads` on a 100 KB answer. It refuses
    some valid texts (integers beyond 64 bits, nesting deeper than 1,024): the caller then lets
    orjson and the stream decide, as for any body this refuses."""
    if body.startswith(_BOM):
        return False
    try:
        doc = simdjson.Parser().parse(body)
    except Exception:  # ValueError (UnicodeDecodeError too), RuntimeError (big integers), ...:
        return False  # not proven valid; orjson and the stream decide, as before
    del doc  # a proxy over the parser's buffer: nothing is converted
    return True


# a JSON string (valid JSON: escapes are two characters, or six for \u, which the `.` and the
# characters after it cover)
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_LONG_NUMBER_BYTES = re.compile(LONG_NUMBER.pattern.encode())
_UNREAD = object()


def _long_number(body: bytes) -> bool:
    """Whether a body holds a number a double cannot hold (`json_stream.LONG_NUMBER`): one
    hyperscan pass (~0.1 ms on 100 KB, a third of orjson.loads; Python's re takes 2.6 ms on
    100 KB), or re where hyperscan is not installed."""
    global _long_numbers
    if hyperscan is None:
        return _LONG_NUMBER_BYTES.search(body) is not None
    if _long_numbers is None:
        _long_numbers = _Scanner.of([_LONG_NUMBER_BYTES.pattern], [_HALT], [hyperscan.HS_FLAG_SINGLEMATCH])
    return bool(_long_numbers.scan(body))


_long_numbers: _Scanner | None = None


def _no_duplicate(text: bytes, members: int) -> bool:
    """Did the parse of this valid JSON text keep all its members (`members`, counted in the
    tree)? Each member has one `:` outside strings. All the text's `:` first (one C count):
    equal, no string holds one and no member was dropped; else those outside strings."""
    return text.count(b":") == members or _STRING.sub(b"", text).count(b":") == members


# what the byte pre-check found (`ResponseFilter._precheck`)
_CLEAN, _NAMES, _FULL = range(3)

# `_Scanner`'s pattern ids after those of the needles (0, 1, ...): any of these ends the scan
_ID_ESCAPE, _ID_KELVIN, _ID_JWT, _ID_PEM, _ID_CARD = _SPECIAL = range(1 << 24, (1 << 24) + 5)
_HALT = _SPECIAL[0]


def _hex(text: bytes) -> bytes:
    """A hyperscan pattern matching `text` literally (every byte written `\\xNN`: no syntax)."""
    return b"".join(b"\\x%02x" % c for c in text)


def _on_match(pattern: int, start: int, end: int, flags: int, found: Any) -> bool:
    found.append(pattern)
    return pattern >= _HALT  # True stops the scan: the answer takes the full path (or Kelvin's)


class _Scanner:
    """`ResponseFilter._precheck_scans` in one pass of hyperscan (a SIMD multi-pattern matcher)
    instead of lower-casing and a dozen byte scans: every needle `"name"` ASCII-case-insensitive
    (what searching `body.lower()` finds), and what sends an answer to the full path — `\\u`,
    `eyJ`, `-----BEGIN `, 13 digits with only spaces and dashes between them (what
    `_values_unescaped`'s translate-and-search finds), and the Kelvin sign (then the caller asks
    `_precheck_scans`, which reads names through it). Each pattern is reported once at most
    (`HS_FLAG_SINGLEMATCH`); the first of the full path's stops the scan."""

    def __init__(self, needles: list[bytes], jwt: bool, pem: bool, card: bool) -> None:
        assert hyperscan is not None
        one = hyperscan.HS_FLAG_SINGLEMATCH
        exprs = [_hex(n) for n in needles]
        flags = [one | hyperscan.HS_FLAG_CASELESS] * len(needles)
        ids = list(range(len(needles)))
        special = [(_ID_ESCAPE, _hex(b"\\u")), (_ID_KELVIN, _hex(_KELVIN))]
        if jwt:
            special.append((_ID_JWT, _hex(b"eyJ")))
        if pem:
            special.append((_ID_PEM, _hex(b"-----BEGIN ")))
        if card:
            special.append((_ID_CARD, rb"[0-9](?:[ \-]*[0-9]){12}"))
        for i, expr in special:
            exprs.append(expr)
            flags.append(one)
            ids.append(i)
        self._compile(exprs, ids, flags)

    def _compile(self, exprs: list[bytes], ids: list[int], flags: list[int]) -> None:
        self.db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self.db.compile(expressions=exprs, ids=ids, flags=flags)
        self._local = threading.local()  # a scratch space per thread (scans release the GIL)

    @classmethod
    def of(cls, exprs: list[bytes], ids: list[int], flags: list[int]) -> _Scanner:
        """A scanner of other patterns (an id `>= _HALT` stops the scan at its first match)."""
        scanner = cls.__new__(cls)
        scanner._compile(exprs, ids, flags)
        return scanner

    def scan(self, body: bytes) -> list[int]:
        """The ids found, in the order found; when the last one is `>= _HALT` the scan stopped
        there and later ones were not looked for."""
        local = self._local
        try:
            scratch = local.scratch
        except AttributeError:
            scratch = local.scratch = hyperscan.Scratch(self.db)
        found: list[int] = []
        try:
            self.db.scan(body, match_event_handler=_on_match, context=found, scratch=scratch)
        except hyperscan.ScanTerminated:
            if not found or found[-1] < _HALT:  # the callback failed: not proven, full path
                found.append(_ID_ESCAPE)
        return found


class ResponseFilterConfig(PolicyConfig):
    fields: list[str] = Field(
        default_factory=lambda: list(DEFAULT_FIELDS), description="Field names removed at any depth (case-insensitive)."
    )
    field_patterns: list[str] = Field(default_factory=list, description="Regexes on field names (full match).")
    values: list[Literal["card", "private_key", "jwt"]] = Field(
        default_factory=lambda: ["card", "private_key", "jwt"],  # type: ignore[arg-type]  # mypy widens the literals
        description="Value kinds filtered wherever they are.",
    )
    mode: Literal["remove", "mask"] = Field("remove", description="Drop the field, or replace its value.")
    mask: str = Field("[FILTERED]", description="The replacement in mask mode.")
    max_bytes: int = Field(
        1024 * 1024,
        ge=1024,
        description="Bodies up to this size are filtered in one piece "
        "(fastest); larger ones as a stream, in bounded memory. Nothing passes unfiltered.",
    )

    @field_validator("field_patterns")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        for v in values:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"{v!r} is not a regular expression: {exc}") from None
        return values


_KNOWN_MAX = 8192


class ResponseFilter(Policy[ResponseFilterConfig], Filter):
    name: ClassVar[str] = "response_filter"
    priority: ClassVar[int] = 400
    Config = ResponseFilterConfig

    def __init__(self, config: ResponseFilterConfig, env) -> None:
        super().__init__(config, env)
        self.names = frozenset(f.lower() for f in config.fields)
        self.patterns = [re.compile(p, re.IGNORECASE) for p in config.field_patterns]
        self.card = "card" in config.values
        self.value_res = [r for k in config.values if (r := VALUE_KINDS[k]) is not None]
        self.remove = config.mode == "remove"
        self.needles = _needles(self.names) if not self.patterns else None
        needles = self.needles or []
        self.stems = [(stem, [(n, name_pattern(n)) for n in group]) for stem, group in _stems(needles)]
        self.name_patterns = [name_pattern(n) for n in needles]
        # a member and its scalar value in one search (`find_members`), by name pattern
        self.member_patterns = {p: member_pattern(n) for n, p in zip(needles, self.name_patterns, strict=True)}
        self.member_patterns.update((p, member_pattern(n)) for _, group in self.stems for n, p in group)
        self.mask_json = orjson.dumps(config.mask)
        # one `re.subn` per name (`json_splice.substitute`), for names made of plain characters
        self.substitutions = {
            p: substitution(n, None if config.mode == "remove" else self.mask_json)
            for n, p in zip(needles, self.name_patterns, strict=True)
            if SUBSTITUTABLE.fullmatch(n)
        }
        self.mask = config.mask
        self.mask_json = orjson.dumps(config.mask)
        self.max_bytes = config.max_bytes
        self.check_values = self.card or bool(self.value_res)
        self.jwt = "jwt" in config.values
        self.pem = "private_key" in config.values
        self.scanner = (
            _Scanner(needles, self.jwt, self.pem, self.card)
            if hyperscan is not None and self.needles is not None
            else None
        )
        self._known: set[str] = set()  # names seen, and those of them filtered
        self._hits: set[str] = set()

    def _classify(self, key: str) -> bool:
        k = key.lower()
        return k in self.names or any(p.fullmatch(k) for p in self.patterns)

    def name_action(self, key: str) -> bool:
        """Is a member of this (decoded) name filtered? Cached: answers repeat their names."""
        if key in self._known:
            return key in self._hits
        hit = self._classify(key)
        if len(self._known) < _KNOWN_MAX:
            self._known.add(key)
            if hit:
                self._hits.add(key)
        return hit

    def _sensitive_keys(self, keys: Any) -> Any:
        """The filtered names among a dict's keys, with set operations in C once they are known."""
        known = self._known
        if not known.issuperset(keys):
            for key in keys:
                if key not in known:
                    if len(known) >= _KNOWN_MAX:  # many distinct names (hostile?): no more caching
                        return [k for k in keys if self.name_action(k)]
                    self.name_action(key)
        return self._hits.intersection(keys)

    def value_sensitive(self, value: str) -> bool:
        return (self.card and _has_card(value)) or any(r.search(value) for r in self.value_res)

    def may_match(self, body: bytes | str) -> bool:
        """Can anything in this JSON text be filtered? False only when it surely cannot: no
        `\\u` escape (which could spell any name or value: `"pass\\u0077ord"`), no filtered
        name between quotes in the text lowered as the filter lowers names, no value that could
        match (`values_possible`). Always True with `field_patterns` (regexes on names cannot be
        searched for as bytes) or a name a byte search cannot find (see `_needles`)."""
        needles = self.needles
        if needles is None:
            return True
        raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
        if self.scanner is not None:
            found = self.scanner.scan(raw)
            if not found:
                return False
            if found[-1] != _ID_KELVIN:
                return True
        return self._may_match_scans(raw, needles)

    def _may_match_scans(self, raw: bytes, needles: list[bytes]) -> bool:
        """`may_match` by byte scans (without hyperscan, and for a text with a Kelvin sign)."""
        if b"\\u" in raw:
            return True
        hay = raw.lower()  # ASCII letters only, as UTF-8 bytes of other characters are left alone
        if _KELVIN in hay:
            hay = hay.replace(_KELVIN, b"k")
        return any(n in hay for n in needles) or self.values_possible(raw)

    def values_possible(self, text: str | bytes) -> bool:
        """One scan of the raw text: can any value match at all? (Most answers have none, and
        then the walk checks names only.) A `\\u` escape counts: an escaped digit could hide a
        card; no other JSON escape writes a character any value pattern matches. A card needs 13
        digits with only spaces or dashes between them: with those deleted and every digit made
        "0" (`bytes.translate`, in C), 13 zeros in a row — a regex over every offset cost as much
        as parsing the answer."""
        if not self.check_values:
            return False
        raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
        return b"\\u" in raw or self._values_unescaped(raw)

    def _values_unescaped(self, raw: bytes) -> bool:
        """`values_possible` for a text already known to hold no `\\u`."""
        if not self.check_values:
            return False
        return (
            (self.jwt and b"eyJ" in raw)
            or (self.pem and b"-----BEGIN " in raw)
            or (self.card and _CARD_DIGITS in raw.translate(_DIGITS_AS_ZERO, b" -"))
        )

    def tree(self, doc: Any, raw: str | None = None) -> tuple[Any, int, bool]:
        """For the stream: an element its pre-check clears is sent as its text; any other is
        written out from the tree checked when something was filtered, or when its parse dropped
        a duplicate member (which could hold a filtered field: `{"a": {"password": 1}, "a": 2}`);
        an unchanged one keeps its text (writing it out again rounds its decimals to doubles)."""
        if raw is not None and not self.may_match(raw):
            return doc, 0, False
        doc, count, members = self._walk(doc, raw is None or self.values_possible(raw))
        if not count and raw is not None and _no_duplicate(raw.encode("utf-8", "surrogatepass"), members):
            return doc, 0, False
        return doc, count, True

    def filter(self, doc: Any, check_values: bool = True) -> tuple[Any, int]:
        """Filter in place, iteratively (no recursion limit to hit on deep documents)."""
        doc, count, _ = self._walk(doc, check_values)
        return doc, count

    def _walk(self, doc: Any, check_values: bool) -> tuple[Any, int, int]:
        """`filter`, also counting the members of the objects as parsed (before any removal)."""
        count = members = 0
        sensitive_keys = self._sensitive_keys
        sensitive_value = self.value_sensitive if check_values and self.check_values else None
        remove, mask = self.remove, self.mask
        if type(doc) is str:  # the whole answer is one string (a token endpoint's `"eyJ..."`): masked, as in a list
            if sensitive_value is not None and sensitive_value(doc):
                return mask, 1, 0
            return doc, 0, 0
        stack = [doc]
        push = stack.append
        while stack:
            node = stack.pop()
            if type(node) is dict:
                members += len(node)
                hits = sensitive_keys(node.keys())
                if sensitive_value is not None:
                    for key, value in node.items():
                        if type(value) is str and key not in hits and sensitive_value(value):
                            hits = set(hits)
                            hits.add(key)
                if hits:
                    count += len(hits)
                    for key in hits:
                        if remove:
                            del node[key]
                        else:
                            node[key] = mask
                for value in node.values():
                    if type(value) is dict or type(value) is list:
                        push(value)
            elif type(node) is list:
                for i, value in enumerate(node):
                    if type(value) is str:
                        if sensitive_value is not None and sensitive_value(value):
                            count += 1
                            node[i] = mask  # list positions are kept: removing would shift meaning
                    elif type(value) is dict or type(value) is list:
                        push(value)
        return doc, count, members

    async def on_request(self, req: Request, ctx: Context) -> Response | None:
        ctx.drop_request_headers.add(b"accept-encoding")  # ask for identity (others are decoded)
        # a byte range of the unfiltered answer is not filtered: `"hunter2"`, one member's value,
        # is itself a JSON text; several ranges come as multipart/byteranges, not JSON at all
        ctx.drop_request_headers.update((b"range", b"if-range"))
        ctx.response_rewriters.append(self)
        return None

    sequences = True  # NDJSON, JSON Lines and json-seq answers are filtered text by text

    @staticmethod
    def wants(resp: Response, json: bool) -> bool:
        return json

    def transform(self, req: Request, resp: Response, ctx: Context, info: BodyInfo) -> JsonTransform:
        rules = info.rules

        def counted(n: int) -> None:
            ctx.log_fields["filtered_fields"] = ctx.log_fields.get("filtered_fields", 0) + n

        return JsonTransform(
            lambda body: self.rewrite_whole(body, counted),
            lambda sequence: JsonRewriter(
                self,
                remove=self.remove,
                mask=self.mask,
                max_depth=rules.max_depth,
                max_string=rules.max_string_bytes,
                on_count=counted,
                sequence=sequence,
            ),
            self.max_bytes,
            info.sniffed,
            info.sequence,
        )

    def rewrite_whole(self, body: bytes, counted=None) -> bytes:
        """A whole body. An answer the byte pre-check clears is only validated (`valid_json`)
        and passes as it came; one whose only filtered content is members by name, each written
        as its plain bytes, is validated and spliced (`bastion.json_splice`); any other is
        parsed by orjson, walked (`filter`) and written out by orjson.

        The cyclic garbage collector is paused meanwhile: a parsed answer is a tree (no cycles;
        reference counting frees it), but its thousands of new containers would set off
        collections that scan the whole process heap, a third of the time of a 100 KB answer
        in the profile. Nothing here awaits, so no other request runs in the pause."""
        if not body or body.isspace():
            return body
        paused = gc.isenabled()
        gc.disable()
        try:
            return self._rewrite_whole(body, counted)
        finally:
            if paused:
                gc.enable()

    def _precheck(self, body: bytes) -> tuple[int, bytes, list[re.Pattern[bytes]]]:
        """`may_match` for a whole body, saying also what was found: `_CLEAN` (nothing can be
        filtered), `_NAMES` (only members by name, each written as its plain bytes: the lowered
        text and the name patterns to splice with are returned), or `_FULL` (parse and walk).
        One hyperscan pass (`_Scanner`) where it is installed; `_precheck_scans` otherwise, and
        for a text with a Kelvin sign."""
        scanner = self.scanner
        if scanner is None or self.needles is None:
            return self._precheck_scans(body)
        found = scanner.scan(body)
        if not found:
            return _CLEAN, b"", []
        last = found[-1]
        if last >= _HALT:
            return self._precheck_scans(body) if last == _ID_KELVIN else (_FULL, b"", [])
        patterns = self.name_patterns
        return _NAMES, body.lower(), [patterns[i] for i in found]

    def _precheck_scans(self, body: bytes) -> tuple[int, bytes, list[re.Pattern[bytes]]]:
        """`_precheck` by byte scans: lower-casing, then one `in` per name stem and value kind."""
        if self.needles is None or b"\\u" in body:
            return _FULL, b"", []
        hay = body.lower()  # ASCII letters only: offsets are kept
        found = hay
        if _KELVIN in hay:
            found = hay.replace(_KELVIN, b"k")
        patterns = [p for stem, group in self.stems if stem in found for n, p in group if n in found]
        values = self._values_unescaped(body)
        if not patterns and not values:
            return _CLEAN, hay, []
        if values or found is not hay:
            return _FULL, b"", []
        return _NAMES, hay, patterns

    def _rewrite_whole(self, body: bytes, counted) -> bytes:
        verdict, hay, patterns = self._precheck(body)
        if verdict != _FULL and valid_json(body):
            # Valid JSON is required even of an answer with nothing to filter: a malformed one
            # is refused (fail closed), as a lenient client could read in it what a byte search
            # does not see (a UTF-16 text, which Python's json.loads accepts; unquoted names).
            if verdict == _CLEAN:
                return body
            subs = self.substitutions
            if all(p in subs for p in patterns):
                done = substitute(body, hay, [subs[p] for p in patterns])
                if done is not None:
                    if done[1] and counted is not None:
                        counted(done[1])
                    return done[0]
            spans = find_members(hay, [self.member_patterns[p] for p in patterns])
            if spans is not None:
                if spans and counted is not None:
                    counted(len(spans))
                return splice(body, spans, None if self.remove else self.mask_json) if spans else body
        # A number a double cannot hold (orjson reads 100000000000000000001 as 1e20, 1e400 as
        # inf): the stream, which keeps such numbers as their text when it writes an element back.
        # orjson refuses what the stream's scanner may accept (integers beyond 64 bits): the
        # stream decides, and raises StreamError when it is not JSON.
        doc: Any = _UNREAD
        if not _long_number(body):
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                pass
        if doc is _UNREAD:
            return self._rewrite_streamed(body)
        doc, count, members = self._walk(doc, self.values_possible(body))
        if count and counted is not None:
            counted(count)
        # Nothing filtered and no member dropped by the parse: the body as it came. orjson
        # writes numbers back as doubles (an integer beyond 64 bits, 1e21, a decimal of 17+
        # digits lose precision), so re-writing an unchanged answer would corrupt it; a 13-digit
        # timestamp is enough to send an answer down this path. But a member the parse dropped
        # as a duplicate name ({"a": {"password": 1}, "a": 2} parses to {"a": 2}) was never
        # checked: then the tree checked is the tree sent.
        if not count and _no_duplicate(body, members):
            return body
        try:
            return orjson.dumps(doc)
        except orjson.JSONEncodeError:
            # orjson reads 1,024 levels but writes 254: a deeper answer (`[[...{"pass\u0077ord":
            # 1}...]]`) is written by the stream, which goes level by level (and refuses what is
            # deeper than its limit); it was a 500
            return self._rewrite_streamed(body)

    def _rewrite_streamed(self, body: bytes) -> bytes:
        """A whole body through the stream (`JsonRewriter`): for what orjson cannot read or write
        back as it came."""
        stream = JsonRewriter(self, remove=self.remove, mask=self.mask)
        return stream.feed(body) + stream.finish()
