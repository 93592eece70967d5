"""Tests that count requests against a clock-aligned window (`sliding_counter`, the default).

That algorithm starts a new window at every multiple of the period since the epoch (`fixed_window`
does not: its window starts at the first hit, as in `limits`); a short sequence of requests that
straddles a boundary is counted across two windows, with the previous one weighed by `floor`, and
the count the test expects is then legitimately not what the limiter does. A test whose subject is
not the window uses an exact algorithm (`sliding_log`, `token_bucket`); a test of the clock-aligned
algorithm itself first waits, if it must, until its sequence fits inside one window.
"""

from __future__ import annotations

import time


def clear_of_window_edge(period: float, needed: float) -> None:
    """Return when the next `needed` seconds lie inside one window of `period` seconds."""
    if needed >= period:
        raise ValueError("the sequence cannot fit in one window")
    left = period - (time.time() % period)
    if left < needed:
        time.sleep(left + 0.02)  # a clock condition, not a state change: there is no event to wait on
