"""Metrics: each request counted and timed (Prometheus, served by the admin listener)."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from bastion.http import Request, Response, ip_text
from bastion.live import LIVE
from bastion.observability import REQUEST_METRICS, new_histogram, observe
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
        self.stats = REQUEST_METRICS  # process-wide: the series outlive a reload's new policies

    def on_log(self, req: Request, resp: Response, ctx: Context, record: dict[str, Any]) -> None:
        stats = self.stats
        route = req.route_name or "-"
        method = req.method
        if len(method) > 10:
            method = "OTHER"
        entry = stats.requests.get((route, method, resp.status))
        if entry is None:
            stats.requests[(route, method, resp.status)] = [1, time.time()]
        else:
            entry[0] += 1
        if resp.stopped_by:
            stats.count(stats.rejections, (resp.stopped_by, resp.status))
            if resp.stopped_by == "proxy" and resp.status in (502, 504):
                stats.count(stats.upstream_errors, (route, "timeout" if resp.status == 504 else "unavailable"))
        if record.get("upstream_aborted"):
            stats.count(stats.upstream_errors, (route, "aborted"))
        timers = stats.timers.get(route)
        if timers is None:
            timers = stats.timers[route] = (new_histogram(), new_histogram())
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
            observe(timers[0], upstream / 1000)
        if total is not None:  # (a websocket's open time is neither the gateway's nor the upstream's answer time)
            observe(timers[1], max(0.0, total - (upstream or 0.0) - record.get("websocket_open_ms", 0.0)) / 1000)
