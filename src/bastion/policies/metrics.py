"""Metrics: each request counted and timed (Prometheus, served by the admin listener)."""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any, ClassVar

from bastion.http import Request, Response, ip_text
from bastion.live import LIVE
from bastion.observability import BOUNDS, HIST_SUM, REQUEST_METRICS, new_histogram
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
        self._client: tuple[Any, str] = (None, "-")  # the last client address and its text

    def on_log(self, req: Request, resp: Response, ctx: Context, record: dict[str, Any]) -> None:
        stats = self.stats
        route = req.route_name or "-"
        method = req.method
        if len(method) > 10:
            method = "OTHER"
        status = resp.status
        entry = stats.requests.get((route, method, status))
        if entry is None:
            stats.requests[(route, method, status)] = [1, time.time()]
        else:
            entry[0] += 1
        stopped_by = resp.stopped_by
        if stopped_by:
            stats.count(stats.rejections, (stopped_by, status))
            if stopped_by == "proxy" and status in (502, 504):
                stats.count(stats.upstream_errors, (route, "timeout" if status == 504 else "unavailable"))
        if record.get("upstream_aborted"):
            stats.count(stats.upstream_errors, (route, "aborted"))
        timers = stats.timers.get(route)
        if timers is None:
            timers = stats.timers[route] = (new_histogram(), new_histogram())
        ip = req.client_ip
        if ip is None:
            client = "-"
        else:
            last = self._client  # the same client's requests come in runs: its text once a run
            if last[0] is ip:
                client = last[1]
            else:
                client = ip_text(ip)
                self._client = (ip, client)
        LIVE.record(route, client, req, resp, ctx.values)
        # the two observations (see bastion.observability)
        total = record.get("duration_ms")
        upstream = record.get("upstream_ms")
        if upstream is not None:
            hist = timers[0]
            value = upstream / 1000
            if value == value:
                hist[bisect_left(BOUNDS, value)] += 1
            hist[HIST_SUM] += value
        if total is not None:  # (a websocket's open time is neither the gateway's nor the upstream's answer time)
            value = total - (upstream or 0.0) - record.get("websocket_open_ms", 0.0)
            hist = timers[1]
            value = value / 1000 if value > 0.0 else 0.0
            if value == value:
                hist[bisect_left(BOUNDS, value)] += 1
            hist[HIST_SUM] += value
