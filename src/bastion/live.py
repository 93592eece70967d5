"""What the dashboard shows, kept in memory by the `metrics` policy's log phase: per-second
buckets for the last five minutes (requests by status class, rejections by policy, clients,
rate-limited keys), rate-limit headroom per route, and the most recent blocked requests.

Cheap on the hot path (two dict increments per request, the rest only for refused or rate-limited
requests); the aggregation (status classes, totals, top lists) happens when the admin API asks.
"""

from __future__ import annotations

from collections import Counter, deque
from time import time as _time
from typing import Any

WINDOW = 300  # seconds of history
_CLASSES = tuple(f"{i}xx" for i in range(10))  # status class labels, made once
EVENTS = 200  # blocked requests kept


class Bucket:
    """One second's counts. What the request path adds is kept raw (answers by status code, not
    yet by class; no total): `snapshot` derives the rest when the admin API asks."""

    __slots__ = ("second", "statuses", "rejections", "clients", "limited")

    def __init__(self, second: int) -> None:
        self.second = second
        self.statuses: dict[int, int] = {}  # status code → n
        self.rejections: dict[str, int] = {}  # policy → n
        self.clients: dict[str, int] = {}
        self.limited: dict[str, int] = {}

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def classes(self) -> dict[str, int]:
        """Answers by status class ("2xx" → n), the classes in the order they first came."""
        out: dict[str, int] = {}
        for status, n in self.statuses.items():
            label = _CLASSES[status // 100] if 100 <= status < 1000 else f"{status // 100}xx"
            out[label] = out.get(label, 0) + n
        return out


class Live:
    def __init__(self) -> None:
        self.buckets: deque[Bucket] = deque(maxlen=WINDOW)
        self.events: deque[dict[str, Any]] = deque(maxlen=EVENTS)
        self.headroom: dict[str, dict[str, Any]] = {}
        self.started = _time()

    def _bucket(self, second: int) -> Bucket:
        if not self.buckets or self.buckets[-1].second != second:
            self.buckets.append(Bucket(second))
        return self.buckets[-1]

    def record(self, route: str, client: str, req: Any, resp: Any, values: dict[str, Any]) -> None:
        """One answered request (`req`, `resp`: bastion.http's Request and Response; `client`:
        its address as text; `values`: its Context's values, for the rate-limit results). The
        request's other fields are read only when it was refused (an event)."""
        now = _time()
        second = int(now)
        buckets = self.buckets
        b = buckets[-1] if buckets and buckets[-1].second == second else self._bucket(second)
        status = resp.status
        statuses = b.statuses
        statuses[status] = statuses.get(status, 0) + 1
        counts = b.clients
        counts[client] = counts.get(client, 0) + 1
        stopped_by = resp.stopped_by
        if stopped_by and status >= 400:
            counts = b.rejections
            counts[stopped_by] = counts.get(stopped_by, 0) + 1
            self.events.append(
                {
                    "time": now,
                    "status": status,
                    "policy": stopped_by,
                    "reason": (resp.reason or "")[:160],
                    "method": req.method,
                    "path": req.path[:200],
                    "client": client,
                    "route": route,
                    "request_id": req.request_id,
                }
            )
        if values:
            limited_key = values.get("rate_limit.limited_key")
            if limited_key:
                key = limited_key[:120]
                counts = b.limited
                counts[key] = counts.get(key, 0) + 1
            rate_results = values.get("rate_limit.results")
            if rate_results:
                tightest = min(rate_results, key=lambda r: r[1].remaining / max(1, r[1].limit))
                limit, d = tightest
                self.headroom[route] = {"limit": limit.name, "remaining": d.remaining, "of": d.limit, "time": now}

    def snapshot(self, seconds: int = 120) -> dict[str, Any]:
        now = int(_time())
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
            series.append({"t": sec, "total": b.total, "classes": b.classes, "rejections": dict(b.rejections)})
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
