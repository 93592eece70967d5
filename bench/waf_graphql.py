"""bench/waf_graphql: the WAF's cost per GraphQL request (argument values and variables inspected,
issue 17) beside the WAF on REST requests of the same content, same run.

    .venv/bin/python bench/waf_graphql.py [--seconds 1]

Calls the policy's `on_request` in process (no sockets: the gateway's own cost is in
bench/gateway.py). Cases:

- REST GET with a path parameter and two query parameters (the path parameter is an ARG too);
- REST POST, a JSON body with the same values as the GraphQL operation's arguments;
- GraphQL POST JSON: one operation with literal arguments, a fragment and three variables;
- GraphQL GET (the same operation in the URL), a batch of three operations, application/graphql;
- the same GraphQL POST with `graphql: off` (the query text inspected as a value, as before
  issue 17, with the two rules users had to turn off: 932100, 942190).

Prints CPU microseconds per request (process time: the machine's other load counts less than
in wall time), the median of alternating rounds, and the ratio to the REST GET.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from types import SimpleNamespace
from urllib.parse import quote

import orjson

from bastion.http import Request
from bastion.pipeline import Context
from bastion.policies.waf import Waf, WafConfig

QUERY = (
    "query Pastes($limit: Int, $filter: PasteFilter, $after: String) {\n"
    '  pastes(public: true, limit: $limit, filter: "notes") { ...P owner { login } }\n'
    "  searchPastes(filter: $filter, first: 20, after: $after) { ...P }\n"
    "}\nfragment P on Paste { id title content createdAt comments(first: 5) { body } }"
)
VARIABLES = {"limit": 10, "filter": {"title": "meeting notes", "public": True}, "after": "YXJyYXljb25uZWN0aW9uOjQ="}
OPERATION = orjson.dumps({"query": QUERY, "variables": VARIABLES, "operationName": "Pastes"})
# the same 9 values the GraphQL operation carries (its 4 literal arguments, 4 variable leaves and
# operationName), as a REST JSON body
REST_BODY = orjson.dumps(
    {
        "pastes": {"public": True, "filter": "notes"},
        "searchPastes": {"first": 20},
        "comments": {"first": 5},
        "variables": VARIABLES,
        "operationName": "Pastes",
    }
)
BASE = [(b"host", b"api.example.com"), (b"user-agent", b"Mozilla/5.0 (bench)"), (b"accept", b"application/json")]
JSON = [(b"content-type", b"application/json")]


def request(method: str, path: str, query: bytes, headers, body: bytes, params=None) -> Request:
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    hs = BASE + headers + ([(b"content-length", str(len(body)).encode())] if body else [])
    return Request(
        method=method,
        path=path,
        query=query,
        headers=hs,
        client_ip=None,
        peer_ip=None,
        peer_trusted=False,
        scheme="http",
        host="api.example.com",
        receive=receive,
        body_limit=1024 * 1024,
        path_params=params or {},
        route_name=path if path == "/graphql" else "/api/*",
    )


GET_QUERY = f"query={quote(QUERY)}&variables={quote(orjson.dumps(VARIABLES).decode())}".encode()
BATCH = orjson.dumps([{"query": QUERY, "variables": VARIABLES}] * 3)
CASES = {
    "REST GET /users/{id}?q=&page=": ("GET", "/users/42", b"q=meeting+notes&page=2", [], b"", {"id": "42"}),
    "REST POST JSON (same values)": ("POST", "/api/pastes/search", b"", JSON, REST_BODY, None),
    "GraphQL POST JSON": ("POST", "/graphql", b"", JSON, OPERATION, None),
    "GraphQL GET": ("GET", "/graphql", GET_QUERY, [], b"", None),
    "GraphQL application/graphql": (
        "POST",
        "/graphql",
        b"",
        [(b"content-type", b"application/graphql")],
        QUERY.encode(),
        None,
    ),
    "GraphQL batch of 3": ("POST", "/graphql", b"", JSON, BATCH, None),
}


def cpu_per_request(policy: Waf, case, seconds: float) -> float:
    """CPU seconds per request (process time, so other load on the machine counts less)."""

    async def run() -> float:
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            for _ in range(10):
                resp = await policy.on_request(request(*case), Context())
                assert resp is None, resp.body
            n += 10
            if time.perf_counter() - t0 >= seconds:
                return (time.process_time() - c0) / n

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median counts")
    args = ap.parse_args()
    env = SimpleNamespace(config_dir=".")
    waf = Waf(WafConfig(), env)
    text = Waf(WafConfig(graphql="off", exclude_rules=[932100, 942190]), env)
    cases = [(name, waf, case) for name, case in CASES.items()]
    cases.append(("GraphQL POST JSON, graphql: off (text)", text, CASES["GraphQL POST JSON"]))
    samples: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.rounds):
        for name, policy, case in cases:
            samples[name].append(cpu_per_request(policy, case, args.seconds))
    base = sorted(samples[cases[0][0]])[args.rounds // 2]
    print(f"{'case':42} {'CPU us/request':>14} {'x REST GET':>10}   each round")
    for name, _, _ in cases:
        med = sorted(samples[name])[args.rounds // 2]
        each = " ".join(f"{x * 1e6:.0f}" for x in samples[name])
        print(f"{name:42} {med * 1e6:14.0f} {med / base:10.2f}   {each}")


if __name__ == "__main__":
    main()
