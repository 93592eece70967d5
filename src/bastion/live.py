"""What the dashboard shows, kept in memory by the `metrics` policy's log phase: per-second
buckets for the last five minutes (requests by status class, rejections by policy, clients,
rate-limited keys), rate-limit headroom per route, and the most recent blocked requests.

Cheap on the hot path (a few dict increments per request); the aggregation happens when the
admin API is asked.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

WINDOW = 300  # seconds of history
_CLASSES = tuple(f"{i}xx" for i in range(10))  # status class labels, made once
EVENTS = 200  # blocked requests kept


@dataclass
class Bucket:
    second: int
    total: int = 0
    classes: Counter = field(default_factory=Counter)  # "2xx" → n
    rejections: Counter = field(default_factory=Counter)  # policy → n
    clients: Counter = field(default_factory=Counter)
    limited: Counter = field(default_factory=Counter)


class Live:
    def __init__(self) -> None:
        self.buckets: deque[Bucket] = deque(maxlen=WINDOW)
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self.headroom: dict[str, dict[str, Any]] = {}
        self.started = time.time()

    def _bucket(self, now: float) -> Bucket:
        second = int(now)
        if not self.buckets or self.buckets[-1].second != second:
            self.buckets.append(Bucket(second))
        return self.buckets[-1]

    def record(
        self,
        *,
        route: str,
        method: str,
        path: str,
        status: int,
        client: str,
        stopped_by: str,
        reason: str,
        request_id: str,
        limited_key: str | None,
        rate_results: Any,
    ) -> None:
        now = time.time()
        buckets = self.buckets
        if buckets and buckets[-1].second == int(now):
            b = buckets[-1]
        else:
            b = self._bucket(now)
        b.total += 1
        b.classes[_CLASSES[status // 100] if 100 <= status < 1000 else f"{status // 100}xx"] += 1
        b.clients[client] += 1
        if stopped_by and status >= 400:
            b.rejections[stopped_by] += 1
            self.events.append(
                {
                    "time": now,
                    "status": status,
                    "policy": stopped_by,
                    "reason": reason[:160],
                    "method": method,
                    "path": path[:200],
                    "client": client,
                    "route": route,
                    "request_id": request_id,
                }
            )
        if limited_key:
            b.limited[limited_key[:120]] += 1
        if rate_results:
            tightest = min(rate_results, key=lambda r: r[1].remaining / max(1, r[1].limit))
            limit, d = tightest
            self.headroom[route] = {"limit": limit.name, "remaining": d.remaining, "of": d.limit, "time": now}

    def snapshot(self, seconds: int = 120) -> dict[str, Any]:
        now = int(time.time())
        start = now - seconds + 1
        by_second = {b.second: b for b in self.buckets if b.second >= start}
        series = []
        clients: Counter = Counter()
        limited: Counter = Counter()
        policies: set[str] = set()
        for sec in range(start, now + 1):
            b = by_second.get(sec)
            if b is None:
                series.append({"t": sec, "total": 0, "classes": {}, "rejections": {}})
                continue
            series.append({"t": sec, "total": b.total, "classes": dict(b.classes), "rejections": dict(b.rejections)})
            clients.update(b.clients)
            limited.update(b.limited)
            policies.update(b.rejections)
        return {
            "now": now,
            "seconds": seconds,
            "series": series,
            "policies": sorted(policies),
            "top_clients": clients.most_common(8),
            "top_limited": limited.most_common(8),
            "headroom": [{"route": r, **h} for r, h in sorted(self.headroom.items()) if h["time"] > now - WINDOW],
            "events": list(self.events)[-50:][::-1],
        }


LIVE = Live()
