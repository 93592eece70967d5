"""bench/ratelimit: decisions per second, bastion vs the `limits` library, in one run.

    .venv/bin/python bench/ratelimit.py [--seconds 1.5] [--redis redis://127.0.0.1:6379/15]

Memory: each algorithm with 1 key and with 100k keys, beside limits' MemoryStorage for the three
algorithms it shares. Redis: 50 concurrent callers (bastion: asyncio tasks on one loop; limits:
its sync RedisStorage from 50 threads, as its docs show), with round trips per decision counted
from INFO commandstats. Also the memory store's size with 1,000,000 keys.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import threading
import time
import tracemalloc
import uuid

import redis
from limits import RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from bastion.ratelimit import MemoryStore, RedisStore, parse_rate

ALGORITHMS = ["fixed_window", "sliding_log", "sliding_counter", "token_bucket", "leaky_bucket", "gcra"]
THEIRS = {
    "fixed_window": FixedWindowRateLimiter,
    "sliding_log": MovingWindowRateLimiter,
    "sliding_counter": SlidingWindowCounterRateLimiter,
}
RATE = parse_rate("1000000/second")  # never refuses: every call is a full decision
ITEM = RateLimitItemPerSecond(1000000, 1)


def timed(fn, seconds: float) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(500):
            fn(n)
            n += 1
        if time.perf_counter() - t0 >= seconds:
            return n / (time.perf_counter() - t0)


def memory(seconds: float) -> None:
    print(f"\nmemory store, decisions/s ({seconds}s each)")
    print(f"{'algorithm':18} {'keys':>7} {'bastion':>10} {'limits':>10} {'ratio':>6}")
    for algorithm in ALGORITHMS:
        for nkeys in (1, 100_000):
            keys = [f"k{i}" for i in range(nkeys)]
            store = MemoryStore()
            ours = timed(lambda n: store.hit_sync(algorithm, keys[n % nkeys], RATE), seconds)
            theirs_s = ratio = ""
            if algorithm in THEIRS:
                limiter = THEIRS[algorithm](MemoryStorage())
                theirs = timed(lambda n: limiter.hit(ITEM, keys[n % nkeys]), seconds)
                theirs_s, ratio = f"{theirs:10.0f}", f"{ours / theirs:5.1f}x"
            print(f"{algorithm:18} {nkeys:7d} {ours:10.0f} {theirs_s:>10} {ratio:>6}", flush=True)


def memory_size() -> None:
    gc.collect()
    tracemalloc.start()
    store = MemoryStore(max_keys=1_000_000)
    r = parse_rate("100/minute")
    for i in range(1_000_000):
        store.hit_sync("gcra", f"ip:10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", r)
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    store2 = MemoryStore(max_keys=1_000_000)
    tracemalloc.start()
    for i in range(1_000_000):
        store2.hit_sync("sliding_counter", f"ip:{i}", r)
    size2, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"\nmemory store with max_keys=1,000,000 after 1,000,000 distinct keys: {len(store):,} keys kept, "
        f"{size / 1e6:.0f} MB (gcra, 1 float of state), {size2 / 1e6:.0f} MB (sliding_counter, 3 floats)"
    )


def commandstats(client) -> dict[str, int]:
    return {k: v["calls"] for k, v in client.info("commandstats").items()}


async def ours_redis(url: str, algorithm: str, seconds: float, callers: int, prefix: str) -> tuple[float, float]:
    store = RedisStore(url, prefix=prefix, timeout=2)
    await store.hit(algorithm, "warm", RATE)
    client = redis.Redis.from_url(url)
    before = commandstats(client)
    count = 0
    stop = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await store.hit(algorithm, f"k{i}", RATE)
            count += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(callers)))
    elapsed = time.perf_counter() - t0
    after = commandstats(client)
    # Redis counts the commands a script runs inside it too; the client's own are EVALSHA
    trips = after.get("cmdstat_evalsha", 0) - before.get("cmdstat_evalsha", 0)
    await store.close()
    return count / elapsed, trips / max(count, 1)


def theirs_redis(url: str, algorithm: str, seconds: float, callers: int) -> float:
    limiter = THEIRS[algorithm](RedisStorage(url))
    count = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def caller(i: int) -> None:
        nonlocal count
        n = 0
        while time.perf_counter() < stop:
            limiter.hit(ITEM, f"limits-k{i}")
            n += 1
        with lock:
            count += n

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count / (time.perf_counter() - t0)


def redis_bench(url: str, seconds: float, callers: int) -> None:
    print(f"\nRedis ({url}), {callers} concurrent callers, decisions/s ({seconds}s each)")
    print(f"{'algorithm':18} {'bastion':>10} {'cmds/dec':>9} {'limits':>10} {'ratio':>6}")
    prefix = f"bench:{uuid.uuid4().hex[:8]}"
    for algorithm in ALGORITHMS:
        ours, trips = asyncio.run(ours_redis(url, algorithm, seconds, callers, prefix))
        theirs_s = ratio = ""
        if algorithm in THEIRS:
            theirs = theirs_redis(url, algorithm, seconds, callers)
            theirs_s, ratio = f"{theirs:10.0f}", f"{ours / theirs:5.1f}x"
        print(f"{algorithm:18} {ours:10.0f} {trips:9.2f} {theirs_s:>10} {ratio:>6}", flush=True)
    print("(cmds/dec: EVALSHA commands Redis served per decision; concurrent decisions share a pipeline)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/15")
    ap.add_argument("--callers", type=int, default=50)
    ap.add_argument("--skip-size", action="store_true")
    args = ap.parse_args()
    memory(args.seconds)
    if not args.skip_size:
        memory_size()
    redis_bench(args.redis, args.seconds, args.callers)


if __name__ == "__main__":
    main()
