"""The in-process store: bounded, expiring, thread- and task-safe.

Bounded by a two-generation LRU: hits go to the young generation; when it holds half the cap
(or the longest state lifetime has passed), the old generation is dropped whole and the young
one becomes old. A key touched in either generation survives; a key untouched for a whole
generation is gone — which, for expired state, is exactly right, and under a flood of distinct
keys keeps memory at the cap instead of growing. Keys are 64-bit hashes and 2-3 float states
are packed (16-24 bytes), measured at ~125 bytes per key (docs/ratelimit.md).
"""

from __future__ import annotations

import struct
import threading
import time
from typing import Any, Callable

from bastion.ratelimit.algorithms import ALGORITHMS, Decision, ttl
from bastion.ratelimit.rate import Rate

_PACKERS = {1: struct.Struct("d"), 2: struct.Struct("dd"), 3: struct.Struct("ddd")}


def _pack(state: Any) -> Any:
    if isinstance(state, tuple):
        return _PACKERS[len(state)].pack(*state)
    return state  # the sliding log's list


def _unpack(value: Any) -> Any:
    if isinstance(value, bytes):
        return _PACKERS[len(value) // 8].unpack(value)
    return value


class MemoryStore:
    def __init__(self, max_keys: int = 1_000_000, clock: Callable[[], float] = time.time) -> None:
        if max_keys < 2:
            raise ValueError("max_keys must be at least 2")
        self.max_keys = max_keys
        self.clock = clock
        self._young: dict[int, Any] = {}
        self._old: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._rotated: float | None = None
        self._lifetime = 60.0  # grows to the longest state lifetime seen

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def _rotate_if_due(self, now: float) -> None:
        if self._rotated is None:
            self._rotated = now
        if len(self._young) >= self.max_keys // 2 or now - self._rotated > self._lifetime:
            self._old = self._young
            self._young = {}
            self._rotated = now

    def hit_sync(self, algorithm: str, key: str, rate: Rate, cost: int = 1, *,
                 max_delay: float = 0.0, now: float | None = None) -> Decision:
        decide = ALGORITHMS[algorithm]
        h = hash((algorithm, rate, key))
        with self._lock:
            now = self.clock() if now is None else now
            lifetime = ttl(algorithm, rate)
            if lifetime > self._lifetime:
                self._lifetime = lifetime
            self._rotate_if_due(now)
            packed = self._young.get(h)
            if packed is None:
                packed = self._old.pop(h, None)
            state = None if packed is None else _unpack(packed)
            if algorithm == "leaky_bucket":
                state, decision = decide(state, now, rate, cost, max_delay)
            else:
                state, decision = decide(state, now, rate, cost)
            self._young[h] = _pack(state)
        return decision

    async def hit(self, algorithm: str, key: str, rate: Rate, cost: int = 1, *,
                  max_delay: float = 0.0) -> Decision:
        return self.hit_sync(algorithm, key, rate, cost, max_delay=max_delay)

    async def close(self) -> None:
        return None
