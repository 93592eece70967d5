"""A fast GraphQL parser that builds only the light `Document` the guard needs.

Why by hand: the guard must measure every query before it is forwarded, and graphql-core's
`parse` (a full AST with locations) costs far more than the measuring itself (bench/graphql_guard.py).
The lexer is one compiled regex; the parser is recursive descent over the executable subset of
the grammar (operations and fragments; type-system definitions are refused, as an executor
would). Anything it does not understand is a syntax error — the guard fails closed — and a
differential test checks it against graphql-core on a corpus of documents.
"""

from __future__ import annotations

import json
import re
from typing import Any

from bastion.graphql.document import (
    Document,
    Field,
    Fragment,
    GraphQLSyntaxError,
    Inline,
    Operation,
    Selection,
    Spread,
    Var,
)

_TOKEN_FORMS = (
    r"[_A-Za-z][_0-9A-Za-z]*"  # names: the commonest tokens first
    r"|[!$&()\:=@\[\]{|}]"
    r"|\.\.\."
    r'|"""(?:\\"""|[^"\\\ud800-\udfff]|\\(?!""")|"(?!""))*"""'  # `\"""` is always an escape
    r'|(?!""")"(?:[^"\\\n\r\ud800-\udfff]|\\(?:["\\/bfnrt]|u[0-9A-Fa-f]{4}|u\{[0-9A-Fa-f]{1,8}\}))*"'  # `"""` always opens a block string
    r"|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+)?(?![_A-Za-z.0-9])"
)
# One group, so `findall` returns the token texts themselves (no match objects): white space,
# commas and comments are folded into the next token's match. Where no token form matches, the
# last alternative swallows the rest of the document as one token; that token fails the strict
# check below (no form can match there), so it is a syntax error. The empty matches at the end
# (`$`, after trailing white space) are dropped.
_TOKEN = re.compile(r"[ \t\n\r,\ufeff]*(?:#[^\n\r]*[ \t\n\r,\ufeff]*)*(" + _TOKEN_FORMS + r"|[\s\S]+|$)")
_STRICT = re.compile(_TOKEN_FORMS)
_PUNCT = frozenset("!$&():=@[]{|}") | {"..."}
_NAME_START = frozenset("_ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_NUMBER_START = frozenset("-0123456789")
_CONSTANTS = {"true": True, "false": False, "null": None}
_FIELD_MORE = frozenset("(@{")  # after a field's name: arguments, directives or a selection set


def tokenize(source: str, max_tokens: int) -> list[str]:
    """The token texts; a token's kind is its first character (name, punctuator, string,
    number). Raises TokenLimit or GraphQLSyntaxError."""
    tokens = _TOKEN.findall(source)
    while tokens and not tokens[-1]:  # the empty match(es) at the end
        tokens.pop()
    if len(tokens) > max_tokens:
        raise TokenLimit(max_tokens)
    if tokens:
        last = tokens[-1]
        if _STRICT.fullmatch(last) is None:
            raise GraphQLSyntaxError(f"unexpected character {last[0]!r}")
    return tokens


class TokenLimit(GraphQLSyntaxError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} tokens")
        self.limit = limit


class _Parser:
    """Recursive descent over the token texts, with an end marker (`None`) so that looking
    ahead never needs a bounds check."""

    __slots__ = ("t", "i", "directives", "count")

    def __init__(self, tokens: list[str]) -> None:
        self.count = len(tokens)
        self.t: list[str | None] = [*tokens, None]
        self.i = 0
        self.directives = 0

    def take(self) -> str:
        tok = self.t[self.i]
        if tok is None:
            raise GraphQLSyntaxError("unexpected end of document")
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        tok = self.t[self.i]
        if tok != value:
            raise GraphQLSyntaxError(f"expected {value!r}, found {tok or 'the end'!r}")
        self.i += 1

    def name(self) -> str:
        tok = self.t[self.i]
        if tok is None or tok[0] not in _NAME_START:
            raise GraphQLSyntaxError(f"expected a name, found {tok or 'the end'!r}")
        self.i += 1
        return tok

    def document(self) -> Document:
        operations: list[Operation] = []
        fragments: dict[str, Fragment] = {}
        if not self.count:
            raise GraphQLSyntaxError("empty document")
        while (tok := self.t[self.i]) is not None:
            if tok == "{":
                operations.append(Operation("query", None, {}, 0, self.selection_set()))
            elif tok in ("query", "mutation", "subscription"):
                operations.append(self.operation())
            elif tok == "fragment":
                frag = self.fragment()
                if frag.name in fragments:
                    raise GraphQLSyntaxError(f"fragment {frag.name} is defined twice")
                fragments[frag.name] = frag
            else:
                raise GraphQLSyntaxError(f"unexpected {tok!r}: only operations and fragments may be sent")
        return Document(operations, fragments, self.count, self.directives)

    def operation(self) -> Operation:
        kind = self.take()
        tok = self.t[self.i]
        name = self.name() if tok is not None and tok[0] in _NAME_START else None
        defaults: dict[str, Any] = {}
        if self.t[self.i] == "(":
            self.i += 1
            while self.t[self.i] != ")":
                self.expect("$")
                var = self.name()
                self.expect(":")
                self.type_ref()
                if self.t[self.i] == "=":
                    self.i += 1
                    defaults[var] = self.value(const=True)
                self.directive_list()
            self.i += 1
        d = self.directive_list()
        return Operation(kind, name, defaults, d, self.selection_set())

    def type_ref(self) -> None:
        if self.t[self.i] == "[":
            self.i += 1
            self.type_ref()
            self.expect("]")
        else:
            self.name()
        if self.t[self.i] == "!":
            self.i += 1

    def fragment(self) -> Fragment:
        self.i += 1  # fragment
        name = self.name()
        if name == "on":
            raise GraphQLSyntaxError("a fragment cannot be named 'on'")
        if self.name() != "on":
            raise GraphQLSyntaxError("expected 'on'")
        cond = self.name()
        d = self.directive_list()
        return Fragment(name, cond, d, self.selection_set())

    def directive_list(self) -> int:
        count = 0
        while self.t[self.i] == "@":
            self.i += 1
            self.name()
            if self.t[self.i] == "(":
                self.arguments()
            count += 1
        self.directives += count
        return count

    def selection_set(self) -> list[Selection]:
        """The hot loop: a field is usually one name token followed by a name or `}`. The
        position is a local here and is written back to `self.i` around every call."""
        t = self.t
        i = self.i
        if t[i] != "{":
            raise GraphQLSyntaxError(f"expected '{{', found {t[i] or 'the end'!r}")
        i += 1
        out: list[Selection] = []
        while True:
            tok = t[i]
            if tok is None:
                raise GraphQLSyntaxError("unexpected end of document")
            if tok == "}":
                break
            if tok[0] in _NAME_START:  # a field
                i += 1
                nxt = t[i]
                alias = None
                if nxt == ":":
                    alias, tok = tok, t[i + 1]
                    if tok is None or tok[0] not in _NAME_START:
                        raise GraphQLSyntaxError(f"expected a name, found {tok or 'the end'!r}")
                    i += 2
                    nxt = t[i]
                if nxt in _FIELD_MORE:
                    self.i = i
                    args = self.arguments() if nxt == "(" else {}
                    d = self.directive_list() if t[self.i] == "@" else 0
                    subs = self.selection_set() if t[self.i] == "{" else []
                    i = self.i
                    out.append(Field(tok, alias, args, d, subs))
                else:
                    out.append(Field(tok, alias, {}, 0, []))
                continue
            if tok != "...":
                raise GraphQLSyntaxError(f"expected a field or a fragment, found {tok!r}")
            i += 1
            nxt = t[i]
            if nxt is not None and nxt[0] in _NAME_START and nxt != "on":
                self.i = i + 1
                out.append(Spread(nxt, self.directive_list()))
            else:
                cond = None
                self.i = i
                if nxt == "on":
                    self.i += 1
                    cond = self.name()
                d = self.directive_list()
                out.append(Inline(cond, d, self.selection_set()))
            i = self.i
        self.i = i + 1
        if not out:
            raise GraphQLSyntaxError("empty selection set")
        return out

    def arguments(self) -> dict[str, Any]:
        self.expect("(")
        args: dict[str, Any] = {}
        while self.t[self.i] != ")":
            name = self.name()
            self.expect(":")
            args[name] = self.value(const=False)
        self.i += 1
        if not args:
            raise GraphQLSyntaxError("empty argument list")
        return args

    def value(self, const: bool) -> Any:
        v = self.take()
        first = v[0]
        if first in _NAME_START:
            return _CONSTANTS.get(v, v)  # enums stay names
        if first == '"':
            if v.startswith('"""'):
                return v[3:-3]
            try:
                return string_value(v)
            except ValueError:
                raise GraphQLSyntaxError("invalid string") from None
        if first in _NUMBER_START:
            return int(v) if v.lstrip("-").isdigit() else float(v)
        if v == "$" and not const:
            return Var(self.name())
        if v == "[":
            items = []
            while self.t[self.i] != "]":
                items.append(self.value(const))
            self.i += 1
            return items
        if v == "{":
            obj = {}
            while self.t[self.i] != "}":
                k = self.name()
                self.expect(":")
                obj[k] = self.value(const)
            self.i += 1
            return obj
        raise GraphQLSyntaxError(f"unexpected {v!r} in a value")


_BRACED = re.compile(r"\\u\{([0-9A-Fa-f]{1,8})\}|\\.")


def _braced(m: re.Match[str]) -> str:
    """A `\\u{1F600}` escape (GraphQL, October 2021; graphql-core reads it) as JSON's `\\uXXXX`
    (a surrogate pair above U+FFFF); other escapes as they are."""
    if m.group(1) is None:
        return m.group(0)
    cp = int(m.group(1), 16)
    if cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF:
        raise ValueError("not a Unicode scalar value")
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    cp -= 0x10000
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"


def string_value(token: str) -> Any:
    """The value of a GraphQL string token (with its quotes); ValueError when it is none.
    Control characters are allowed in it, as graphql-core allows them (JSON does not)."""
    return json.loads(_BRACED.sub(_braced, token) if "\\u{" in token else token, strict=False)


def parse(source: str, *, max_tokens: int = 10_000) -> Document:
    return _Parser(tokenize(source, max_tokens)).document()
