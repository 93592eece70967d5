"""The supervisor's arithmetic: Prometheus texts summed across workers, the dashboard's live
data merged, and the restart backoff of a worker that keeps dying."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bastion.gateway.workers import Slot, Supervisor, merge_live, merge_metrics


def _worker_text(requests: int, observed: list[float], inflight: int, up: int, version: int) -> str:
    reg = CollectorRegistry()
    c = Counter("bastion_requests", "r", ["route"], registry=reg)
    c.labels("/a").inc(requests)
    h = Histogram("bastion_gateway_overhead_seconds", "h", ["route"], buckets=(0.001, 0.01), registry=reg)
    for v in observed:
        h.labels("/a").observe(v)
    Gauge("bastion_requests_in_flight", "g", registry=reg).set(inflight)
    Gauge("bastion_store_up", "g", ["store"], registry=reg).labels("redis").set(up)
    Gauge("bastion_config_version", "g", registry=reg).set(version)
    return generate_latest(reg).decode()


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text.decode())
        for s in fam.samples
    }


def test_counters_and_histograms_are_summed_gauges_of_shared_things_take_the_worst():
    a = _worker_text(3, [0.0005, 0.005], inflight=2, up=1, version=4)
    b = _worker_text(5, [0.5], inflight=1, up=0, version=3)
    got = _samples(merge_metrics([a, b]))
    assert got[("bastion_requests_total", (("route", "/a"),))] == 8
    assert got[("bastion_gateway_overhead_seconds_count", (("route", "/a"),))] == 3
    assert got[("bastion_gateway_overhead_seconds_bucket", (("le", "0.001"), ("route", "/a")))] == 1
    assert got[("bastion_gateway_overhead_seconds_bucket", (("le", "0.01"), ("route", "/a")))] == 2
    assert got[("bastion_gateway_overhead_seconds_bucket", (("le", "+Inf"), ("route", "/a")))] == 3
    assert abs(got[("bastion_gateway_overhead_seconds_sum", (("route", "/a"),))] - 0.5055) < 1e-9
    assert got[("bastion_requests_in_flight", ())] == 3
    assert got[("bastion_store_up", (("store", "redis"),))] == 0  # one worker cannot reach it
    assert got[("bastion_config_version", ())] == 3  # the laggard
    created = got[("bastion_requests_created", (("route", "/a"),))]
    assert created <= time.time()


def test_one_worker_merges_to_itself():
    a = _worker_text(7, [0.002], inflight=0, up=1, version=1)
    assert _samples(merge_metrics([a])) == _samples(a.encode())


def _snap(now: int, totals: dict[int, int], clients: list[list[Any]], events: list[dict]) -> dict[str, Any]:
    return {
        "now": now,
        "seconds": 10,
        "series": [
            {"t": t, "total": totals.get(t, 0), "classes": {"2xx": totals.get(t, 0)}, "rejections": {}}
            for t in range(now - 9, now + 1)
        ],
        "policies": ["rate_limit"],
        "top_clients": clients,
        "top_limited": [],
        "headroom": [],
        "events": events,
    }


def test_live_series_are_added_by_second_and_top_lists_reranked():
    now = 1_000_000
    a = _snap(now, {now: 3, now - 1: 2}, [["10.0.0.1", 5]], [{"time": 5.0, "path": "/a"}])
    b = _snap(now - 1, {now - 1: 4}, [["10.0.0.2", 3], ["10.0.0.1", 1]], [{"time": 7.0, "path": "/b"}])
    got = merge_live([a, b])
    by_t = {p["t"]: p for p in got["series"]}
    assert by_t[now]["total"] == 3 and by_t[now - 1]["total"] == 6 and by_t[now - 1]["classes"] == {"2xx": 6}
    assert sum(p["total"] for p in got["series"]) == 9
    assert got["top_clients"] == [("10.0.0.1", 6), ("10.0.0.2", 3)]
    assert [e["path"] for e in got["events"]] == ["/b", "/a"]
    assert got["workers"] == 2


class _Dead:
    def __init__(self, pid: int, code: int) -> None:
        self.pid, self.returncode = pid, code

    def poll(self) -> int:
        return self.returncode


def test_a_worker_that_keeps_dying_is_retried_with_a_doubling_delay(tmp_path: Path, monkeypatch):
    cfg = tmp_path / "b.yaml"
    cfg.write_text("routes: []\n")
    sup = Supervisor(str(cfg), 1, watch=False)
    slot = Slot(0, str(tmp_path / "w.sock"), None)  # type: ignore[arg-type]
    sup.slots.append(slot)
    spawned: list[float] = []

    def spawn(s: Slot) -> None:
        spawned.append(time.monotonic())
        s.proc = _Dead(100 + len(spawned), 3)  # type: ignore[assignment]
        s.started = time.monotonic()

    monkeypatch.setattr(sup, "_spawn", spawn)
    slot.proc, slot.started = _Dead(100, 3), time.monotonic()  # type: ignore[assignment]
    delays = []
    for _ in range(6):
        sup._reap()  # notices the death, schedules the restart
        assert slot.restart_at is not None
        delays.append(round(slot.restart_at - time.monotonic(), 1))
        n = len(spawned)
        sup._reap()  # too early: nothing is started
        assert len(spawned) == n
        slot.restart_at = time.monotonic() - 0.001  # let the time pass
        sup._reap()
        assert len(spawned) == n + 1
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert slot.restarts == 6
    slot.started -= 60  # a worker that lived a while is replaced at once
    sup._reap()
    assert slot.restart_at is not None and slot.restart_at - time.monotonic() < 0.2
    import shutil

    shutil.rmtree(sup.rundir)


# --- which configs keep state per process: the lint against what the compiler builds ---------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_STORES = st.sampled_from(["memory", "redis://127.0.0.1:6379/9"])
_RATE = st.fixed_dictionaries(
    {},
    optional={
        "store": _STORES,
        "limits": st.sampled_from([[], ["5/second"]]),
        "tiers": st.sampled_from([{}, {"gold": ["9/second"]}]),
        "login_limits": st.sampled_from([[], ["3/minute"]]),
        "enabled": st.booleans(),
    },
)
_AUTH = st.fixed_dictionaries(
    {},
    optional={
        "revocation_store": _STORES,
        "schemes": st.sampled_from(
            [{}, {"k": {"type": "api_key", "keys": [{"id": "a", "owner": "o", "hash": "sha256:" + "0" * 64}]}}]
        ),
        "enabled": st.booleans(),
    },
)
_SECTION = st.fixed_dictionaries({}, optional={"rate_limit": _RATE, "auth": _AUTH})


def _memory_state_built(state: Any) -> bool:
    """The oracle: the policies the compiler actually built, after merging routes over defaults."""
    for p in state.policies:
        if p.name == "rate_limit" and p.store_url == "memory" and (p.limits or p.tiers or p.login):
            return True
        if p.name == "auth" and p.revocation_url == "memory" and p.schemes:
            return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(defaults=_SECTION, routes=st.lists(_SECTION, max_size=3), allow=st.booleans(), workers=st.integers(1, 4))
def test_several_workers_are_refused_exactly_when_a_built_policy_keeps_state_in_memory(
    defaults, routes, allow, workers
):
    import asyncio

    from bastion.config.lint import lint, per_process_state
    from bastion.config.model import GatewayConfig
    from bastion.gateway.state import compile_state

    doc = {
        "upstreams": {"up": {"urls": ["http://127.0.0.1:9"]}},
        "policies": {"audit": {"enabled": False}, **defaults},
        "routes": [{"path": f"/r{i}", "upstream": "up", "policies": r} for i, r in enumerate(routes)],
        "allow_per_worker_state": allow,
    }
    cfg = GatewayConfig.model_validate(doc)
    state = compile_state(cfg)
    try:
        built = _memory_state_built(state)
    finally:
        asyncio.run(state.close())
    assert bool(per_process_state(cfg)) == built
    refused = any(f.severity == "error" and "'memory'" in f.message for f in lint(cfg, workers=workers))
    assert refused == (built and workers > 1 and not allow)


def test_a_reload_to_a_memory_store_under_several_workers_is_refused(tmp_path: Path):
    import asyncio
    import shutil

    cfg = tmp_path / "b.yaml"
    cfg.write_text("policies: {rate_limit: {store: 'redis://127.0.0.1:6379/9', limits: ['5/second']}}\n")
    sup = Supervisor(str(cfg), 2, watch=False)
    try:
        good = Path(sup.copy).read_text()
        cfg.write_text("policies: {rate_limit: {limits: ['5/second']}}\n")  # memory, 2 workers
        assert asyncio.run(sup.reload("test")) is False
        assert Path(sup.copy).read_text() == good and sup.version == 1  # the workers' copy is untouched
        cfg.write_text("policies: {rate_limit: {store: 'redis://127.0.0.1:6379/9', limits: ['6/second']}}\n")
        assert asyncio.run(sup.reload("test")) is True
        assert "6/second" in Path(sup.copy).read_text() and sup.version == 2
    finally:
        shutil.rmtree(sup.rundir)
