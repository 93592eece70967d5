"""Metrics: each request counted and timed (Prometheus, served by the admin listener)."""

from __future__ import annotations

from typing import Any, ClassVar

from bastion.http import Request, Response, ip_text
from bastion.live import LIVE
from bastion.observability import GATEWAY_SECONDS, REJECTIONS, REQUESTS, UPSTREAM_ERRORS, UPSTREAM_SECONDS
from bastion.pipeline import Context, Policy, PolicyConfig


class MetricsConfig(PolicyConfig):
    pass


class Metrics(Policy[MetricsConfig]):
    name: ClassVar[str] = "metrics"
    priority: ClassVar[int] = 5
    Config = MetricsConfig
    unrouted: ClassVar[bool] = True
    default_on: ClassVar[bool] = True

    def __init__(self, config: MetricsConfig, env) -> None:
        super().__init__(config, env)
        self._children: dict[tuple[str, str, int], Any] = {}  # labelled series, looked up once
        self._timers: dict[str, tuple[Any, Any]] = {}

    def on_log(self, req: Request, resp: Response, ctx: Context, record: dict[str, Any]) -> None:
        route = req.route_name or "-"
        key = (route, req.method, resp.status)
        counter = self._children.get(key)
        if counter is None:
            method = req.method if len(req.method) <= 10 else "OTHER"
            counter = self._children[key] = REQUESTS.labels(route, method, str(resp.status))
        counter.inc()
        if resp.stopped_by:
            status = str(resp.status)
            REJECTIONS.labels(resp.stopped_by, status).inc()
            if resp.stopped_by == "proxy" and resp.status in (502, 504):
                UPSTREAM_ERRORS.labels(route, "timeout" if resp.status == 504 else "unavailable").inc()
        if record.get("upstream_aborted"):
            UPSTREAM_ERRORS.labels(route, "aborted").inc()
        timers = self._timers.get(route)
        if timers is None:
            timers = self._timers[route] = (UPSTREAM_SECONDS.labels(route), GATEWAY_SECONDS.labels(route))
        LIVE.record(
            route=route,
            method=req.method,
            path=req.path,
            status=resp.status,
            client=ip_text(req.client_ip) if req.client_ip else "-",
            stopped_by=resp.stopped_by,
            reason=resp.reason or "",
            request_id=req.request_id,
            limited_key=ctx.values.get("rate_limit.limited_key"),
            rate_results=ctx.values.get("rate_limit.results"),
        )
        total = record.get("duration_ms")
        upstream = record.get("upstream_ms")
        if upstream is not None:
            timers[0].observe(upstream / 1000)
        if total is not None:  # (a websocket's open time is neither the gateway's nor the upstream's answer time)
            timers[1].observe(max(0.0, total - (upstream or 0.0) - record.get("websocket_open_ms", 0.0)) / 1000)
