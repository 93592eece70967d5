"""Each algorithm against a controlled clock: boundaries, weighting, refill, cost, retry-after."""

import math

import pytest

from bastion.ratelimit import MemoryStore, parse_rate
from bastion.ratelimit.rate import Rate


def hits(algorithm, rate, times, cost=1, **kw):
    store = MemoryStore()
    r = parse_rate(rate) if isinstance(rate, str) else rate
    return [store.hit_sync(algorithm, "k", r, cost, now=t, **kw) for t in times]


def allowed(decisions):
    return [d.allowed for d in decisions]


@pytest.mark.parametrize(
    "text,rate",
    [
        ("100/minute", Rate(100, 60)),
        ("10/second burst 20", Rate(10, 1, 20)),
        ("5 per 10 seconds", Rate(5, 10)),
        ("1000/hour", Rate(1000, 3600)),
        ("3/2m", Rate(3, 120)),
        ("7/day", Rate(7, 86400)),
    ],
)
def test_parse_rate(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("bad", ["", "100", "0/minute", "10/fortnight", "ten/second", "5/second burst 0"])
def test_parse_rate_refuses(bad):
    with pytest.raises(ValueError):
        parse_rate(bad)


def test_fixed_window_lets_a_double_burst_through_at_the_boundary():
    d = hits("fixed_window", "5/10 seconds", [0.0, 9.9, 9.9, 9.9, 9.9, 9.95, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0])
    assert allowed(d) == [True] * 5 + [False] + [True] * 5 + [False]
    assert d[5].retry_after == pytest.approx(0.05)
    assert d[4].remaining == 0 and d[6].remaining == 4


def test_sliding_log_is_exact():
    d = hits("sliding_log", "3/10 seconds", [0, 1, 2, 9.99, 10.0, 10.0001, 10.5])
    assert allowed(d) == [True, True, True, False, False, True, False]
    assert d[3].retry_after == pytest.approx(0.01)  # the entry of t=0 leaves at t=10 (inclusive)
    assert d[6].retry_after == pytest.approx(0.5)  # next the entry of t=1 leaves at 11


def test_sliding_counter_weights_the_previous_window():
    store = MemoryStore()
    r = parse_rate("10/10 seconds")
    for i in range(10):
        assert store.hit_sync("sliding_counter", "k", r, now=float(i)).allowed
    # at t=15 the previous window (10 hits) weighs 0.5: 5 more pass
    results = [store.hit_sync("sliding_counter", "k", r, now=15.0).allowed for _ in range(7)]
    assert results == [True] * 5 + [False] * 2


def test_sliding_counter_retry_after_is_when_it_would_pass():
    store = MemoryStore()
    r = parse_rate("10/10 seconds")
    for i in range(10):
        store.hit_sync("sliding_counter", "k", r, now=float(i))
    refused = store.hit_sync("sliding_counter", "k", r, now=9.5)
    assert not refused.allowed
    later = 9.5 + refused.retry_after
    assert store.hit_sync("sliding_counter", "k", r, now=later).allowed
    assert not MemoryStore().hit_sync("sliding_counter", "k", r, 11, now=0).allowed


def test_token_bucket_refill_and_burst():
    store = MemoryStore()
    r = parse_rate("1/second burst 5")
    assert all(store.hit_sync("token_bucket", "k", r, now=0).allowed for _ in range(5))
    d = store.hit_sync("token_bucket", "k", r, now=0)
    assert not d.allowed and d.retry_after == pytest.approx(1.0)
    assert [store.hit_sync("token_bucket", "k", r, now=2.5).allowed for _ in range(3)] == [True, True, False]
    assert store.hit_sync("token_bucket", "k", r, now=100).remaining == 4  # capped at the burst


def test_leaky_bucket_meter_refuses_over_capacity():
    d = hits("leaky_bucket", "2/second burst 3", [0, 0, 0, 0, 0.5, 0.5])
    assert allowed(d) == [True, True, True, False, True, False]
    assert d[3].retry_after == pytest.approx(0.5)


def test_leaky_bucket_shaper_delays_up_to_the_bound():
    d = hits("leaky_bucket", "2/second burst 10", [0, 0, 0, 0], max_delay=1.0)
    assert allowed(d) == [True, True, True, False]
    assert [x.delay for x in d[:3]] == pytest.approx([0.0, 0.5, 1.0])
    assert d[3].retry_after == pytest.approx(0.5)


def test_gcra_emission_interval():
    d = hits("gcra", "10/second burst 1", [0, 0.05, 0.1, 0.15, 0.2])
    assert allowed(d) == [True, False, True, False, True]
    assert d[1].retry_after == pytest.approx(0.05)


def test_gcra_burst_then_steady():
    d = hits("gcra", "10/second burst 5", [0] * 6 + [0.1, 0.1])
    assert allowed(d) == [True] * 5 + [False, True, False]


@pytest.mark.parametrize(
    "algorithm", ["fixed_window", "sliding_log", "sliding_counter", "token_bucket", "leaky_bucket", "gcra"]
)
def test_cost_above_one_and_above_the_limit(algorithm):
    store = MemoryStore()
    r = parse_rate("10/minute")
    assert store.hit_sync(algorithm, "k", r, 4, now=0).allowed
    assert store.hit_sync(algorithm, "k", r, 4, now=0).allowed
    third = store.hit_sync(algorithm, "k", r, 4, now=0)
    assert not third.allowed and third.remaining == 2 and 0 < third.retry_after < math.inf
    assert store.hit_sync(algorithm, "k", r, 2, now=0).allowed  # the refusal consumed nothing
    never = store.hit_sync(algorithm, "other", r, 11, now=0)
    assert not never.allowed and never.retry_after == math.inf


@pytest.mark.parametrize(
    "algorithm", ["fixed_window", "sliding_log", "sliding_counter", "token_bucket", "leaky_bucket", "gcra"]
)
def test_keys_are_independent_and_retry_after_is_honest(algorithm):
    store = MemoryStore()
    r = parse_rate("3/second")
    for _ in range(3):
        assert store.hit_sync(algorithm, "a", r, now=100.0).allowed
    refused = store.hit_sync(algorithm, "a", r, now=100.0)
    assert not refused.allowed
    assert store.hit_sync(algorithm, "b", r, now=100.0).allowed
    # waiting exactly retry_after (plus a hair) is enough
    assert store.hit_sync(algorithm, "a", r, now=100.0 + refused.retry_after + 1e-6).allowed


def test_memory_store_stays_bounded_under_a_key_flood():
    import tracemalloc

    store = MemoryStore(max_keys=20_000)
    r = parse_rate("100/minute")
    tracemalloc.start()
    for i in range(100_000):
        store.hit_sync("gcra", f"ip:{i}", r, now=1000.0)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(store) <= 20_000
    assert current < 20_000 * 200  # bytes per key, bounded by the cap, not by the flood


def test_recently_used_keys_survive_eviction():
    store = MemoryStore(max_keys=1000)
    r = parse_rate("1/hour")
    assert store.hit_sync("fixed_window", "hot", r, now=0).allowed
    for i in range(5000):
        store.hit_sync("fixed_window", f"cold{i}", r, now=1)
        if i % 100 == 0:  # the hot client keeps coming back and stays limited
            assert not store.hit_sync("fixed_window", "hot", r, now=1).allowed


def test_expired_state_is_reclaimed():
    store = MemoryStore(max_keys=1000)
    r = parse_rate("5/second")
    for i in range(100):
        store.hit_sync("fixed_window", f"k{i}", r, now=0)
    store.hit_sync("fixed_window", "late", r, now=1000)  # past the longest lifetime: rotate
    store.hit_sync("fixed_window", "later", r, now=2000)
    assert len(store) <= 2
