"""GraphQL: introspection, field suggestions, missing depth / alias / batch limits, mutations over
GET, debug details in errors."""

from __future__ import annotations

from urllib.parse import quote

from bastion.scanner.model import Finding

IDS = ("graphql-introspection", "graphql-suggestions", "graphql-depth", "graphql-aliases", "graphql-batching",
       "graphql-mutation-get", "graphql-debug")
FIX = "policies:\n  graphql: {introspection: false, suggestions: false, max_depth: 8, max_aliases: 10, batching: false}"


async def _post(ctx, body):
    return await ctx.client.request("POST", ctx.graphql_path, json=body, headers=ctx.auth(ctx.a))


async def run(ctx) -> list[Finding]:
    if not ctx.graphql_path:
        return []
    out: list[Finding] = []
    url = ctx.client.url(ctx.graphql_path)

    def add(check, title, sev, evidence, method="POST"):
        out.append(Finding(check, title, "API8" if check != "graphql-depth" else "API4", 200 if sev == "low" else 770,
                           sev, "certain", method, url, evidence, "Configure the GraphQL server's limits.", FIX))

    r = await _post(ctx, {"query": "{ __schema { types { name } } }"})
    doc = r.json()
    if isinstance(doc, dict) and (doc.get("data") or {}).get("__schema"):
        add("graphql-introspection", "Introspection is enabled", "medium",
            f"{len(doc['data']['__schema']['types'])} types listed")
    r = await _post(ctx, {"query": "{ usr { id } }"})
    if "Did you mean" in r.text:
        add("graphql-suggestions", "Errors suggest field names", "low", "the error says 'Did you mean …'")
    if any("stacktrace" in str(e).lower() or "traceback" in str(e).lower()
           for e in ((r.json() or {}).get("errors") or []) if isinstance(r.json(), dict)):
        add("graphql-debug", "Errors carry debug details", "low", "errors include a stack trace")
    deep = "{ users { " + "friends { " * 14 + "id" + " }" * 14 + " } }"
    r = await _post(ctx, {"query": deep})
    if r.ok and isinstance(r.json(), dict) and r.json().get("data"):
        add("graphql-depth", "No query depth limit", "medium", "a 16-level query was executed")
    aliases = "{ " + " ".join(f"a{i}: __typename" for i in range(100)) + " }"
    r = await _post(ctx, {"query": aliases})
    if r.ok and isinstance(r.json(), dict) and len((r.json().get("data") or {})) >= 100:
        add("graphql-aliases", "No alias limit", "medium", "100 aliases in one query were executed")
    r = await ctx.client.request("POST", ctx.graphql_path, json=[{"query": "{ __typename }"}] * 20,
                                 headers=ctx.auth(ctx.a))
    if r.ok and isinstance(r.json(), list) and len(r.json()) == 20:
        add("graphql-batching", "Unlimited query batching", "medium", "a batch of 20 operations was executed")
    r = await ctx.client.request("GET", f"{ctx.graphql_path}?query={quote('mutation { __typename }')}",
                                 headers=ctx.auth(ctx.a))
    if r.ok and isinstance(r.json(), dict) and r.json().get("data"):
        add("graphql-mutation-get", "Mutations run over GET (CSRF-able)", "medium", "mutation executed via GET", "GET")
    return out
