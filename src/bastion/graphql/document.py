"""A light GraphQL document: just what the guard measures (operations, fragments, fields,
arguments, directives), built by the fast parser in `parser.py` or from a graphql-core AST."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Var:
    name: str


@dataclass(slots=True)
class Field:
    name: str
    alias: str | None
    args: dict[str, Any]  # literal values (python) or Var
    directives: int
    selections: list[Selection] = field(default_factory=list)


@dataclass(slots=True)
class Spread:
    name: str
    directives: int


@dataclass(slots=True)
class Inline:
    type_condition: str | None
    directives: int
    selections: list[Selection] = field(default_factory=list)


Selection = Field | Spread | Inline


@dataclass(slots=True)
class Operation:
    kind: str  # query | mutation | subscription
    name: str | None
    variable_defaults: dict[str, Any]
    directives: int
    selections: list[Selection]


@dataclass(slots=True)
class Fragment:
    name: str
    type_condition: str
    directives: int
    selections: list[Selection]


@dataclass(slots=True)
class Document:
    operations: list[Operation]
    fragments: dict[str, Fragment]
    tokens: int
    directives: int


class GraphQLSyntaxError(ValueError):
    pass
