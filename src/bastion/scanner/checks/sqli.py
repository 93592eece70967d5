"""SQL injection signalled by behaviour alone (no SQL error text needed), in path, query and JSON
body parameters, string and numeric contexts. Every signal is a differential against controls:

- error differential, string context: `v'` answers 5xx while `v` and the benign `v''` (a quote
  that SQL reads as a literal quote) do not — so "any odd input gives 500" is ruled out;
- error differential, numeric context: `v'` answers 5xx while `v-0` (the same number to SQL, an
  odd string to anything else) answers exactly like `v`;
- boolean differential, string context: `x' OR 'a' LIKE 'a` answers differently (more rows, or
  found instead of not found) from a plain value that matches nothing, while its false twin
  `x' OR 'a' LIKE 'b` answers exactly like that plain value (the pair works inside `= '…'` and
  `LIKE '%…%'`); confirmed by a second, comment-terminated pair;
- boolean differential, numeric context: `v AND 1=1` answers like `v`, `v AND 1=2` does not.

The probing (`Prober`) is shared with the GraphQL argument check. No library does differential
SQLi detection as a reusable piece (sqlmap is a CLI with its own engine), hence hand-written; the
probes only read (no stacked queries, no sleeps, nothing that writes)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from bastion.scanner.context import items_of, sample
from bastion.scanner.model import Finding

IDS = ("api8-sqli",)
MAX_TARGETS = 14
FIX = "routes:\n  - {openapi: spec.yaml, upstream: api}   # types and patterns enforced\npolicies:\n  waf: {}"
LOGINISH = re.compile(r"(login|signin|sign-in|auth|session|token)", re.I)


@dataclass
class Answer:
    status: int
    body: bytes
    doc: Any = None

    @property
    def shape(self) -> tuple:
        """What a differential compares: the status and how many items (or, for a non-list
        answer, the length rounded to 32 bytes, so timestamps and ids do not make noise)."""
        doc = self.doc
        if isinstance(doc, (list, dict)):
            items = items_of(doc)
            if isinstance(doc, list) or (isinstance(doc, dict) and items is not None and items != [doc]):
                return self.status, "n", len(items)
        return self.status, "b", len(self.body) // 32


Send = Callable[[str], Awaitable[Answer]]


# A throttled answer (429, or 503: an overloaded or limiting server) says nothing about the value
# sent: a differential that compared one with a real answer reported injection on a hardened API
# behind a rate limit (the limit's 429s fell on the plain value and the false twin, not on the
# true one). So such an answer is asked again after a pause, and if the server still throttles,
# the differential is given up (no finding), never decided on it.
THROTTLED = (429, 503)
PAUSES = (1.0, 2.0)  # seconds before each retry of a throttled answer (a per-second limit's window)


class Prober:
    """Runs the differentials for one parameter through `send(value)`."""

    def __init__(self, send: Send, pause: Callable[[float], Awaitable[None]] | None = None) -> None:
        self._send = send
        self._pause = pause or asyncio.sleep

    async def send(self, v: str) -> Answer:
        """`v`'s answer, asked again after a pause while it is throttled; raises `Throttled`
        when the server still throttles (the differential in progress is given up)."""
        answer = await self._send(v)
        for pause in PAUSES:
            if answer.status not in THROTTLED:
                return answer
            await self._pause(pause)
            answer = await self._send(v)
        if answer.status in THROTTLED:
            raise Throttled()
        return answer

    async def error_string(self, v: str) -> str | None:
        base = await self.send(v)
        if base.status >= 500 or base.status == 0:
            return None
        q = await self.send(v + "'")
        if q.status < 500:
            return None
        c = await self.send(v + "''")
        if c.status < 500:
            return (
                f"{v!r} → HTTP {base.status}, {v + chr(39)!r} → HTTP {q.status}, {v + chr(39) * 2!r} → HTTP {c.status}"
            )
        return None

    async def error_numeric(self, v: str) -> str | None:
        base = await self.send(v)
        if not 200 <= base.status < 300:
            return None
        q = await self.send(v + "'")
        if q.status < 500:
            return None
        c = await self.send(f"{v}-0")
        if c.shape == base.shape:
            return (
                f"{v!r} → HTTP {base.status}, {v + chr(39)!r} → HTTP {q.status}, '{v}-0' → HTTP {c.status} like {v!r}"
            )
        return None

    async def boolean_string(self) -> str | None:
        x = "zq" + secrets.token_hex(3)
        plain = await self.send(x)
        if plain.status >= 500 or plain.status == 0:
            return None
        for t, f in ((f"{x}' OR 'a' LIKE 'a", f"{x}' OR 'a' LIKE 'b"), (f"{x}' OR 1=1 -- ", f"{x}' OR 1=2 -- ")):
            yes = await self.send(t)
            if yes.shape == plain.shape or not 200 <= yes.status < 300:
                return None
            no = await self.send(f)
            if no.shape != plain.shape:
                return None
        return (
            f"{t!r} → {_describe(yes)}, its false twin and the non-matching {x!r} → {_describe(plain)} "
            "(two true/false pairs)"
        )

    async def boolean_numeric(self, v: str) -> str | None:
        base = await self.send(v)
        if not 200 <= base.status < 300:
            return None
        yes = await self.send(f"{v} AND 1=1")
        if yes.shape != base.shape:
            return None
        no = await self.send(f"{v} AND 1=2")
        if no.shape != base.shape and no.status < 500:
            return f"'{v} AND 1=1' → {_describe(yes)} like {v!r}; '{v} AND 1=2' → {_describe(no)}"
        return None

    async def run(self, v: str, numeric: bool) -> str | None:
        try:
            if numeric:
                return await self.error_numeric(v) or await self.boolean_numeric(v)
            return await self.error_string(v) or await self.boolean_string()
        except Throttled:
            return None


class Throttled(Exception):
    """The server kept answering 429/503 to a probe: no differential can be read from it."""


def _describe(a: Answer) -> str:
    kind = a.shape
    return f"HTTP {a.status}" + (f", {kind[2]} items" if kind[1] == "n" else f", {len(a.body)} bytes")


def _numeric(schema: dict | None, value: str) -> bool:
    t = (schema or {}).get("type")
    return t in ("integer", "number") or (t is None and value.isdigit())


async def _targets(ctx) -> list[tuple]:
    out: list[tuple] = []
    for op in ctx.ops:
        if op.method == "GET":
            for p in op.params:
                if p.get("in") == "query":
                    schema = p.get("schema") or {}
                    out.append(
                        (op, "query", p["name"], "1" if _numeric(schema, "x") else "scan", _numeric(schema, "x"))
                    )
            if len(op.path_params) == 1:
                name = op.path_params[0]
                schema = next((p.get("schema") for p in op.params if p.get("name") == name), None) or {}
                values = await ctx.values_for(op, name)
                v = values[0] if values else "1"
                out.append((op, "path", name, v, _numeric(schema, v)))
        elif (
            op.method == "POST"
            and op.body_schema
            and not op.path_params
            and (LOGINISH.search(op.path) or ctx.allow_destructive)
        ):
            props = op.body_schema.get("properties") or {}
            for name, schema in list(props.items())[:4]:
                if (
                    isinstance(schema, dict)
                    and schema.get("type", "string") == "string"
                    and schema.get("format") not in ("uri", "url", "binary")
                ):
                    out.append((op, "body", name, "scan", False))
    return out[:MAX_TARGETS]


async def run(ctx) -> list[Finding]:
    out: list[Finding] = []
    a = ctx.a
    for op, where, name, value, numeric in await _targets(ctx):
        last: dict[str, Any] = {}

        async def send(v: str, op=op, where=where, name=name, last=last) -> Answer:
            if where == "path":
                r = await ctx.send(op, a, value=quote(v, safe=""))
            elif where == "query":
                r = await ctx.send(op, a, params={name: v})
            else:
                body = sample(op.body_schema)
                body = {**(body if isinstance(body, dict) else {}), name: v}
                r = await ctx.send(op, a, json=body)
            last["r"] = r
            return Answer(r.status, r.body, r.json())

        evidence = await Prober(send).run(value, numeric)
        if evidence:
            r = last["r"]
            url = ctx.client.url(ctx.fill(op, quote(value + "'", safe="") if where == "path" else None))
            out.append(
                Finding(
                    "api8-sqli",
                    "SQL injection (the answers follow injected SQL)",
                    "API8",
                    89,
                    "critical",
                    "firm",
                    op.method,
                    url,
                    f"{where} parameter {name!r} ({'numeric' if numeric else 'string'} context): {evidence}",
                    "Use parameterised queries (placeholders) everywhere; validate input against the spec.",
                    FIX,
                    request_headers=ctx.auth(a),
                    request_body=r.request_body,
                )
            )
    return out
