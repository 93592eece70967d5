"""bench/response_filter: CPU time per answer of the response filter's whole-body path, in process
(no sockets), on the answers of bench/gateway.py: the 100 KB answer with the filtered field in
every record (f2), the same answer with the field renamed (the clean 9 in 10 of f3), and 1 KB
(f1). Beside each: `orjson.loads` and `orjson.loads` + `orjson.dumps` of the same body, the floor
of a filter that parses. CPU time (`time.process_time`), median of `--rounds` alternating rounds,
so a loaded machine changes the figures less than wall-clock time would.

    .venv/bin/python bench/response_filter.py [--rounds 7] [--n 200]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway import sample_json  # noqa: E402  (the bench's own answers)

from bastion.pipeline import PolicyEnv  # noqa: E402
from bastion.policies.response_filter import ResponseFilter, ResponseFilterConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=200, help="calls per round")
    args = ap.parse_args()
    policy = ResponseFilter(ResponseFilterConfig(), PolicyEnv())
    field = sample_json(100 * 1024)
    bodies = {
        "100 KB, the field in every record": field,
        "100 KB, clean (field renamed)": field.replace(b'"password_hash"', b'"pw_digest_xx"'),
        "1 KB, the field in every record": sample_json(1024),
    }
    cases: dict[str, Callable[[], object]] = {}
    for name, body in bodies.items():
        cases[f"filter   {name}"] = lambda b=body: policy.rewrite_whole(b)
        cases[f"loads    {name}"] = lambda b=body: orjson.loads(b)
        cases[f"loads+dumps {name}"] = lambda b=body: orjson.dumps(orjson.loads(b))
    times: dict[str, list[float]] = {k: [] for k in cases}
    for f in cases.values():
        f()
    for _ in range(args.rounds):
        for label, f in cases.items():
            t0 = time.process_time()
            for _ in range(args.n):
                f()
            times[label].append((time.process_time() - t0) / args.n * 1000)
    print(f"CPU ms per answer, median of {args.rounds} alternating rounds of {args.n} calls")
    for label, ts in times.items():
        print(f"{label:48} {sorted(ts)[len(ts) // 2]:8.3f}")


if __name__ == "__main__":
    main()
