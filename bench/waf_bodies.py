"""bench/waf_bodies: the WAF's request-phase cost per body type, beside the same request with no
body inspection, same run.

    .venv/bin/python bench/waf_bodies.py [--seconds 1]

Calls the policy's `on_request` in process (no sockets: the gateway's own cost is in
bench/gateway.py) for a ~1 KB body in each wrapping docs/waf.md lists: JSON, form, multipart,
XML (defusedxml parse + every string to ModSecurity as JSON), application/graphql, no
Content-Type (sniffed), gzip JSON (decoded first). The baseline is the same JSON request with
`inspect_body: false` (headers, path and query still inspected). Prints requests/s and the
ratio to the baseline, and the extra microseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import time
from types import SimpleNamespace

import orjson

from bastion.http import Request
from bastion.pipeline import Context
from bastion.policies.waf import Waf, WafConfig

DOC = {
    "customer": 42,
    "note": "Please leave it at the door, thanks!",
    "items": [{"sku": f"SKU-{i}", "qty": i, "price": 9.5, "name": "wooden chair"} for i in range(12)],
}
JSON = orjson.dumps(DOC)
FORM = b"&".join(b"item%d=wooden+chair+%d&qty%d=%d" % (i, i, i, i) for i in range(30))
XML = (
    b'<?xml version="1.0"?><order customer="42"><note>Please leave it at the door</note>'
    + b"".join(b'<item sku="SKU-%d" qty="%d">wooden chair</item>' % (i, i) for i in range(24))
    + b"</order>"
)
MULTIPART = (
    b"".join(
        b'--B0undary\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nwooden chair %d\r\n' % (i, i)
        for i in range(20)
    )
    + b"--B0undary--\r\n"
)
GRAPHQL = b"query Order($id: ID!) { order(id: $id) { id customer note items(first: 20) { sku qty price } } }"
CASES = {
    "json": ([(b"content-type", b"application/json")], JSON),
    "form": ([(b"content-type", b"application/x-www-form-urlencoded")], FORM),
    "multipart": ([(b"content-type", b"multipart/form-data; boundary=B0undary")], MULTIPART),
    "xml": ([(b"content-type", b"application/xml")], XML),
    "graphql": ([(b"content-type", b"application/graphql")], GRAPHQL),
    "untyped (sniffed json)": ([], JSON),
    "gzip json": ([(b"content-type", b"application/json"), (b"content-encoding", b"gzip")], gzip.compress(JSON)),
}
BASE = [(b"host", b"api.example.com"), (b"user-agent", b"Mozilla/5.0 (bench)"), (b"accept", b"*/*")]


def request(headers, body: bytes) -> Request:
    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    hs = BASE + headers + [(b"content-length", str(len(body)).encode())]
    return Request(
        method="POST",
        path="/api/orders",
        query=b"",
        headers=hs,
        client_ip=None,
        peer_ip=None,
        peer_trusted=False,
        scheme="http",
        host="api.example.com",
        receive=receive,
        body_limit=1024 * 1024,
    )


def rate(policy: Waf, headers, body: bytes, seconds: float) -> float:
    async def run() -> float:
        n, t0 = 0, time.perf_counter()
        while True:
            for _ in range(50):
                resp = await policy.on_request(request(headers, body), Context())
                assert resp is None, resp.body
            n += 50
            now = time.perf_counter()
            if now - t0 >= seconds:
                return n / (now - t0)

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    env = SimpleNamespace(config_dir=".")
    inspecting = Waf(WafConfig(exclude_rules=[932100, 942190]), env)
    headers_only = Waf(WafConfig(inspect_body=False, exclude_rules=[932100, 942190]), env)
    base = rate(headers_only, *CASES["json"], args.seconds)
    print(f"{'baseline: json, inspect_body false':38} {base:9.0f} req/s")
    for name, (headers, body) in CASES.items():
        r = rate(inspecting, headers, body, args.seconds)
        print(f"{name:38} {r:9.0f} req/s  {r / base:5.2f}x baseline  +{(1 / r - 1 / base) * 1e6:6.0f} us/request")


if __name__ == "__main__":
    main()
