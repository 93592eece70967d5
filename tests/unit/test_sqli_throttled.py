"""The SQL injection differentials never compare a throttled answer (429/503) with a real one:
a rate limit's answers falling on some probes and not others made a hardened API look
injectable (a flake of test_real_targets' hardened shop, seen on a loaded machine)."""

from __future__ import annotations

import asyncio
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.scanner.checks.sqli import Answer, Prober

ROWS = [{"id": i} for i in range(3)]


def search(injectable: bool):
    """A search endpoint: what it answers for `q`, as a SQL LIKE over three rows would (injectable)
    or as a parameterised one does (the value only ever matched as text: no rows)."""

    def answer(q: str) -> Answer:
        if injectable:
            if "'" in q.replace("''", ""):
                tail = q.split("'", 1)[1]
                if re.search(r"OR 'a' LIKE 'a|OR 1=1", tail):
                    return Answer(200, b"[...]", ROWS)
                if re.search(r"OR 'a' LIKE 'b|OR 1=2", tail):
                    return Answer(200, b"[]", [])
                return Answer(500, b"syntax error")
        return Answer(200, b"[]", [])

    return answer


def run(injectable: bool, throttled: list[bool]) -> str | None:
    """The prober over `search(injectable)`, the n-th request answered 429 when `throttled[n]`."""
    endpoint = search(injectable)
    seen = iter(throttled)

    async def send(v: str) -> Answer:
        if next(seen, False):
            return Answer(429, b'{"title": "Too Many Requests"}', {"title": "Too Many Requests"})
        return endpoint(v)

    async def no_pause(seconds: float) -> None:
        return None

    return asyncio.run(Prober(send, no_pause).run("scan", False))


@settings(max_examples=300)
@given(st.lists(st.booleans(), max_size=40))
def test_a_parameterised_search_is_never_reported_whatever_is_throttled(throttled: list[bool]) -> None:
    assert run(False, throttled) is None


@settings(max_examples=300)
@given(st.lists(st.booleans(), max_size=40).filter(lambda t: "TTT" not in "".join("T" if b else "F" for b in t)))
def test_an_injectable_search_is_found_when_no_probe_is_throttled_three_times_running(throttled: list[bool]) -> None:
    # (three answers in a row throttled: the prober gives the differential up, as it should)
    assert run(True, throttled) is not None


def test_a_server_that_keeps_throttling_gives_no_finding() -> None:
    assert run(True, [True] * 40) is None
