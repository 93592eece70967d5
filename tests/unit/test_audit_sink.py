"""The audit sink shared by threads that each run a loop (an embedder's), and a sink whose
scheduled flush was lost with the loop that held it: every line written once, none left waiting."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path

import pytest
from helpers import plain_request

from bastion.http import Response
from bastion.http.messages import Request
from bastion.pipeline import Context, PolicyEnv
from bastion.policies import audit as audit_module
from bastion.policies.audit import Audit, AuditConfig, _Sink


def _request(path: str) -> Request:
    return plain_request(path)


def _paths(path: Path) -> list[str]:
    return [json.loads(line)["path"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("flush_bytes", [512, 64 * 1024])
def test_threads_each_with_a_loop_write_every_line_once(tmp_path, flush_bytes):
    """Four threads, each running its own loop, log through one policy (one sink, one file) while
    the sink flushes from whichever thread fills it or whose timer fires: each request's line is
    in the file exactly once (the flush used to join the buffer and clear it in two steps:
    another thread's flush in between wrote the same lines twice)."""
    path = tmp_path / "audit.log"
    policy = Audit(AuditConfig(output=str(path)), PolicyEnv(config_dir=str(tmp_path)))
    sink = policy.sink
    sink.FLUSH_BYTES = flush_bytes
    threads, per_thread = 4, 3000
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        async def run() -> None:
            start.wait()
            for i in range(per_thread):
                policy.on_log(_request(f"/t{t}/{i}"), Response(200, []), Context(), {})
                if i % 100 == 0:
                    await asyncio.sleep(0)  # let this loop's timer fire now and then

            await asyncio.sleep(sink.FLUSH_SECONDS * 2)

        asyncio.run(run())

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads switch between any two steps, as on a loaded machine
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(switch)
    sink.flush()
    got = _paths(path)
    want = [f"/t{t}/{i}" for t in range(threads) for i in range(per_thread)]
    assert len(got) == len(want) and sorted(got) == sorted(want)
    for t in range(threads):  # each thread's lines in its own order
        mine = [p for p in got if p.startswith(f"/t{t}/")]
        assert mine == [f"/t{t}/{i}" for i in range(per_thread)]
    _Sink._open.pop(str(path), None)


def test_a_flush_lost_with_its_loop_does_not_hold_later_lines(tmp_path, monkeypatch):
    """The loop holding the flush's timer closes before it fires (an embedder's short-lived loop):
    a line logged later, on another loop, is written within the flush interval once the lost
    flush is overdue, not only at 64 KiB or close."""
    path = tmp_path / "audit.log"
    policy = Audit(AuditConfig(output=str(path)), PolicyEnv(config_dir=str(tmp_path)))
    clock = [1_000_000.0]
    monkeypatch.setattr(audit_module, "_time", lambda: clock[0])

    async def first() -> None:
        policy.on_log(_request("/first"), Response(200, []), Context(), {})  # schedules, then the loop ends

    asyncio.run(first())
    assert path.read_text() == ""  # the timer died with its loop

    async def second() -> None:
        clock[0] += 30.0  # long past any flush's time
        policy.on_log(_request("/second"), Response(200, []), Context(), {})
        await asyncio.sleep(policy.sink.FLUSH_SECONDS * 3)
        assert _paths(path) == ["/first", "/second"]

    asyncio.run(second())
    _Sink._open.pop(str(path), None)


def test_a_flush_still_due_is_not_scheduled_twice(tmp_path):
    """While the scheduled flush is not overdue, lines join the batch without a second timer."""
    path = tmp_path / "audit.log"
    policy = Audit(AuditConfig(output=str(path)), PolicyEnv(config_dir=str(tmp_path)))

    async def run() -> int:
        loop = asyncio.get_running_loop()
        for i in range(50):
            policy.on_log(_request(f"/p{i}"), Response(200, []), Context(), {})
        timers = len(loop._scheduled)  # type: ignore[attr-defined]
        await asyncio.sleep(policy.sink.FLUSH_SECONDS * 3)
        return timers

    assert asyncio.run(run()) == 1
    assert _paths(path) == [f"/p{i}" for i in range(50)]
    _Sink._open.pop(str(path), None)
