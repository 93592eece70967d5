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
from collections.abc import Callable
from typing import Any

from bastion.ratelimit.algorithms import ALGORITHMS, Decision, ttl
from bastion.ratelimit.rate import Rate

_PACK3 = struct.Struct("ddd")


def _pack(state: Any) -> Any:
    """The smallest object that holds the state: a float (8 bytes of payload in 24), a complex
    for two floats (32 bytes, against 104 for a tuple), packed bytes for three."""
    if type(state) is tuple:
        n = len(state)
        if n == 1:
            return state[0]
        if n == 2:
            return complex(state[0], state[1])
        return _PACK3.pack(*state)
    return state  # the sliding log's Log


def _unpack(value: Any) -> Any:
    t = type(value)
    if t is float:
        return (value,)
    if t is complex:
        return (value.real, value.imag)
    if t is bytes:
        return _PACK3.unpack(value)
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
        self._half = max_keys // 2

    def __len__(self) -> int:
        return len(self._young) + len(self._old)

    def _rotate_if_due(self, now: float) -> None:
        if self._rotated is None:
            self._rotated = now
        if len(self._young) >= self._half or now - self._rotated > self._lifetime:
            self._old = self._young
            self._young = {}
            self._rotated = now

    def hit_sync(
        self, algorithm: str, key: str, rate: Rate, cost: int = 1, *, max_delay: float = 0.0, now: float | None = None
    ) -> Decision:
        decide = ALGORITHMS[algorithm]
        h = hash((algorithm, rate, key))
        with self._lock:
            if now is None:
                now = self.clock()
            if self._rotated is None or len(self._young) >= self._half or now - self._rotated > self._lifetime:
                lifetime = ttl(algorithm, rate)
                if lifetime > self._lifetime:
                    self._lifetime = lifetime
                self._rotate_if_due(now)
            young = self._young
            packed = young.get(h)
            if packed is None:
                packed = self._old.pop(h, None)
            if packed is None:
                state = None
            else:
                t = type(packed)
                state = (packed.real, packed.imag) if t is complex else (packed,) if t is float else _unpack(packed)
            if max_delay:
                state, decision = decide(state, now, rate, cost, max_delay)  # type: ignore[call-arg]  # the queueing algorithms take it
            else:
                state, decision = decide(state, now, rate, cost)
            young[h] = complex(state[0], state[1]) if type(state) is tuple and len(state) == 2 else _pack(state)
        if self._lifetime < decision.reset_after:  # remember the longest-lived state seen
            self._lifetime = decision.reset_after + 1
        return decision

    async def hit(self, algorithm: str, key: str, rate: Rate, cost: int = 1, *, max_delay: float = 0.0) -> Decision:
        return self.hit_sync(algorithm, key, rate, cost, max_delay=max_delay)

    async def close(self) -> None:
        return None
