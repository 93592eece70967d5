"""The same hits at the same times get the same answers from bastion and from `limits`
(fixed window, moving window = sliding log, sliding window counter), with limits' memory
storage driven by the same controlled clock."""

import random

import pytest
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)

from bastion.ratelimit import MemoryStore
from bastion.ratelimit.rate import Rate

PAIRS = [
    ("fixed_window", FixedWindowRateLimiter),
    ("sliding_log", MovingWindowRateLimiter),
    ("sliding_counter", SlidingWindowCounterRateLimiter),
]


class Clock:
    def __init__(self, t):
        self.t = t

    def time(self):
        return self.t


def sequence(seed, n=400):
    rng = random.Random(seed)
    t = 1_700_000_000.0 + rng.random() * 10  # arbitrary phase against window boundaries
    out = []
    for _ in range(n):
        t += rng.choice([0.0, 0.001, 0.01, 0.05, 0.2, 0.7, 1.3, 3.0])
        out.append(round(t, 6))
    return out


@pytest.mark.parametrize("algorithm,strategy", PAIRS)
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit,period", [(5, 2), (10, 10), (3, 1)])
def test_same_answers_as_limits(monkeypatch, algorithm, strategy, seed, limit, period):
    clock = Clock(0.0)
    import limits.storage.memory as mem

    monkeypatch.setattr(mem.time, "time", clock.time)
    storage = MemoryStorage()
    theirs = strategy(storage)
    item = RateLimitItemPerSecond(limit, period)
    ours = MemoryStore()
    rate = Rate(limit, float(period))
    mismatches = []
    for t in sequence(seed):
        clock.t = t
        expected = theirs.hit(item, "k")
        got = ours.hit_sync(algorithm, "k", rate, now=t).allowed
        if expected != got:
            mismatches.append((t, expected, got))
    storage.reset()
    assert not mismatches, mismatches[:5]
