"""Members of a JSON text removed or masked by name, on the bytes: no parse tree, no re-serialising.

For the response filter's commonest rewrite — an answer whose only filtered content is members
with given names, every one of them written as its plain bytes — parsing 100 KB into Python
objects, walking the tree in Python and writing it back cost about twice as much as finding the
members in the text and cutting them out (measured: docs/architecture.md, session 5,
`perf-filter`). No library rewrites JSON text in place (orjson, simdjson and msgspec parse to
objects, ijson to events), hence this module.

Why the bytes are enough (the caller must ensure every precondition; `member_spans` refuses with
None whatever it cannot prove, and the caller then filters the slow way):

- the text is valid JSON (validated beforehand), so an unescaped `"` always delimits a string;
- it holds no `\\u` escape, and the names need no escaping (printable ASCII without `"`, `\\`,
  `/`), so a member with such a name is written exactly as the name's bytes between quotes (any
  letter case: the search is on `text.lower()`, which keeps every offset);
- a needle `"name"` found with its opening quote not preceded by a backslash opens a string
  (after a closing quote only white space or `,:]}` may follow, never a letter), and that string
  ends at the needle's closing quote; it is a member name exactly when `:` follows;
- the member's value is a scalar (a string, number or literal) whose end a regular expression
  finds; a container value is refused (None).

A member is removed with one comma: the one after it, or, when it is the last of its object, the
one before it. Duplicate names are each removed, so a client that keeps the first of two
duplicates gets nothing filtered either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_WHITE = b" \t\n\r"
# a scalar value and the white space around it, in lowered text (so `E` is `e`)
_SCALAR = re.compile(rb'[ \t\n\r]*(?:"[^"\\]*(?:\\.[^"\\]*)*"|-?[0-9][-+0-9.e]*|true|false|null)[ \t\n\r]*', re.DOTALL)


def name_pattern(needle: bytes) -> re.Pattern[bytes]:
    """The member-name pattern for a needle `"name"` (lower case): the name, white space, `:`.
    It starts with a literal, so `re` searches for it with its fast literal scan."""
    return re.compile(re.escape(needle) + rb"[ \t\n\r]*:")


def member_pattern(needle: bytes) -> re.Pattern[bytes]:
    """`name_pattern` followed by `_SCALAR` as an optional group: one search finds a member and
    its value's end (`members`); the group is unmatched when the value is not a scalar."""
    return re.compile(name_pattern(needle).pattern + b"(" + _SCALAR.pattern + b")?", re.DOTALL)


def find_members(hay: bytes, patterns: Iterable[re.Pattern[bytes]]) -> list[tuple[int, int, int]] | None:
    """`member_spans` with patterns from `member_pattern`: the same spans, or None in the same
    cases, with one regular-expression search per member instead of a search and a match."""
    spans = []
    size = len(hay)
    for pattern in patterns:
        for m in pattern.finditer(hay):
            start, value = m.span(1)
            if start < 0:
                return None  # a container (or, impossible in valid JSON, something else)
            name = m.start()
            if name and hay[name - 1] == 0x5C:  # a backslash: the quote may be escaped
                return None
            if value >= size or hay[value] not in b",}":
                return None
            spans.append((name, start, value))
    spans.sort()
    return spans


def member_spans(hay: bytes, patterns: Iterable[re.Pattern[bytes]]) -> list[tuple[int, int, int]] | None:
    """For each member named by one of `patterns` (from `name_pattern`) in `hay` (the lowered
    text): (start of its name, start of its value, end of its value and the white space after).
    Sorted. None when one of them cannot be proven from the bytes: a backslash before the
    opening quote, or a value that is not a scalar."""
    spans = []
    match = _SCALAR.match
    for pattern in patterns:
        for m in pattern.finditer(hay):
            start = m.start()
            if start and hay[start - 1] == 0x5C:  # a backslash: the quote may be escaped
                return None
            v = match(hay, m.end())
            if v is None or v.end() >= len(hay) or hay[v.end()] not in b",}":
                return None  # a container (or, impossible in valid JSON, something else)
            spans.append((start, m.end(), v.end()))
    spans.sort()
    return spans


def splice(text: bytes, spans: list[tuple[int, int, int]], mask: bytes | None) -> bytes:
    """`text` with the members at `spans` removed (`mask` None) or their values replaced by
    `mask` (JSON text)."""
    out: list[bytes] = []
    last = 0
    if mask is not None:
        for _, value, end in spans:
            out.append(text[last:value])
            out.append(mask)
            last = end
        out.append(text[last:])
        return b"".join(out)
    for name, _, end in spans:
        out.append(text[last:name])
        if text[end] == 0x2C:  # ",": the comma after the member goes with it
            last = end + 1
            continue
        last = end  # the last member of its object: the comma before it goes, if there is one
        while out and not out[-1].strip(_WHITE):
            out.pop()  # only white space between this member and an earlier one removed
        if out:
            piece = out[-1].rstrip(_WHITE)
            if piece.endswith(b","):
                out[-1] = piece[:-1]
    out.append(text[last:])
    return b"".join(out)


# ---- the same members removed or masked by one `re.subn` per name (`substitute`) ---------------

_W = rb"[ \t\n\r]*+"
# a scalar value in the text as it came (not lowered: `E` in numbers; literals are lower case)
_RAW_SCALAR = rb'(?:"[^"\\]*+(?:\\.[^"\\]*+)*+"|-?[0-9][-+0-9.eE]*+|true|false|null)'
# names `substitute` takes: nothing JSON's structure is made of, so `"name"` cannot begin or end
# inside another needle or at a string's closing quote
SUBSTITUTABLE = re.compile(rb'"[a-z0-9_.$@-]+"')


def substitution(needle: bytes, mask: bytes | None) -> tuple[bytes, re.Pattern[bytes], bytes]:
    """For `substitute`: the needle `"name"` (lower case, `SUBSTITUTABLE`), the pattern of one
    member with that name written exactly so and a scalar value, and its replacement. Removal
    takes the member with the comma after it (the last member of an object, with no comma after
    it, is not matched: `substitute` then declines); masking keeps the name and writes `mask`.
    Both patterns start with the needle, a literal, so `re` finds them with its literal scan."""
    member = re.escape(needle) + _W + b":" + _W + _RAW_SCALAR + _W
    if mask is None:
        return needle, re.compile(member + b",", re.DOTALL), b""
    return needle, re.compile(member + b"(?=[,}])", re.DOTALL), (needle + b":" + mask).replace(b"\\", b"\\\\")


def substitute(
    text: bytes, hay: bytes, substitutions: Iterable[tuple[bytes, re.Pattern[bytes], bytes]]
) -> tuple[bytes, int] | None:
    """`text` with every member named by `substitutions` (from `substitution`) removed or masked,
    and how many; None when that cannot be proven, and then nothing was changed. The same
    preconditions as `find_members` (valid JSON without `\\u`, `hay` = `text.lower()`); the
    proof is a count: every occurrence of the needle in `hay` (any letter case, as a name or
    not) must have been replaced, and none may follow a backslash. A member matched is whole (a
    valid JSON scalar matched up to white space and `,` or `}` is the whole value), and its needle
    opens a string and is a name (the reasoning in this module's docstring); an occurrence left
    over — another case, a value `"password"`, the last member of an object when removing, a
    container value — makes the counts differ."""
    total = 0
    for needle, pattern, replacement in substitutions:
        expected = hay.count(needle)
        if hay.count(b"\\" + needle):
            return None
        text, n = pattern.subn(replacement, text)
        if n != expected:
            return None
        total += n
    return text, total
