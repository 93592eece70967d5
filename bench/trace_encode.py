"""bench/trace_encode: CPU µs per span the trace exporter process spends turning a batch of
`Span.fields()` tuples (the frames `SpanSink` writes it) into the OTLP request's bytes, the
former path beside the current one, in the same alternating rounds:

- sdk  `encode_spans(Readables(...)(batch)).SerializePartialToString()`: the SDK's
       ReadableSpans, then the SDK's OTLP encoder (what the process did before session 10);
- otlp `OtlpEncoder(...)(batch)`: the request built from the tuples (bastion.trace_export).

Batches of `--spans` (512: `SpanSink.BATCH`) spans shaped like the gateway's traced requests: a
SERVER root (method, url.path unique per request, status code, route; a tenth with a remote
parent and a tracestate) and its upstream CLIENT child. Also the frame's `marshal.loads`, which
both pay. The sending (the POST, the same client in both) is not in it.

    .venv/bin/python bench/trace_encode.py [--spans 512] [--rounds 7] [--batches 20]
"""

from __future__ import annotations

import argparse
import marshal
import random
import statistics
import time
from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

from bastion.trace_export import OtlpEncoder, Readables, resource_and_scope


def batch(spans: int, rng: random.Random, first: int) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for i in range(first, first + spans // 2):
        trace_id, root, start = rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, 1_700_000_000_000_000_000 + i
        remote = i % 10 == 0
        status = 503 if i % 50 == 0 else 200
        attributes = {
            "http.request.method": "GET",
            "url.path": f"/users/{i}",
            "http.response.status_code": status,
            "bastion.route": "users",
        }
        client = {"http.response.status_code": status}
        out.append(
            (
                "upstream users",
                2,
                trace_id,
                rng.getrandbits(64) or 1,
                3,
                None,
                root,
                False,
                start + 9,
                start + 90,
                client,
                0,
            )
        )
        parent = rng.getrandbits(64) if remote else 0
        state = "vendor=abc,other=1" if remote else None
        status_code = 2 if status >= 500 else 0
        out.append(
            (
                "GET users",
                1,
                trace_id,
                root,
                1 if remote else 3,
                state,
                parent,
                remote,
                start,
                start + 99,
                attributes,
                status_code,
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batches", type=int, default=20, help="batches encoded per path and round")
    args = ap.parse_args()
    resource, scope = resource_and_scope("bench")
    readables, encoder = Readables(resource, scope), OtlpEncoder(resource, scope)
    rng = random.Random(18)
    frames = [marshal.dumps(batch(args.spans, rng, k * args.spans)) for k in range(args.batches)]
    batches = [marshal.loads(f) for f in frames]
    for b in batches:  # the same bytes (and a warm-up of both)
        assert encoder(b) == encode_spans(readables(b)).SerializePartialToString()

    def sdk() -> None:
        for b in batches:
            encode_spans(readables(b)).SerializePartialToString()

    def otlp() -> None:
        for b in batches:
            encoder(b)

    def frame() -> None:
        for f in frames:
            marshal.loads(f)

    paths = {"sdk": sdk, "otlp": otlp, "marshal.loads": frame}
    per: dict[str, list[float]] = {name: [] for name in paths}
    n = args.spans * args.batches
    for _ in range(args.rounds):
        for name, run in paths.items():
            t0 = time.process_time()
            run()
            per[name].append(1e6 * (time.process_time() - t0) / n)
    print(f"{args.batches} batches of {args.spans} spans, {args.rounds} alternating rounds, CPU µs per span")
    print(f"{'':14} {'median':>7} {'min':>7} {'max':>7}")
    med = {name: statistics.median(v) for name, v in per.items()}
    for name, v in per.items():
        print(f"{name:14} {med[name]:7.2f} {min(v):7.2f} {max(v):7.2f}")
    print(f"sdk/otlp: {med['sdk'] / med['otlp']:.1f}x less CPU per span for the encoding")
    both = med["marshal.loads"]
    print(f"with the frame's marshal.loads: {(med['sdk'] + both) / (med['otlp'] + both):.1f}x")


if __name__ == "__main__":
    main()
