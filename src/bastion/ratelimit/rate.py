"""Rates: `"100/minute"`, `"10/second burst 20"`, `"5 per 10 seconds"` or full objects."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
}
_RATE = re.compile(
    r"\s*(?P<limit>\d+)\s*(?:/|per)\s*(?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>[a-z]+)"
    r"(?:\s+burst\s+(?P<burst>\d+))?\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Rate:
    """`limit` units of cost per `period` seconds; `burst` (bucket algorithms) defaults to limit."""

    limit: int
    period: float
    burst: int | None = None
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.limit, self.period, self.burst)))

    def __hash__(self) -> int:  # computed once: rates are hashed on every decision
        return self._hash

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else self.limit

    @property
    def per_second(self) -> float:
        return self.limit / self.period

    def __str__(self) -> str:
        text = f"{self.limit}/{self.period:g}s"
        return text + (f" burst {self.burst}" if self.burst is not None else "")


def parse_rate(text: str) -> Rate:
    m = _RATE.fullmatch(text)
    if not m:
        raise ValueError(f"{text!r} is not a rate like '100/minute' or '10/second burst 20'")
    unit = m.group("unit").lower()
    if unit not in UNITS:
        raise ValueError(f"{text!r}: unknown unit {unit!r} (second, minute, hour, day)")
    limit = int(m.group("limit"))
    period = float(m.group("count") or 1) * UNITS[unit]
    burst = int(m.group("burst")) if m.group("burst") else None
    if limit < 1 or period <= 0:
        raise ValueError(f"{text!r}: the limit and the period must be positive")
    if burst is not None and burst < 1:
        raise ValueError(f"{text!r}: burst must be at least 1")
    return Rate(limit, period, burst)
