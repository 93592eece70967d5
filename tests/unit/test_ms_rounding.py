"""The request path's milliseconds (`gateway.app._ms`, written inline there): what
`round(seconds * 1000, 3)` gave, without its decimal conversion."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from bastion.gateway.app import _ms

seconds = st.floats(min_value=0.0, max_value=1e5, allow_nan=False, allow_infinity=False)


@given(seconds)
def test_ms_is_rounds_value_to_the_microsecond(s: float) -> None:
    got, want = _ms(s), round(s * 1000, 3)
    # the same to the microsecond: equal, or (a tie in the fourth decimal, or the product's own
    # rounding error) one microsecond apart
    assert math.isclose(got, want, rel_tol=0, abs_tol=0.001 + 1e-9 * want)
    # and it prints as round's did: at most three decimals
    assert len(repr(got).partition(".")[2]) <= 3, got


@given(st.integers(min_value=0, max_value=10**11))
def test_whole_microseconds_are_exact(us: int) -> None:
    assert repr(_ms(us / 1e6)) == repr(us / 1000)
