"""Metrics: each request counted and timed (Prometheus, served by the admin listener)."""

from __future__ import annotations

from typing import Any, ClassVar

from bastion.http import Request, Response
from bastion.observability import GATEWAY_SECONDS, REJECTIONS, REQUESTS, UPSTREAM_ERRORS, UPSTREAM_SECONDS
from bastion.pipeline import Context, Policy, PolicyConfig


class MetricsConfig(PolicyConfig):
    pass


class Metrics(Policy):
    name: ClassVar[str] = "metrics"
    priority: ClassVar[int] = 5
    Config = MetricsConfig
    unrouted: ClassVar[bool] = True
    default_on: ClassVar[bool] = True

    def on_log(self, req: Request, resp: Response, ctx: Context, record: dict[str, Any]) -> None:
        route = req.route_name or "-"
        status = str(resp.status)
        REQUESTS.labels(route, req.method if len(req.method) <= 10 else "OTHER", status).inc()
        if resp.stopped_by:
            REJECTIONS.labels(resp.stopped_by, status).inc()
            if resp.stopped_by == "proxy" and resp.status in (502, 504):
                UPSTREAM_ERRORS.labels(route, "timeout" if resp.status == 504 else "unavailable").inc()
        if record.get("upstream_aborted"):
            UPSTREAM_ERRORS.labels(route, "aborted").inc()
        total = record.get("duration_ms")
        upstream = record.get("upstream_ms")
        if upstream is not None:
            UPSTREAM_SECONDS.labels(route).observe(upstream / 1000)
        if total is not None:
            GATEWAY_SECONDS.labels(route).observe(max(0.0, total - (upstream or 0.0)) / 1000)
