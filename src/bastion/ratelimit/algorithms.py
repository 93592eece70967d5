"""The six algorithms as pure functions of (state, now, rate, cost).

The memory store runs these functions; the Redis store runs the Lua script of the same name in
`lua/`, a line-for-line translation (tests check that both answer alike). A state is a tuple of
floats (a list of (time, cost) pairs for the sliding log); None is a fresh key.

Trade-offs, in one line each:
- fixed window: one counter; cheap; lets up to 2x the limit through around a window boundary.
- sliding log: exact; memory grows with the limit (one entry per unit of cost in the window).
- sliding counter: two counters, weighted; close to exact, O(1); assumes even spread in the
  previous window.
- token bucket: smooth rate with bursts up to `burst`; state is (tokens, time).
- leaky bucket: meter (reject above capacity) or shaper (delay up to `max_delay` so requests
  leave at the fixed rate); the shaper smooths traffic for fragile upstreams at the cost of latency.
- GCRA: the token bucket's decisions with one number of state (the theoretical arrival time);
  the cheapest for Redis.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, NamedTuple

from bastion.ratelimit.rate import Rate

INF = float("inf")


class Decision(NamedTuple):
    allowed: bool
    limit: int
    remaining: int
    reset_after: float  # seconds until the full limit is available again
    retry_after: float  # seconds until this request could pass (0 when allowed; inf: never)
    delay: float = 0.0  # leaky-bucket shaper: hold the request this long before forwarding


class Log:
    """The sliding log's state: entries oldest first, and their total cost."""

    __slots__ = ("entries", "used")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.used = 0


def fixed_window(state: Any, now: float, rate: Rate, cost: int) -> tuple[Any, Decision]:
    """The window starts at the first hit after the previous one ended (as `limits` does)."""
    limit, period = rate.limit, rate.period
    if state is None or now >= state[0] + period:
        start, count = now, 0.0
    else:
        start, count = state
    if count + cost <= limit:
        count += cost
        return (start, count), Decision(True, limit, int(limit - count), start + period - now, 0.0)
    reset = start + period - now
    # a refusal consumes nothing and never starts a window
    return state, Decision(
        False, limit, int(limit - count) if count < limit else 0, reset, reset if cost <= limit else INF
    )


def sliding_log(state: Any, now: float, rate: Rate, cost: int) -> tuple[Any, Decision]:
    """Exact: an entry counts while it is at most `period` seconds old."""
    limit, period = rate.limit, rate.period
    log = state if state is not None else Log()
    entries = log.entries
    horizon = now - period
    while entries and entries[0][0] < horizon:
        log.used -= entries.popleft()[1]
    allowed = log.used + cost <= limit
    if allowed:
        entries.append((now, cost))
        log.used += cost
        retry = 0.0
    elif cost > limit:
        retry = INF
    else:
        need, freed, retry = log.used + cost - limit, 0, 0.0
        for ts, c in entries:
            freed += c
            if freed >= need:
                retry = ts + period - now
                break
    reset = (entries[-1][0] + period - now) if entries else 0.0
    return log, Decision(allowed, limit, int(max(0, limit - log.used)), reset, retry)


def sliding_counter(state: Any, now: float, rate: Rate, cost: int) -> tuple[Any, Decision]:
    """Windows aligned to the clock; the previous window's count weighs by how much of it is
    still inside the sliding period (the formula of `limits`)."""
    limit, period = rate.limit, rate.period
    window = math.floor(now / period)
    if state is None:
        prev = cur = 0.0
    else:
        w, p, c = state
        if w == window:
            prev, cur = p, c
        elif w == window - 1:
            prev, cur = c, 0.0
        else:
            prev = cur = 0.0
    weight = 1.0 - ((now / period) % 1.0)
    weighted = prev * weight + cur
    allowed = math.floor(weighted) + cost <= limit
    if allowed:
        cur += cost
        weighted += cost
    if cur > 0:
        reset = (window + 2) * period - now
    elif prev > 0:
        reset = (window + 1) * period - now
    else:
        reset = 0.0
    retry = 0.0 if allowed else _counter_retry(prev, cur, weight, now, window, rate, cost)
    remaining = int(max(0, limit - math.floor(weighted)))
    return (float(window), prev, cur), Decision(allowed, limit, remaining, reset, retry)


def _counter_retry(prev: float, cur: float, weight: float, now: float, window: int, rate: Rate, cost: int) -> float:
    limit, period = rate.limit, rate.period
    if cost > limit:
        return INF
    room = limit - cost + 1  # allowed while prev * w + cur < room
    if cur < room:  # later in this window the previous one weighs little enough
        if prev <= 0:
            return 0.0
        w_needed = (room - cur) / prev  # weight must fall below this
        if w_needed >= weight:
            return 0.0
        return (weight - w_needed) * period + 1e-6
    # only in the next window, where this window's count becomes the previous one
    w_needed = room / cur
    return (window + 1) * period - now + (1.0 - w_needed) * period + 1e-6


def token_bucket(state: Any, now: float, rate: Rate, cost: int) -> tuple[Any, Decision]:
    capacity, per_sec = rate.capacity, rate.per_second
    if state is None:
        tokens = float(capacity)
    else:
        tokens, last = state
        tokens = min(capacity, tokens + max(0.0, now - last) * per_sec)
    allowed = tokens >= cost
    if allowed:
        tokens -= cost
        retry = 0.0
    else:
        retry = (cost - tokens) / per_sec if cost <= capacity else INF
    reset = (capacity - tokens) / per_sec
    return (tokens, now), Decision(allowed, capacity, int(tokens), reset, retry)


def leaky_bucket(state: Any, now: float, rate: Rate, cost: int, max_delay: float = 0.0) -> tuple[Any, Decision]:
    """A meter when `max_delay` is 0 (over capacity: refused); otherwise a shaper: requests
    leave at the fixed rate, each waiting up to `max_delay`, and the queue holds `capacity`."""
    capacity, per_sec = rate.capacity, rate.per_second
    if state is None:
        level = 0.0
    else:
        level, last = state
        level = max(0.0, level - max(0.0, now - last) * per_sec)
    if max_delay <= 0:
        allowed = level + cost <= capacity
        if allowed:
            level += cost
        retry = 0.0 if allowed else ((level + cost - capacity) / per_sec if cost <= capacity else INF)
        reset = level / per_sec
        return (level, now), Decision(allowed, capacity, int(max(0, capacity - level)), reset, retry)
    # shaper: the queue ahead of this request drains in level / per_sec seconds
    delay = level / per_sec
    allowed = level + cost <= capacity and delay <= max_delay
    if allowed:
        level += cost
        retry = 0.0
    elif cost > capacity:
        retry = INF
    else:
        over_capacity = (level + cost - capacity) / per_sec
        over_delay = delay - max_delay
        retry = max(over_capacity, over_delay, 0.0)
    reset = level / per_sec
    return (level, now), Decision(
        allowed, capacity, int(max(0, capacity - level)), reset, retry, delay if allowed else 0.0
    )


def gcra(state: Any, now: float, rate: Rate, cost: int) -> tuple[Any, Decision]:
    capacity = rate.capacity
    interval = rate.period / rate.limit  # emission interval T
    tat = now if state is None else max(state[0], now)
    new_tat = tat + interval * cost
    allow_at = new_tat - capacity * interval
    allowed = now >= allow_at - 1e-9
    if allowed:
        tat = new_tat
        retry = 0.0
    else:
        retry = allow_at - now if cost <= capacity else INF
    remaining = int(max(0.0, math.floor((now - (tat - capacity * interval)) / interval + 1e-9)))
    return (tat,), Decision(allowed, capacity, min(capacity, remaining), max(0.0, tat - now), retry)


ALGORITHMS = {
    "fixed_window": fixed_window,
    "sliding_log": sliding_log,
    "sliding_counter": sliding_counter,
    "token_bucket": token_bucket,
    "leaky_bucket": leaky_bucket,
    "gcra": gcra,
}


def ttl(algorithm: str, rate: Rate) -> float:
    """How long a key's state matters after its last hit (for expiry in both stores)."""
    if algorithm in ("token_bucket", "leaky_bucket", "gcra"):
        return max(rate.period, rate.capacity / rate.per_second) + 1
    return 2 * rate.period + 1
