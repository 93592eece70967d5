"""bench/graphql: analyses per second of a 40-field query, unique and repeated, beside
graphql-core's `parse` and `parse + validate` of the same text, in one run.

    .venv/bin/python bench/graphql_guard.py [--seconds 1] [--rounds 1] [--cpu]

On a loaded machine use `--rounds 9 --cpu`: graphql-core parse and the unique-query analysis
are measured in alternating rounds, in the thread's CPU time (what other processes take is not
counted), and the median of the per-round ratios is printed.
"""

from __future__ import annotations

import argparse
import statistics
import time

from graphql import build_schema, parse, validate

from bastion.pipeline import PolicyEnv
from bastion.policies.graphql import GraphQLGuard, GraphQLGuardConfig

SDL = """
type Query { shop(id: ID!): Shop }
type Shop { id: ID! name: String products(first: Int): [Product!]! owner: User }
type Product { id: ID! title: String price: Float stock: Int tags: [String] reviews(first: Int): [Review!]!
  vendor: User }
type Review { id: ID! stars: Int body: String author: User }
type User { id: ID! name: String email: String avatar: String }
"""


def query(i: int) -> str:
    # 40 fields; `i` changes an argument so that every text is new
    return f"""query Shop {{ shop(id: "{i}") {{ id name owner {{ id name email avatar }}
      products(first: 10) {{ id title price stock tags vendor {{ id name email avatar }}
        reviews(first: 5) {{ id stars body author {{ id name email avatar }} }} }}
      a1: products(first: 2) {{ id title price stock tags }}
      a2: products(first: 3) {{ id title price vendor {{ id name }} }}
      owner2: owner {{ id name email avatar }} }} }}"""


CLOCK = time.perf_counter


def rate(fn, seconds: float) -> float:
    n, t0 = 0, CLOCK()
    while CLOCK() - t0 < seconds:
        for _ in range(50):
            fn(n)
            n += 1
    return n / (CLOCK() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=1, help="alternating parse/unique rounds (median ratio)")
    ap.add_argument("--cpu", action="store_true", help="measure the thread's CPU time, not wall time")
    args = ap.parse_args()
    if args.cpu:
        global CLOCK
        CLOCK = time.thread_time
    schema = build_schema(SDL)
    q0 = query(0)
    assert not validate(schema, parse(q0)), "the bench query must be valid"
    guard = GraphQLGuard(GraphQLGuardConfig(limits={"max_cost": 1e9}), PolicyEnv())
    fields = guard._analyze(q0, None, None).fields
    texts = [query(i) for i in range(20000)]

    core_parse = rate(lambda n: parse(texts[n % len(texts)]), args.seconds)
    core_validate = rate(lambda n: validate(schema, parse(texts[n % len(texts)])), args.seconds)
    guard.c.cache_entries = 0
    unique = rate(lambda n: guard._analyze(texts[n % len(texts)], None, None), args.seconds)
    guard.c.cache_entries = 10_000
    repeated = rate(lambda n: guard._analyze(q0, None, None), args.seconds)
    print(f"query: {fields} fields, {len(q0)} characters")
    print(f"graphql-core parse            {core_parse:10.0f}/s")
    print(f"graphql-core parse + validate {core_validate:10.0f}/s")
    print(f"bastion unique (parse+analyse){unique:10.0f}/s   {unique / core_parse:5.1f}x parse (target >= 5x)")
    print(f"bastion repeated (cached)     {repeated:10.0f}/s   {repeated / core_parse:5.1f}x parse (target >= 50x)")
    if args.rounds > 1:
        guard.c.cache_entries = 0
        ratios = []
        for _ in range(args.rounds):
            p = rate(lambda n: parse(texts[n % len(texts)]), args.seconds / 2)
            u = rate(lambda n: guard._analyze(texts[n % len(texts)], None, None), args.seconds / 2)
            ratios.append(u / p)
        shown = " ".join(f"{r:.1f}" for r in ratios)
        print(
            f"unique / parse over {args.rounds} alternating rounds: median {statistics.median(ratios):.1f}x ({shown})"
        )


if __name__ == "__main__":
    main()
