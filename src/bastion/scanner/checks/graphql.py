"""GraphQL: introspection, field suggestions, exposed IDEs, depth through type cycles, aliases,
batching, field duplication, mutations over GET, internal details in errors, resource-intensive
fields, and argument-level bugs found from the schema: SQL injection (the differentials of
checks/sqli.py), SSRF (the loopback canary), OS command injection (an arithmetic echo marker and
a time delay, both harmless), stored XSS (HTML sent in a mutation, read back unescaped) and
unthrottled password arguments.

The schema comes from introspection; without it, root fields and relations are probed from a
short list of common names."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any
from urllib.parse import quote

import orjson

from bastion.scanner.checks.sqli import Answer, Prober
from bastion.scanner.model import Finding

IDS = (
    "graphql-introspection",
    "graphql-suggestions",
    "graphql-ide",
    "graphql-depth",
    "graphql-aliases",
    "graphql-batching",
    "graphql-field-duplication",
    "graphql-mutation-get",
    "graphql-debug",
    "graphql-resource",
    "graphql-sqli",
    "graphql-ssrf",
    "graphql-cmdi",
    "graphql-xss",
    "graphql-bruteforce",
    "graphql-enumeration",
    "graphql-bola",
    "graphql-path-traversal",
    "graphql-code-bruteforce",
    "graphql-operator-injection",
)
FIX = "policies:\n  graphql: {introspection: false, suggestions: false, max_depth: 8, max_aliases: 10, batching: false}"
INTROSPECT = """query { __schema { queryType { name } mutationType { name } types { name kind fields {
  name args { name type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }
  type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }"""
IDE_PATHS = (
    "",
    "/graphiql",
    "/playground",
    "/graphql/playground",
    "/altair",
    "/voyager",
    "/graphql/console",
    "/graphql-playground",
    "/console",
)
IDE_MARK = re.compile(
    r"(graphiql|graphql playground|graphql-playground|altair|graphql voyager|voyager\.(css|js)|"
    r"apollo sandbox|embeddable-sandbox)",
    re.I,
)
INTERNAL = re.compile(
    r"(Traceback \(most recent call last\)|stacktrace|File \"[^\"]+\", line \d+|"
    r"at [\w.$<>]+ \([^)]*:\d+:\d+\)|\.(py|js|ts|rb|php|java|go):\d+|/(usr|srv|app|home|var|opt)/"
    r"[\w./-]+|SQLSTATE|sqlite3?\.|psycopg|OperationalError|SELECT .+ FROM |syntax error at or near)",
    re.I,
)
URLISH = re.compile(r"(url|uri|link|href|callback|webhook|endpoint|feed|source|src|image|remote)", re.I)
HOSTISH = re.compile(r"^(host|hostname|ip|addr|address|server|domain|target)$", re.I)
CMDISH = re.compile(r"(host|ip|addr|domain|cmd|command|exec|run|ping|target|file|path|dir|arg|option|param)", re.I)
SIGNUPISH = re.compile(r"(regist|sign_?up|create|new|invite|join|enrol)", re.I)
LOGINISH = re.compile(r"(log_?in|sign_?in|auth|token|session|verify)", re.I)
PASSWORDISH = ("password", "passwd", "pass", "pwd", "pin", "otp")
USERNAMEISH = ("username", "user", "email", "login", "name")
PATHISH = re.compile(r"(name|file|path|asset|doc|template|page|attachment|resource|folder|dir)", re.I)
FETCHED = re.compile(r"(status code \d{3}|\b[45]\d\d (not found|forbidden)|ECONNREFUSED|Directory listing)", re.I)
BUILTIN_SCALARS = ("String", "Int", "Float", "Boolean", "ID")
KEY_WORDS = ("username", "user", "email", "login", "password", "token", "code", "pin", "otp", "id", "name")
CODEISH = re.compile(r"(token|code|pin|otp)", re.I)
CREATEISH = re.compile(r"(create|add|new|post|save|update|edit|upload|import|comment|write|submit)", re.I)
COMMON_ROOTS = (
    "users",
    "user",
    "me",
    "viewer",
    "posts",
    "pastes",
    "items",
    "products",
    "orders",
    "nodes",
    "accounts",
    "articles",
    "comments",
    "books",
    "authors",
)
COMMON_RELATIONS = (
    "friends",
    "owner",
    "author",
    "user",
    "users",
    "posts",
    "pastes",
    "items",
    "children",
    "parent",
    "comments",
    "followers",
    "following",
    "members",
    "orders",
)


def unwrap(t: dict | None) -> tuple[str | None, str | None, bool, bool]:
    """(kind, name, is_list, non_null at the top) of a type reference."""
    non_null = t is not None and t.get("kind") == "NON_NULL"
    is_list = False
    while t and t.get("kind") in ("NON_NULL", "LIST"):
        is_list = is_list or t["kind"] == "LIST"
        t = t.get("ofType")
    return (t or {}).get("kind"), (t or {}).get("name"), is_list, non_null


class Schema:
    def __init__(self, doc: dict) -> None:
        s = doc["data"]["__schema"]
        self.types = {t["name"]: t for t in s["types"] if t.get("name")}
        self.query = (s.get("queryType") or {}).get("name")
        self.mutation = (s.get("mutationType") or {}).get("name")

    def fields(self, type_name: str | None) -> list[dict]:
        return [
            f for f in (self.types.get(type_name or "") or {}).get("fields") or [] if not f["name"].startswith("__")
        ]

    def required_args(self, field: dict) -> list[dict]:
        return [a for a in field.get("args") or [] if unwrap(a["type"])[3]]

    def leaf(self, type_name: str | None) -> str:
        """A selection for an object type: its scalar fields without required arguments (≤ 6)."""
        names = [
            f["name"]
            for f in self.fields(type_name)
            if unwrap(f["type"])[0] in ("SCALAR", "ENUM") and not self.required_args(f)
        ]
        return " ".join(names[:6]) or "__typename"

    def cycle(self) -> tuple[str, list[str]] | None:
        """A root field without required arguments and a list of relation field names leading from
        its type back to a type already on the path (a cycle a query can repeat)."""
        for root in self.fields(self.query):
            kind, start, _, _ = unwrap(root["type"])
            if kind != "OBJECT" or self.required_args(root):
                continue
            path: list[tuple[str, str | None]] = []  # (field, the type it leads to)
            seen = {start: 0}
            t = start
            for _ in range(6):
                nxt = next(
                    (
                        (f["name"], unwrap(f["type"])[1])
                        for f in self.fields(t)
                        if unwrap(f["type"])[0] == "OBJECT"
                        and not self.required_args(f)
                        and unwrap(f["type"])[1] in seen
                    ),
                    None,
                )
                if nxt is None:
                    nxt = next(
                        (
                            (f["name"], unwrap(f["type"])[1])
                            for f in self.fields(t)
                            if unwrap(f["type"])[0] == "OBJECT" and not self.required_args(f)
                        ),
                        None,
                    )
                if nxt is None:
                    break
                path.append(nxt)
                if nxt[1] in seen:
                    loop = [n for n, _ in path[seen[nxt[1]] :]]
                    return root["name"], [n for n, _ in path[: seen[nxt[1]]]] + loop
                seen[nxt[1]] = len(path)
                t = nxt[1]
        return None

    def calls(self, kinds: tuple[str, ...] = ("query", "mutation")) -> list[tuple[str, dict]]:
        out = []
        for kind in kinds:
            for f in self.fields(self.query if kind == "query" else self.mutation):
                out.append((kind, f))
        return out


def _lit(value: Any) -> str:
    return orjson.dumps(value).decode()


def _call(kind: str, field: dict, schema: Schema, args: dict[str, Any], alias: str = "") -> str:
    """A one-field operation: required arguments filled with harmless values, `args` as given."""
    vals = {}
    for a in field.get("args") or []:
        if a["name"] in args:
            vals[a["name"]] = args[a["name"]]
        elif unwrap(a["type"])[3]:
            k, n, is_list, _ = unwrap(a["type"])
            v: Any = {"Int": 1, "Float": 1.0, "Boolean": False, "ID": "1"}.get(n or "", "scan")
            vals[a["name"]] = [v] if is_list else v
    arg_text = ", ".join(f"{k}: {_lit(v)}" for k, v in vals.items())
    k, type_name, _, _ = unwrap(field["type"])
    sel = f" {{ {schema.leaf(type_name)} }}" if k in ("OBJECT", "INTERFACE") else ""
    head = "mutation" if kind == "mutation" else "query"
    return f"{head} {{ {alias + ': ' if alias else ''}{field['name']}{'(' + arg_text + ')' if arg_text else ''}{sel} }}"


async def run(ctx) -> list[Finding]:
    if not ctx.graphql_path:
        return []
    out: list[Finding] = []
    url = ctx.client.url(ctx.graphql_path)
    errors_seen: list[str] = []

    async def post(body, who=ctx.a):
        r = await ctx.client.request("POST", ctx.graphql_path, json=body, headers=ctx.auth(who))
        doc = r.json()
        if isinstance(doc, dict) and doc.get("errors"):
            errors_seen.append(orjson.dumps(doc["errors"]).decode()[:4000])
        return r

    def add(check, title, sev, evidence, method="POST", category="API8", cwe=None, fix=FIX, body=None):
        out.append(
            Finding(
                check,
                title,
                category,
                cwe or (200 if sev == "low" else 770),
                sev,
                "certain",
                method,
                url,
                evidence,
                "Configure the GraphQL server's limits and validate arguments.",
                fix,
                request_headers=ctx.auth(ctx.a),
                request_body=body,
            )
        )

    r = await post({"query": INTROSPECT})
    doc = r.json()
    schema: Schema | None = None
    if isinstance(doc, dict) and (doc.get("data") or {}).get("__schema"):
        schema = Schema(doc)
        add("graphql-introspection", "Introspection is enabled", "medium", f"{len(schema.types)} types listed")
    r = await post({"query": "{ usr { id } }"})
    if "Did you mean" in r.text:
        add("graphql-suggestions", "Errors suggest field names", "low", "the error says 'Did you mean …'")
    out += await _ide(ctx, url)
    await _depth(ctx, post, schema, add)
    aliases = "{ " + " ".join(f"a{i}: __typename" for i in range(100)) + " }"
    r = await post({"query": aliases})
    if r.ok and len(_doc(r).get("data") or {}) >= 100:
        add("graphql-aliases", "No alias limit", "medium", "100 aliases in one query were executed")
    r = await ctx.client.request(
        "POST", ctx.graphql_path, json=[{"query": "{ __typename }"}] * 20, headers=ctx.auth(ctx.a)
    )
    if r.ok and isinstance(r.json(), list) and len(r.json()) == 20:
        add("graphql-batching", "Unlimited query batching", "medium", "a batch of 20 operations was executed")
    await _duplication(ctx, post, schema, add)
    r = await ctx.client.request(
        "GET", f"{ctx.graphql_path}?query={quote('mutation { __typename }')}", headers=ctx.auth(ctx.a)
    )
    if r.ok and _doc(r).get("data"):
        add("graphql-mutation-get", "Mutations run over GET (CSRF-able)", "medium", "mutation executed via GET", "GET")
    if schema is not None:
        await _resource(ctx, post, schema, add)
        await _sqli(ctx, post, schema, add)
        await _ssrf(ctx, post, schema, add)
        await _cmdi(ctx, post, schema, add)
        await _xss(ctx, post, schema, add)
        await _bruteforce(ctx, post, schema, add)
        await _bola(ctx, post, schema, add)
        await _traversal(post, schema, add)
        await _json_input(ctx, post, schema, add)
    r = await post({"query": "query { __typename(x: 1) }"})  # a plain error as well, for the debug check
    for text in errors_seen:
        m = INTERNAL.search(text)
        if m:
            add("graphql-debug", "Errors carry internal details", "low", f"an error says: …{m.group(0)[:80]}…", cwe=209)
            break
    return out


async def _ide(ctx, url: str) -> list[Finding]:
    base = ctx.graphql_path.rstrip("/")
    paths = [base] + [p for p in IDE_PATHS[1:]]
    for path in paths:
        r = await ctx.client.request("GET", path, headers={"Accept": "text/html"}, record=False)
        found = r.ok and IDE_MARK.search(r.text)
        cookie_note = ""
        if not found and r.status and r.headers.get("set-cookie"):
            # the server names its own toggle: flip disable/false/off to enable/true/on and retry
            jar = r.headers.get("set-cookie", "").split(";")[0]
            flipped = re.sub(
                r"(?i)disable", "enable", re.sub(r"(?i)\bfalse\b", "true", re.sub(r"(?i)\boff\b", "on", jar))
            )
            if flipped != jar:
                r2 = await ctx.client.request(
                    "GET", path, headers={"Accept": "text/html", "Cookie": flipped}, record=False
                )
                if r2.ok and IDE_MARK.search(r2.text):
                    found, cookie_note = IDE_MARK.search(r2.text), f" with the cookie {flipped!r}"
        if found:
            return [
                Finding(
                    "graphql-ide",
                    "A GraphQL IDE is exposed",
                    "API8",
                    200,
                    "low",
                    "certain",
                    "GET",
                    ctx.client.url(path),
                    f"GET {path} (Accept: text/html){cookie_note} serves {found.group(0)}",
                    "Do not serve GraphiQL / Playground / Altair / Voyager in production.",
                    "routes:\n  - {path: /graphql, methods: [POST], upstream: api}",
                )
            ]
    return []


async def _depth(ctx, post, schema: Schema | None, add) -> None:
    """A query through a type cycle, deepened step by step. One 16-level shot is not enough: where
    the cycle passes through lists the work multiplies at every turn (six posts per author made a
    16-level query on a public API run 37 s and 7.4 MB, past the scanner's timeout, and the server
    went on resolving it while the rest of the scan waited). So the depth grows 6, 10, 12, 14, 16
    levels and stops as soon as an answer costs more than a second or 512 KB: a depth limit has
    refused before then, and a server that has not is already shown to resolve a nested query
    beyond any sensible limit, at a cost that grows with every level."""
    chain_of = None
    if schema is not None:
        found = schema.cycle()
        if found:
            root, path = found

            def chain_of(n: int, root=root, path=path) -> str:
                chain = list(path)
                while len(chain) < n:
                    chain += path
                chain = chain[:n]
                return "{ " + root + " { " + " { ".join(chain) + " { __typename" + " }" * len(chain) + " } }"

    if chain_of is None:  # no introspection: common roots and relations
        for root in COMMON_ROOTS[:8]:
            r = await post({"query": f"{{ {root} {{ __typename }} }}"})
            if (_doc(r).get("data") or {}).get(root) is None:
                continue
            for rel in COMMON_RELATIONS:
                r = await post({"query": f"{{ {root} {{ {rel} {{ {rel} {{ __typename }} }} }} }}"})
                doc = r.json()
                if isinstance(doc, dict) and doc.get("data") and not doc.get("errors"):

                    def chain_of(n: int, root=root, rel=rel) -> str:
                        return "{ " + root + " { " + " { ".join([rel] * n) + " { __typename" + " }" * n + " } }"

                    break
            break
    if chain_of is None:
        return
    done: list[tuple[int, float, int]] = []  # (levels, seconds, bytes) of each executed query
    for n in (4, 8, 10, 12, 14):
        t = time.monotonic()
        r = await post({"query": chain_of(n)})
        took = time.monotonic() - t
        doc = r.json()
        if not (r.ok and isinstance(doc, dict) and doc.get("data") and not doc.get("errors")):
            break
        done.append((n + 2, took, len(r.body)))
        if took > 1.0 or len(r.body) > 512_000:
            break
    if not done or done[-1][0] < 10:
        return
    steps = ", ".join(f"{lv} levels {s:.2f} s {b:,} B" for lv, s, b in done)
    add(
        "graphql-depth",
        "No query depth limit",
        "medium",
        f"a {done[-1][0]}-level query through a type cycle was executed ({steps})",
        category="API4",
        body=orjson.dumps({"query": chain_of(done[-1][0] - 2)}).decode(),
    )


async def _duplication(ctx, post, schema: Schema | None, add) -> None:
    field = "__typename"
    wrap = "{ %s }"
    if schema is not None:
        for f in schema.fields(schema.query):
            k, t, _, _ = unwrap(f["type"])
            if not schema.required_args(f) and k in ("OBJECT",):
                leaf = schema.leaf(t).split()[0]
                field, wrap = leaf, "{ " + f["name"] + " { %s } }"
                break
    query = wrap % " ".join([field] * 500)
    r = await post({"query": query})
    doc = r.json()
    if r.ok and isinstance(doc, dict) and doc.get("data") and not doc.get("errors"):
        add(
            "graphql-field-duplication",
            "Field duplication is not limited",
            "low",
            f"a query repeating {field!r} 500 times was executed",
            category="API4",
        )


async def _resource(ctx, post, schema: Schema, add) -> None:
    async def timed(q):
        t = time.monotonic()
        await post({"query": q})
        return time.monotonic() - t

    base = min([await timed("{ __typename }") for _ in range(3)])
    for f in schema.fields(schema.query)[:10]:  # required arguments get harmless values
        q = _call("query", f, schema, {})
        d = await timed(q)
        if d > 1.0 and d > 20 * max(base, 0.01):
            d2 = await timed(q)
            if d2 > 1.0:
                add(
                    "graphql-resource",
                    "A field is expensive to resolve",
                    "medium",
                    f"{f['name']} takes {min(d, d2):.1f} s against {base * 1000:.0f} ms for __typename",
                    category="API4",
                    body=orjson.dumps({"query": q}).decode(),
                )
                return


def _string_args(schema: Schema, pattern: re.Pattern | None = None, kinds=("query", "mutation")):
    for kind, f in schema.calls(kinds):
        for a in f.get("args") or []:
            if (
                unwrap(a["type"])[1] in ("String", "ID")
                and not unwrap(a["type"])[2]
                and (pattern is None or pattern.search(a["name"]))
            ):
                yield kind, f, a["name"]


async def _sqli(ctx, post, schema: Schema, add) -> None:
    tried = 0
    for _kind, f, arg in _string_args(schema, kinds=("query",)):
        if tried >= 6:
            break
        tried += 1

        async def send(v, f=f, arg=arg):
            r = await post({"query": _call("query", f, schema, {arg: v})})
            doc = _doc(r)
            status = 500 if doc.get("errors") else (r.status or 0)
            return Answer(
                status,
                orjson.dumps(doc.get("data")),
                doc.get("data", {}) and next(iter((doc.get("data") or {}).values()), None),
            )

        ev = await Prober(send).run("scan", False)
        if ev:
            add(
                "graphql-sqli",
                "SQL injection in a GraphQL argument",
                "critical",
                f"{f['name']}({arg}:): {ev} (an 'errors' answer counts as a failure)",
                category="API8",
                cwe=89,
            )
            return


async def _ssrf(ctx, post, schema: Schema, add) -> None:
    if ctx.canary is None:
        return
    for kind, f in schema.calls():
        names = [a["name"] for a in f.get("args") or [] if unwrap(a["type"])[1] in ("String", "ID")]
        urlish = [n for n in names if URLISH.search(n)]
        hostish = [n for n in names if HOSTISH.match(n)]
        if not urlish and not hostish:
            continue
        token = secrets.token_hex(8)
        args: dict[str, Any] = {n: ctx.canary.url(token) for n in urlish}
        for n in hostish:
            args[n] = "127.0.0.1"
        for a in f.get("args") or []:
            low = a["name"].lower()
            if low == "port":
                args[a["name"]] = ctx.canary.port if unwrap(a["type"])[1] == "Int" else str(ctx.canary.port)
            elif low in ("path", "route") and hostish:
                args[a["name"]] = f"/c/{token}"
            elif low in ("scheme", "protocol") and hostish:
                args[a["name"]] = "http"
        await post({"query": _call(kind, f, schema, args)})
        await asyncio.sleep(0.2)
        if token in ctx.canary.hits:
            add(
                "graphql-ssrf",
                "The server fetches a URL a GraphQL argument chooses",
                "critical",
                f"{f['name']}({', '.join(sorted(args))}): the scanner's loopback canary received the server's request",
                category="API7",
                cwe=918,
            )
            return


async def _cmdi(ctx, post, schema: Schema, add) -> None:
    tried = 0
    for kind, f, arg in _string_args(schema, CMDISH):
        if tried >= 6:
            break
        tried += 1
        base_q = _call(kind, f, schema, {arg: "127.0.0.1"})
        t = time.monotonic()
        await post({"query": base_q})
        base = time.monotonic() - t
        for sep in (";", "|", "&&", "$(", "`"):
            n = secrets.randbelow(900) + 100
            expr = f"bs$(({n}+{n}))x"
            payload = {"$(": f"127.0.0.1$(echo {expr})", "`": f"127.0.0.1`echo {expr}`"}.get(
                sep, f"127.0.0.1{sep}echo {expr}"
            )
            r = await post({"query": _call(kind, f, schema, {arg: payload})})
            if f"bs{2 * n}x" in r.text:
                add(
                    "graphql-cmdi",
                    "OS command injection through a GraphQL argument",
                    "critical",
                    f"{f['name']}({arg}:) = {payload!r}: the answer carries bs{2 * n}x, the shell's arithmetic",
                    category="API8",
                    cwe=78,
                )
                return
        if base < 5:
            t = time.monotonic()
            await post({"query": _call(kind, f, schema, {arg: "127.0.0.1;sleep 3"})})
            slow = time.monotonic() - t
            if slow >= base + 2.7:
                t = time.monotonic()
                await post({"query": _call(kind, f, schema, {arg: "127.0.0.1;sleep 0"})})
                if time.monotonic() - t < base + 1.5:
                    add(
                        "graphql-cmdi",
                        "OS command injection through a GraphQL argument (time delay)",
                        "critical",
                        f"{f['name']}({arg}:): ';sleep 3' answers in {slow:.1f} s, ';sleep 0' and the plain value "
                        f"in {base:.1f} s",
                        category="API8",
                        cwe=78,
                    )
                    return


async def _xss(ctx, post, schema: Schema, add) -> None:
    for _kind, f in schema.calls(("mutation",)):
        if not CREATEISH.search(f["name"]):
            continue
        strings = [
            a["name"]
            for a in f.get("args") or []
            if unwrap(a["type"])[1] == "String" and not URLISH.search(a["name"]) and not CMDISH.search(a["name"])
        ]
        if not strings:
            continue
        mark = "bs" + secrets.token_hex(4)
        html = f'<img src=x id="{mark}" onerror="alert(1)">'
        await post({"query": _call("mutation", f, schema, {n: html for n in strings})})
        for qf in schema.fields(schema.query):
            if schema.required_args(qf):
                continue
            r = await post({"query": _call("query", qf, schema, {})})
            if f'id="{mark}"' in r.text or f'id=\\"{mark}\\"' in r.text:
                add(
                    "graphql-xss",
                    "Stored HTML is returned unescaped (stored XSS)",
                    "medium",
                    f"HTML sent through {f['name']}({', '.join(strings)}) comes back as-is from {qf['name']}",
                    category="API8",
                    cwe=79,
                )
                return


def _doc(r) -> dict:
    """The answer's JSON object, parsed once (`Resp.json` parses on each call); {} when the
    answer is not one."""
    doc = r.json()
    return doc if isinstance(doc, dict) else {}


def _refused(r, field: str) -> bool:
    """The answer refuses the call: an error, or no value for the field."""
    doc = r.json()
    return not r.ok or not isinstance(doc, dict) or bool(doc.get("errors")) or not (doc.get("data") or {}).get(field)


def _messages(r) -> str:
    errs = _doc(r).get("errors")
    return " | ".join(str(e.get("message", "")) for e in errs if isinstance(e, dict)) if isinstance(errs, list) else ""


async def _known_username(ctx, post, schema: Schema) -> str | None:
    """An existing account's name: the identity's, else the first `username`/`email`/`login` an
    argument-free root query shows (the caller's own "me", a user list)."""
    for who in (ctx.a, ctx.b):
        if who is not None and who.username:
            return who.username
    for f in schema.fields(schema.query):
        kind, t, _, _ = unwrap(f["type"])
        if kind != "OBJECT" or schema.required_args(f):
            continue
        names = [x["name"] for x in schema.fields(t) if x["name"].lower() in ("username", "email", "login")]
        if not names:
            continue
        r = await post({"query": f"query {{ {f['name']} {{ {names[0]} }} }}"})
        for item in _items((_doc(r).get("data") or {}).get(f["name"])):
            if isinstance(item, dict) and isinstance(item.get(names[0]), str) and item[names[0]]:
                return item[names[0]]
    return None


def _items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value is not None else []


async def _bruteforce(ctx, post, schema: Schema, add) -> None:
    """A call that checks a password: it takes a user name and a password, and it refuses a wrong
    one. A sign-up takes the same two arguments and answers with a new account: twelve of them
    are not twelve guesses (a public API's `register(username, password)` was reported as an
    unthrottled login), so a call is only judged when its name is not one of creation and its
    answers to wrong passwords are refusals. Its refusals then say whether the name exists
    (enumeration): an unknown name twice (the answer must be stable) against one wrong password
    for a known name, the names blanked out of both."""
    calls = [
        (kind, f)
        for kind, f in schema.calls()
        if not SIGNUPISH.search(f["name"])
        and any(a["name"].lower() in PASSWORDISH for a in f.get("args") or [])
        and any(a["name"].lower() in USERNAMEISH for a in f.get("args") or [])
    ]
    calls.sort(key=lambda c: not LOGINISH.search(c[1]["name"]))
    for kind, f in calls:
        names = {a["name"].lower(): a["name"] for a in f.get("args") or []}
        pw = next(names[n] for n in names if n in PASSWORDISH)
        user = next(names[n] for n in names if n in USERNAMEISH)
        who = "scanner_" + secrets.token_hex(4)
        throttled = False
        answers = []
        for _ in range(12):
            r = await post({"query": _call(kind, f, schema, {user: who, pw: "Wrong-" + secrets.token_hex(5)})})
            if r.status in (423, 429) or re.search(r"(too many|rate limit|locked|try again later)", r.text, re.I):
                throttled = True
                break
            answers.append(r)
        if answers and not all(_refused(r, f["name"]) for r in answers):
            continue  # a wrong password was accepted: this call does not check passwords
        if not throttled:
            add(
                "graphql-bruteforce",
                "A password argument accepts unlimited guesses",
                "high",
                f"12 wrong passwords through {f['name']}({user}, {pw}) refused without a limit "
                "(aliases and batching multiply guesses per request)",
                category="API2",
                cwe=307,
            )
        known = await _known_username(ctx, post, schema)
        if known and answers:
            unknown = _messages(answers[0]).replace(who, "<name>")
            again = _messages(answers[1] if len(answers) > 1 else answers[0]).replace(who, "<name>")
            r = await post({"query": _call(kind, f, schema, {user: known, pw: "Wrong-" + secrets.token_hex(5)})})
            there = _messages(r).replace(known, "<name>")
            if unknown == again and _refused(r, f["name"]) and there and unknown != there:
                add(
                    "graphql-enumeration",
                    "Login errors say whether an account exists",
                    "medium",
                    f"{f['name']}: an unknown name → {unknown[:80]!r}; an existing name with a wrong password → "
                    f"{there[:80]!r}",
                    category="API2",
                    cwe=204,
                )
        return


IDISH = re.compile(r"^(id|.*_id|.*Id|uuid|key)$")


def _id_field(schema: Schema, type_name: str | None) -> str | None:
    for f in schema.fields(type_name):
        if unwrap(f["type"])[0] == "SCALAR" and (f["name"] == "id" or unwrap(f["type"])[1] == "ID"):
            return f["name"]
    return None


def _selection(schema: Schema, type_name: str | None, depth: int = 0) -> str:
    """`__typename` and the id of an object, and of the objects its argument-free relations lead to
    (two levels): what a viewer can reach from one root field."""
    parts = ["__typename"]
    idf = _id_field(schema, type_name)
    if idf:
        parts.append(idf)
    if depth < 2:
        for f in schema.fields(type_name)[:12]:
            kind, t, _, _ = unwrap(f["type"])
            if kind == "OBJECT" and not schema.required_args(f):
                parts.append(f"{f['name']} {{ {_selection(schema, t, depth + 1)} }}")
    return " ".join(parts)


def _seen(schema: Schema, value: Any, out: set[tuple[str, str]]) -> None:
    """(type, id) of every object in an answer."""
    if isinstance(value, list):
        for v in value:
            _seen(schema, v, out)
    elif isinstance(value, dict):
        t = value.get("__typename")
        idf = _id_field(schema, t) if isinstance(t, str) else None
        if (
            isinstance(t, str)
            and idf
            and isinstance(value.get(idf), (str, int))
            and not isinstance(value.get(idf), bool)
        ):
            out.add((t, str(value[idf])))
        for v in value.values():
            _seen(schema, v, out)


async def _bola(ctx, post, schema: Schema, add) -> None:
    """An object fetched by id that its owner's lists hide from others. Each argument-free root
    field is read as A and as B with the ids of everything it reaches; where the same root field
    shows both viewers some of the same objects of a type (a shared list that filters per viewer)
    and A more than B, the extra ones are A's own. B then asks the by-id field of that type for
    them: an answer is an object the API meant to hide from B and gives out by id (A's private
    post, draft, order). A field that lists only the viewer's own objects ("me") shares nothing
    between A and B, so a public-by-design profile fetched by id is not taken for a leak."""
    if ctx.a is None or ctx.b is None:
        return
    fetchers: dict[str, tuple[dict, dict]] = {}  # type → (root field, its id argument)
    for f in schema.fields(schema.query):
        kind, t, is_list, _ = unwrap(f["type"])
        args = f.get("args") or []
        idargs = [a for a in args if IDISH.match(a["name"]) and unwrap(a["type"])[1] in ("ID", "Int", "String")]
        others = [a for a in schema.required_args(f) if a not in idargs]
        if t and kind == "OBJECT" and not is_list and len(idargs) == 1 and not others and t not in fetchers:
            fetchers[t] = (f, idargs[0])
    if not fetchers:
        return
    for root in schema.fields(schema.query):
        kind, t, _, _ = unwrap(root["type"])
        if kind != "OBJECT" or schema.required_args(root) or root["name"] in {f["name"] for f, _ in fetchers.values()}:
            continue
        q = f"query {{ {root['name']} {{ {_selection(schema, t)} }} }}"
        views = []
        for who in (ctx.a, ctx.b):
            r = await post({"query": q}, who)
            seen: set[tuple[str, str]] = set()
            if r.ok:
                _seen(schema, (_doc(r).get("data") or {}).get(root["name"]), seen)
            views.append(seen)
        a_view, b_view = views
        for type_name, (f, arg) in fetchers.items():
            shared = {i for tn, i in a_view & b_view if tn == type_name}
            only_a = sorted({i for tn, i in a_view - b_view if tn == type_name})
            if not shared or not only_a:
                continue
            idf = _id_field(schema, type_name) or "__typename"
            for oid in only_a[:3]:
                value: Any = int(oid) if unwrap(arg["type"])[1] == "Int" and oid.isdigit() else oid
                r = await post({"query": f"query {{ {f['name']}({arg['name']}: {_lit(value)}) {{ {idf} }} }}"}, ctx.b)
                doc = _doc(r)
                got = (doc.get("data") or {}).get(f["name"])
                if isinstance(got, dict) and str(got.get(idf)) == oid and not doc.get("errors"):
                    add(
                        "graphql-bola",
                        "An object hidden from other users is returned to them by id",
                        "high",
                        f"{root['name']} shows {ctx.a.name} the {type_name} {oid} and hides it from {ctx.b.name} "
                        f"(both see {len(shared)} others); {f['name']}({arg['name']}: {oid}) gives it to "
                        f"{ctx.b.name}",
                        category="API1",
                        cwe=639,
                    )
                    return


async def _traversal(post, schema: Schema, add) -> None:
    """A query argument that names a file or asset and goes into a path on the server: a made-up
    name is refused, but `../` answers, and not as `./` does (the path climbed out of its folder:
    an internal server's listing, another tree), or eight `../` and `etc/passwd` return the
    password file. The first is how an argument pasted into an internal URL shows itself (the
    HTTP client resolves the dots before it sends); a refusal that names an HTTP status says the
    path was fetched (SSRF, API7) rather than read (API8). Queries only: nothing is written."""
    tried = 0
    for _kind, f, arg in _string_args(schema, PATHISH, kinds=("query",)):
        if tried >= 6:
            break
        tried += 1

        async def ask(value: str, f=f, arg=arg):
            return await post({"query": _call("query", f, schema, {arg: value})})

        made_up = await ask("bs" + secrets.token_hex(4))
        if not _refused(made_up, f["name"]):
            continue  # a name that does not exist is accepted: nothing to compare against
        refusal = _messages(made_up) or made_up.text[:200]
        category, cwe = ("API7", 918) if FETCHED.search(refusal) else ("API8", 22)
        passwd = await ask("../" * 8 + "etc/passwd")
        up, here = await ask("../"), await ask("./")
        if not _refused(passwd, f["name"]) and "root:x:0:0:" in passwd.text:
            evidence = f"{f['name']}({arg}: '../../…/etc/passwd') returns the password file (root:x:0:0:)"
        elif not _refused(up, f["name"]) and (_refused(here, f["name"]) or up.body != here.body):
            evidence = (
                f"{f['name']}({arg}:) refuses a made-up name ({refusal[:60]!r}) but answers '../' "
                f"({len(up.body):,} B), differently from './'"
            )
        else:
            continue
        add(
            "graphql-path-traversal",
            "A GraphQL argument is a path the server follows out of its folder",
            "high",
            evidence,
            category=category,
            cwe=cwe,
        )
        return


def _named_keys(message: str) -> list[str]:
    """The keys a refusal of `{}` asks for ("Must provide username, new_password, and reset_token",
    "needs `email` and `code`"): identifiers with an underscore or an inner capital, quoted ones,
    and the usual account words."""
    quoted = re.findall(r"[`'\"]([A-Za-z_][A-Za-z0-9_]*)[`'\"]", message)
    words = [
        w
        for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", message)
        if "_" in w.strip("_") or re.search(r"[a-z][A-Z]", w) or w.lower() in KEY_WORDS
    ]
    return list(dict.fromkeys(quoted + words))


async def _json_input(ctx, post, schema: Schema, add) -> None:
    """Arguments of a free-form JSON scalar: the schema does not say their shape, so it is asked
    for (an empty object's refusal names the keys it wants). Then (1) a key that holds a code or
    token is guessed 12 times in one request (aliases), a made-up account's, and nothing stops it;
    (2) every key but the passwords is sent as an operator object, `{"ne": …}` (Sequelize's string
    aliases) or `{"$ne": …}` (MongoDB): made-up values are refused, the operators answer with data,
    so the object reached the database as a query (a reset that matches any account's token). A
    mutation so probed may change the account it matches: only with --allow-destructive."""
    for kind, f in schema.calls():
        if kind == "mutation" and not ctx.allow_destructive:
            continue
        arg = next(
            (
                a
                for a in f.get("args") or []
                if unwrap(a["type"])[0] == "SCALAR" and unwrap(a["type"])[1] not in BUILTIN_SCALARS
            ),
            None,
        )
        if arg is None or len(schema.required_args(f)) > (1 if unwrap(arg["type"])[3] else 0):
            continue
        scalar = unwrap(arg["type"])[1]
        tk, tname, _, _ = unwrap(f["type"])
        sel = f" {{ {schema.leaf(tname)} }}" if tk in ("OBJECT", "INTERFACE") else ""
        head = "mutation" if kind == "mutation" else "query"
        bang = "!" if unwrap(arg["type"])[3] else ""

        async def send(value, n=1, f=f, arg=arg, scalar=scalar, sel=sel, head=head, bang=bang):
            calls = " ".join(f"a{i}: {f['name']}({arg['name']}: $v{i}){sel}" for i in range(n))
            decl = ", ".join(f"$v{i}: {scalar}{bang}" for i in range(n))
            values = value if isinstance(value, list) else [value]
            return await post(
                {"query": f"{head}({decl}) {{ {calls} }}", "variables": {f"v{i}": v for i, v in enumerate(values)}}
            )

        keys = [k for k in _named_keys(_messages(await send({}))) if k not in (f["name"], arg["name"])]
        if not keys:
            continue
        made_up = {k: ("Scan-" if "pass" in k.lower() else "bs") + secrets.token_hex(4) for k in keys}
        base = await send(made_up)
        doc = _doc(base)
        if not doc.get("errors") or (doc.get("data") or {}).get("a0") or _named_keys(_messages(base)) == keys:
            continue  # the made-up values are not refused as wrong ones: nothing to compare against
        code = next((k for k in keys if CODEISH.search(k)), None)
        if code:
            guesses = [{**made_up, code: str(100000 + secrets.randbelow(900000))} for _ in range(12)]
            r = await send(guesses, 12)
            d = _doc(r)
            refusals = [e for e in d.get("errors") or [] if isinstance(e, dict)]
            throttled = r.status in (423, 429) or re.search(
                r"(too many|rate limit|locked|try again later)", r.text, re.I
            )
            if len(refusals) == 12 and not any((d.get("data") or {}).values()) and not throttled:
                add(
                    "graphql-code-bruteforce",
                    "A code or token argument accepts unlimited guesses",
                    "high",
                    f"{f['name']}({arg['name']}: {{{', '.join(keys)}}}): 12 wrong {code} values in one request "
                    f"(aliases) all refused ({str(refusals[0].get('message'))[:60]!r}), none throttled",
                    category="API2",
                    cwe=307,
                )
        for op in ("ne", "$ne"):
            probe = {k: (v if "pass" in k.lower() else {op: v}) for k, v in made_up.items()}
            r = await send(probe)
            d = _doc(r)
            if (d.get("data") or {}).get("a0") and not d.get("errors"):
                add(
                    "graphql-operator-injection",
                    "A JSON argument reaches the database as a query (operator injection)",
                    "critical",
                    f"{f['name']}({arg['name']}:) refuses made-up {', '.join(k for k in keys if 'pass' not in k.lower())} "
                    f"({_messages(base)[:60]!r}) but answers data when each is {{{op!r}: …}}",
                    category="API8",
                    cwe=943,
                )
                return
