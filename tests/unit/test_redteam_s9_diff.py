"""Red team (session 9, s9-rt): differential tests of the behaviours s9-rt changed, each against
the old code kept here as the oracle.

- security_headers: no-store is set whenever the old substring test set it, and beyond that
  only when no unqualified `no-store`/`private` directive is present;
- auth's cookie withholding: the Cookie header keeps every pair the old code forwarded except the
  scheme's cookie, which `parse_cookies` can no longer find.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion.http.headers import parse_cookies
from bastion.policies.auth import _without_cookies
from bastion.policies.security_headers import _not_shared


def _old_not_shared(cc: bytes) -> bool:  # before s9-rt: substrings
    return b"no-store" in cc or b"private" in cc


_DIRECTIVES = st.sampled_from(
    [
        b"public",
        b"private",
        b'private="set-cookie"',
        b"no-store",
        b"no-cache",
        b'no-cache="x"',
        b"max-age=60",
        b"s-maxage=600",
        b"x-private",
        b"no-store-x",
        b"must-revalidate",
        b" private ",
        b"PRIVATE".lower(),
        b"",
    ]
)


@given(st.lists(_DIRECTIVES, max_size=5))
def test_no_store_is_set_at_least_where_it_was(parts: list[bytes]) -> None:
    cc = b",".join(parts)
    new_sets, old_sets = not _not_shared(cc), not _old_not_shared(cc)
    if old_sets:
        assert new_sets
    directives = {p.strip() for p in cc.split(b",")}
    assert new_sets == (not directives & {b"no-store", b"private"})


_NAMES = st.sampled_from(["kc", "theme", " kc", "kc ", "kcx", "xkc", "lang", "KC"])
_VALUES = st.sampled_from(["1", "", "a=b", '"q"', "bk_secret"])


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=6), st.sampled_from(["; ", ";", " ; "]))
def test_the_schemes_cookie_alone_is_taken_out(pairs: list[tuple[str, str]], sep: str) -> None:
    value = sep.join(f"{k}={v}" for k, v in pairs).encode()
    headers = [(b"accept", b"*/*"), (b"cookie", value)]
    out = _without_cookies(headers, {"kc"})
    assert out[0] == (b"accept", b"*/*")
    old = parse_cookies(value)  # the old code forwarded the header as it was
    new = parse_cookies(out[1][1]) if len(out) > 1 else {}
    assert "kc" not in new
    assert new == {k: v for k, v in old.items() if k != "kc"}  # every other cookie as before
    if len(out) == 1:  # the header dropped only when nothing else was in it
        assert not new


def test_drop_with_is_the_union_also_past_its_bound() -> None:
    """Held (the session's `drop_with`): past 256 pairs the cache is cleared, never grown, and
    every answer is still `fixed | extra` (the old per-request union, the oracle)."""
    from bastion.gateway import proxy

    fixed = frozenset({b"host", b"x-forwarded-for"})
    for i in range(1000):
        extra = {b"x-request-id", f"x-drop-{i % 300}".encode()} | ({b"traceparent"} if i % 7 else set())
        assert proxy.drop_with(fixed, extra) == fixed | extra
        assert len(proxy._DROPS_WITH) <= 257
    extra = {b"cookie"}
    first = proxy.drop_with(fixed, extra)
    extra.add(b"authorization")  # a later change to the request's set is not seen in the kept union
    assert b"authorization" not in first and proxy.drop_with(fixed, extra) == fixed | extra
