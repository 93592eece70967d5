"""Tests that count requests against clock-aligned windows (`fixed_window`, `sliding_counter`).

Those algorithms start a new window at every multiple of the period since the epoch; a short
sequence of requests that straddles a boundary is counted across two windows, and the count the
test expects is then legitimately not what the limiter does (sliding_counter weighs the previous
window with `floor`, fixed_window starts from zero). A test whose subject is not the window uses
an exact algorithm (`sliding_log`, `token_bucket`); a test of a clock-aligned algorithm itself
first waits, if it must, until its sequence fits inside one window.
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


def at_window_start(period: float) -> None:
    """Return just after the next window of `period` seconds begins."""
    time.sleep(period - (time.time() % period) + 0.02)
