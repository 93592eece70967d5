"""The request series counted into plain structures (`observability.RequestMetrics`) scrape as
prometheus-client's own Counter and Histogram objects did for the same requests: a differential
test on generated request streams, comparing the whole text exposition (and the OpenMetrics one)
of the `metrics` policy's log phase with the old way (prometheus-client children, `inc` and
`observe`, as the policy did before), `_created` values aside (they are times: checked to lie
within the run)."""

from __future__ import annotations

import math
import re
import time
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from bastion.gateway.workers import merge_metrics
from bastion.http import Request, Response
from bastion.observability import _BUCKETS, RequestMetrics
from bastion.pipeline import Context, PolicyEnv
from bastion.policies.metrics import Metrics, MetricsConfig


class OldWay:
    """The metrics policy's log phase as it was: prometheus-client children."""

    def __init__(self) -> None:
        self.registry = reg = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bastion_requests_total", "Requests answered", ["route", "method", "status"], registry=reg
        )
        self.rejections = Counter(
            "bastion_rejections_total", "Requests a policy or the gateway refused", ["policy", "status"], registry=reg
        )
        self.gateway = Histogram(
            "bastion_gateway_overhead_seconds",
            "Time spent in the gateway (total minus upstream)",
            ["route"],
            buckets=_BUCKETS,
            registry=reg,
        )
        self.upstream = Histogram(
            "bastion_upstream_seconds",
            "Time to the upstream's response head",
            ["route"],
            buckets=_BUCKETS,
            registry=reg,
        )
        self.errors = Counter(
            "bastion_upstream_errors_total",
            "Upstream failures (502/504 and broken answers)",
            ["route", "kind"],
            registry=reg,
        )
        self.children: dict[tuple[str, str, int], Any] = {}
        self.timers: dict[str, tuple[Any, Any]] = {}

    def on_log(self, req: Request, resp: Response, record: dict[str, Any]) -> None:
        route = req.route_name or "-"
        key = (route, req.method, resp.status)
        counter = self.children.get(key)
        if counter is None:
            method = req.method if len(req.method) <= 10 else "OTHER"
            counter = self.children[key] = self.requests.labels(route, method, str(resp.status))
        counter.inc()
        if resp.stopped_by:
            status = str(resp.status)
            self.rejections.labels(resp.stopped_by, status).inc()
            if resp.stopped_by == "proxy" and resp.status in (502, 504):
                self.errors.labels(route, "timeout" if resp.status == 504 else "unavailable").inc()
        if record.get("upstream_aborted"):
            self.errors.labels(route, "aborted").inc()
        timers = self.timers.get(route)
        if timers is None:
            timers = self.timers[route] = (self.upstream.labels(route), self.gateway.labels(route))
        total = record.get("duration_ms")
        upstream = record.get("upstream_ms")
        if upstream is not None:
            timers[0].observe(upstream / 1000)
        if total is not None:
            timers[1].observe(max(0.0, total - (upstream or 0.0) - record.get("websocket_open_ms", 0.0)) / 1000)


def request(method: str, route: str | None) -> Request:
    async def receive():
        return {"type": "http.request", "body": b""}

    req = Request(method, "/x", b"", [], None, None, False, "http", "rid", receive)
    req.route_name = route
    return req


# durations in ms: every bucket bound exactly (the `le` edge), just around them, odd values
_edges = [b * 1000 for b in _BUCKETS]
millis = st.one_of(
    st.sampled_from(_edges),
    st.sampled_from([math.nextafter(e, math.inf) for e in _edges] + [math.nextafter(e, 0) for e in _edges]),
    st.floats(min_value=-5, max_value=20000, allow_nan=False),
    st.sampled_from([0.0, -0.0, math.inf, math.nan, 1e300]),
)
event = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["GET", "POST", "DELETE", "PROPFINDXYZ", "VERYLONGMETHOD", "OPTIONS"]),
        "route": st.sampled_from([None, "/users/{id}", "/a", "b"]),
        "status": st.sampled_from([200, 201, 204, 403, 404, 429, 500, 502, 503, 504]),
        "stopped_by": st.sampled_from(["", "", "proxy", "rate_limit", "ip_rules", "auth:jwt"]),
    },
    optional={
        "upstream_aborted": st.booleans(),
        "duration_ms": millis,
        "upstream_ms": millis,
        "websocket_open_ms": millis,
    },
)

_CREATED = re.compile(rb"^(\w+_created(?:\{.*\})?) (\S+)$", re.M)


def split_created(text: bytes) -> tuple[bytes, list[float]]:
    """The text with every `_created` value replaced by T, and those values."""
    return _CREATED.sub(rb"\1 T", text), [float(m[1]) for m in _CREATED.findall(text)]


@settings(max_examples=200, deadline=None)
@given(st.lists(event, max_size=40))
def test_the_scrape_is_prometheus_clients_for_the_same_requests(events):
    t0 = time.time()
    old = OldWay()
    new = RequestMetrics()
    new_registry = CollectorRegistry(auto_describe=True)
    new_registry.register(new)
    policy = Metrics(MetricsConfig(), PolicyEnv())
    policy.stats = new
    for ev in events:
        req = request(ev["method"], ev["route"])
        resp = Response(ev["status"], stopped_by=ev["stopped_by"])
        record = {k: ev[k] for k in ("upstream_aborted", "duration_ms", "upstream_ms", "websocket_open_ms") if k in ev}
        old.on_log(req, resp, record)
        policy.on_log(req, resp, Context(), dict(record))
    t1 = time.time()
    for generate in (generate_latest, generate_openmetrics):
        old_text, old_times = split_created(generate(old.registry))
        new_text, new_times = split_created(generate(new_registry))
        assert new_text == old_text
        assert len(new_times) == len(old_times)
        assert all(t0 <= t <= t1 for t in new_times)
    # the workers' merge reads it as it read the old text
    assert merge_metrics([generate_latest(new_registry).decode()]).count(b"\n") == merge_metrics(
        [generate_latest(old.registry).decode()]
    ).count(b"\n")


def test_a_stream_with_every_kind_of_series_is_not_empty():
    """The differential test above compares something: this stream fills every family."""
    new = RequestMetrics()
    reg = CollectorRegistry()
    reg.register(new)
    policy = Metrics(MetricsConfig(), PolicyEnv())
    policy.stats = new
    policy.on_log(
        request("GET", "/a"),
        Response(502, stopped_by="proxy"),
        Context(),
        {"duration_ms": 3.0, "upstream_aborted": True, "upstream_ms": 1.0},
    )
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(generate_latest(reg).decode())
        for s in fam.samples
    }
    route = ("route", "/a")
    assert got[("bastion_requests_total", (("method", "GET"), route, ("status", "502")))] == 1
    assert got[("bastion_rejections_total", (("policy", "proxy"), ("status", "502")))] == 1
    assert got[("bastion_upstream_errors_total", (("kind", "unavailable"), route))] == 1
    assert got[("bastion_upstream_errors_total", (("kind", "aborted"), route))] == 1
    assert got[("bastion_upstream_seconds_bucket", (("le", "0.0005"), route))] == 0
    assert got[("bastion_upstream_seconds_bucket", (("le", "0.001"), route))] == 1
    assert got[("bastion_gateway_overhead_seconds_bucket", (("le", "0.001"), route))] == 0
    assert got[("bastion_gateway_overhead_seconds_bucket", (("le", "0.0025"), route))] == 1
    assert got[("bastion_gateway_overhead_seconds_count", (route,))] == 1
    assert got[("bastion_gateway_overhead_seconds_sum", (route,))] == 0.002
