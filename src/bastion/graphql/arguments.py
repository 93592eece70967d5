"""The literal argument values of a GraphQL document, each with a dotted name, for the policies
that inspect API inputs (the WAF, the SSRF guard) rather than GraphQL syntax.

Names: a field's argument is `field.arg` (the field's name, never its alias, so `a: pastes(...)`
is still `pastes.filter`); an input object's members and a list's items extend it
(`pastes.filter.title`, `pastes.ids.0`); a variable's default value is `variables.name`; a
directive's argument is `@directive.arg`. Fields inside fragments and inline fragments are
walked too (each fragment definition once, not once per spread). Arguments whose value is a
variable are not literals: the variables' values are the caller's to add.

The document is read by the guard's own fast parser (`bastion.graphql.parser`), so both policies
read the same operations. That parser counts directives but keeps none of their arguments, so a
document with a directive that takes arguments is also read by graphql-core for those.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bastion.graphql.document import Document, Field, Inline, Selection, Var
from bastion.graphql.parser import parse
from graphql.pyutils import Undefined

Scalar = str | int | float | bool | None


def leaves(prefix: str, value: Any) -> Iterator[tuple[str, Scalar]]:
    """Every scalar leaf of a JSON-like value (dicts, lists, scalars) with its dotted name:
    `prefix.key`, `prefix.0`; the prefix alone for a scalar. Iterative, so no nesting depth
    can exhaust the stack. A GraphQL variable reference (`Var`) is not a leaf."""
    stack: list[tuple[str, Any]] = [(prefix, value)]
    while stack:
        name, v = stack.pop()
        if isinstance(v, dict):
            stack.extend((f"{name}.{k}" if name else str(k), x) for k, x in reversed(list(v.items())))
        elif isinstance(v, list):
            stack.extend((f"{name}.{i}" if name else str(i), x) for i, x in reversed(list(enumerate(v))))
        elif isinstance(v, Var) or v is Undefined:
            continue
        elif v is None or isinstance(v, (str, int, float, bool)):
            yield name, v
        else:  # anything else a decoder might hand over: its text
            yield name, str(v)


def _selections(selections: list[Selection]) -> Iterator[tuple[str, Scalar]]:
    stack = list(reversed(selections))
    while stack:
        s = stack.pop()
        if type(s) is Field:
            for arg, value in s.args.items():
                yield from leaves(f"{s.name}.{arg}", value)
            stack.extend(reversed(s.selections))
        elif type(s) is Inline:
            stack.extend(reversed(s.selections))


def document_arguments(doc: Document, text: str = "") -> list[tuple[str, Scalar]]:
    """The literal arguments of every operation and fragment of `doc` (see the module's doc);
    `text` is the document's source, read again only for directive arguments."""
    out: list[tuple[str, Scalar]] = []
    for op in doc.operations:
        for var, default in op.variable_defaults.items():
            out.extend(leaves(f"variables.{var}", default))
        out.extend(_selections(op.selections))
    for frag in doc.fragments.values():
        out.extend(_selections(frag.selections))
    if doc.directives and text:
        out.extend(directive_arguments(text))
    return out


def variable_uses(doc: Document) -> dict[str, list[str]]:
    """Where each variable is used as a field's argument (or inside one: an input object's
    member, a list item): `{"h": ["importPaste.host"]}` for `importPaste(host: $h)`. A variable's
    own name is the client's choice; the argument it binds to is the API's (the SSRF guard
    judges the value by that name)."""
    uses: dict[str, list[str]] = {}
    selections = [s for op in doc.operations for s in op.selections]
    selections += [s for frag in doc.fragments.values() for s in frag.selections]
    stack: list[Selection] = selections
    while stack:
        s = stack.pop()
        if type(s) is Field:
            values: list[tuple[str, Any]] = [(f"{s.name}.{arg}", v) for arg, v in s.args.items()]
            while values:
                name, v = values.pop()
                if isinstance(v, Var):
                    uses.setdefault(v.name, []).append(name)
                elif isinstance(v, dict):
                    values.extend((f"{name}.{k}", x) for k, x in v.items())
                elif isinstance(v, list):
                    values.extend((f"{name}.{i}", x) for i, x in enumerate(v))
            stack.extend(s.selections)
        elif type(s) is Inline:
            stack.extend(s.selections)
    return uses


def directive_arguments(text: str) -> list[tuple[str, Scalar]]:
    """The literal arguments of every directive in `text`, read by graphql-core
    (`@name.arg`); [] when graphql-core cannot parse it."""
    from graphql import GraphQLError, Node, value_from_ast_untyped
    from graphql import parse as core_parse
    from graphql.language import DirectiveNode

    try:
        ast = core_parse(text, no_location=True, max_tokens=50_000)
    except (GraphQLError, RecursionError):
        return []
    out: list[tuple[str, Scalar]] = []
    stack: list[Any] = [ast]
    while stack:
        n = stack.pop()
        if isinstance(n, DirectiveNode):
            for a in n.arguments or ():
                try:
                    value = value_from_ast_untyped(a.value)  # variables: Undefined, skipped
                except (GraphQLError, RecursionError, ValueError):
                    continue
                out.extend(leaves(f"@{n.name.value}.{a.name.value}", value))
            continue
        for key in getattr(n, "keys", ()):
            v = getattr(n, key, None)
            if isinstance(v, Node):
                stack.append(v)
            elif isinstance(v, (list, tuple)):
                stack.extend(x for x in v if isinstance(x, Node))
    return out


def graphql_arguments(text: str, *, max_tokens: int = 50_000) -> list[tuple[str, Scalar]]:
    """Parse `text` and return its literal arguments; raises `GraphQLSyntaxError` (and
    `TokenLimit`) when the guard's parser cannot read it."""
    return document_arguments(parse(text, max_tokens=max_tokens), text)
