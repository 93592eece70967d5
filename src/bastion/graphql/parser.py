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

_TOKEN = re.compile(
    r"[\s,\ufeff]*(?:#[^\n\r]*[\s,\ufeff]*)*"  # ignored: white space, commas, comments
    r"(?:(?P<name>[_A-Za-z][_0-9A-Za-z]*)"  # the commonest tokens first
    r"|(?P<punct>[!$&()\:=@\[\]{|}])"
    r"|(?P<spread>\.\.\.)"
    r'|(?P<block>"""(?:\\"""|[^"]|"(?!""))*""")'
    r'|(?P<string>"(?:[^"\\\n\r]|\\(?:["\\/bfnrt]|u[0-9A-Fa-f]{4}|u\{[0-9A-Fa-f]{1,8}\}))*")'
    r"|(?P<float>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][+-]?[0-9]+)?|[eE][+-]?[0-9]+))(?![_A-Za-z.])"
    r"|(?P<int>-?(?:0|[1-9][0-9]*))(?![_A-Za-z.0-9])"
    r"|(?P<bad>.)"  # anything else: a syntax error
    r"|$)",
    re.DOTALL,
)


def tokenize(source: str, max_tokens: int) -> list[tuple[str, str]]:
    """Tokens as (kind, text); one regex match per token, white space folded into it."""
    tokens = [(m.lastgroup, m.group(m.lastgroup)) for m in _TOKEN.finditer(source) if m.lastgroup]
    if len(tokens) > max_tokens:
        raise TokenLimit(max_tokens)
    for kind, text in tokens:
        if kind == "bad":
            raise GraphQLSyntaxError(f"unexpected character {text!r}")
    return tokens


class TokenLimit(GraphQLSyntaxError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} tokens")
        self.limit = limit


class _Parser:
    __slots__ = ("t", "i", "directives")

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.t = tokens
        self.i = 0
        self.directives = 0

    def peek(self) -> tuple[str, str]:
        try:
            return self.t[self.i]
        except IndexError:
            return ("eof", "")

    def take(self) -> tuple[str, str]:
        try:
            tok = self.t[self.i]
        except IndexError:
            raise GraphQLSyntaxError("unexpected end of document") from None
        self.i += 1
        return tok

    def expect(self, value: str) -> None:
        tok = self.take()
        if tok[1] != value or tok[0] not in ("punct", "spread"):
            raise GraphQLSyntaxError(f"expected {value!r}, found {tok[1]!r}")

    def name(self) -> str:
        kind, value = self.take()
        if kind != "name":
            raise GraphQLSyntaxError(f"expected a name, found {value!r}")
        return value

    def at(self, value: str) -> bool:
        try:
            kind, v = self.t[self.i]
        except IndexError:
            return False
        return v == value and (kind == "punct" or kind == "spread")

    def document(self) -> Document:
        operations: list[Operation] = []
        fragments: dict[str, Fragment] = {}
        if not self.t:
            raise GraphQLSyntaxError("empty document")
        while self.peek()[0] != "eof":
            kind, value = self.peek()
            if kind == "punct" and value == "{":
                operations.append(Operation("query", None, {}, 0, self.selection_set()))
            elif kind == "name" and value in ("query", "mutation", "subscription"):
                operations.append(self.operation())
            elif kind == "name" and value == "fragment":
                frag = self.fragment()
                if frag.name in fragments:
                    raise GraphQLSyntaxError(f"fragment {frag.name} is defined twice")
                fragments[frag.name] = frag
            else:
                raise GraphQLSyntaxError(f"unexpected {value!r}: only operations and fragments may be sent")
        return Document(operations, fragments, len(self.t), self.directives)

    def operation(self) -> Operation:
        kind = self.take()[1]
        name = self.name() if self.peek()[0] == "name" else None
        defaults: dict[str, Any] = {}
        if self.at("("):
            self.take()
            while not self.at(")"):
                self.expect("$")
                var = self.name()
                self.expect(":")
                self.type_ref()
                if self.at("="):
                    self.take()
                    defaults[var] = self.value(const=True)
                self.directive_list()
            self.take()
        d = self.directive_list()
        return Operation(kind, name, defaults, d, self.selection_set())

    def type_ref(self) -> None:
        if self.at("["):
            self.take()
            self.type_ref()
            self.expect("]")
        else:
            self.name()
        if self.at("!"):
            self.take()

    def fragment(self) -> Fragment:
        self.take()  # fragment
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
        while self.at("@"):
            self.take()
            self.name()
            if self.at("("):
                self.arguments()
            count += 1
        self.directives += count
        return count

    def selection_set(self) -> list[Selection]:
        self.expect("{")
        out: list[Selection] = []
        t = self.t
        while True:
            try:
                kind, value = t[self.i]
            except IndexError:
                raise GraphQLSyntaxError("unexpected end of document") from None
            if kind == "punct" and value == "}":
                break
            if kind == "name":  # the common case: a field
                self.i += 1
                first = value
                alias = None
                if self.at(":"):
                    self.i += 1
                    alias, first = first, self.name()
                args = self.arguments() if self.at("(") else {}
                d = self.directive_list() if self.at("@") else 0
                subs = self.selection_set() if self.at("{") else []
                out.append(Field(first, alias, args, d, subs))
                continue
            if self.at("..."):
                self.take()
                kind, value = self.peek()
                if kind == "name" and value != "on":
                    name = self.name()
                    out.append(Spread(name, self.directive_list()))
                else:
                    cond = None
                    if kind == "name":  # on Type
                        self.take()
                        cond = self.name()
                    d = self.directive_list()
                    out.append(Inline(cond, d, self.selection_set()))
            else:
                first = self.name()
                alias = None
                if self.at(":"):
                    self.take()
                    alias, first = first, self.name()
                args = self.arguments() if self.at("(") else {}
                d = self.directive_list()
                subs = self.selection_set() if self.at("{") else []
                out.append(Field(first, alias, args, d, subs))
        self.take()
        if not out:
            raise GraphQLSyntaxError("empty selection set")
        return out

    def arguments(self) -> dict[str, Any]:
        self.expect("(")
        args: dict[str, Any] = {}
        while not self.at(")"):
            name = self.name()
            self.expect(":")
            args[name] = self.value(const=False)
        self.take()
        if not args:
            raise GraphQLSyntaxError("empty argument list")
        return args

    def value(self, const: bool) -> Any:
        kind, v = self.take()
        if kind == "punct":
            if v == "$" and not const:
                return Var(self.name())
            if v == "[":
                items = []
                while not self.at("]"):
                    items.append(self.value(const))
                self.take()
                return items
            if v == "{":
                obj = {}
                while not self.at("}"):
                    k = self.name()
                    self.expect(":")
                    obj[k] = self.value(const)
                self.take()
                return obj
            raise GraphQLSyntaxError(f"unexpected {v!r} in a value")
        if kind == "int":
            return int(v)
        if kind == "float":
            return float(v)
        if kind == "string":
            try:
                return string_value(v)
            except ValueError:
                raise GraphQLSyntaxError("invalid string") from None
        if kind == "block":
            return v[3:-3]
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(v, v)  # enums stay names
        raise GraphQLSyntaxError(f"unexpected {v!r}")


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
