"""A bounded cache whose entries expire: two generations, like the rate-limit memory store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


class ExpiringCache:
    def __init__(self, max_entries: int = 10_000, clock: Callable[[], float] = time.time) -> None:
        self.half = max(1, max_entries // 2)
        self.clock = clock
        self.young: dict[Any, tuple[float, Any]] = {}
        self.old: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        entry = self.young.get(key)
        if entry is None:
            entry = self.old.pop(key, None)
            if entry is None:
                return None
            self.young[key] = entry
        expires, value = entry
        if expires <= self.clock():
            self.young.pop(key, None)
            return None
        return value

    def put(self, key: Any, value: Any, expires: float) -> None:
        if len(self.young) >= self.half:
            self.old, self.young = self.young, {}
        self.young[key] = (expires, value)

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    def delete(self, key: Any) -> None:
        self.young.pop(key, None)
        self.old.pop(key, None)

    def clear(self) -> None:
        self.young.clear()
        self.old.clear()
