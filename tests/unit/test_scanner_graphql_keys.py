"""The keys a refusal of an empty JSON argument names (checks/graphql.py `_named_keys`): the
session-10 JSON-input checks build their probes from them, so a key lost is a check that never
runs and a key invented is a probe of nothing."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bastion.scanner.checks.graphql import _named_keys

part = st.from_regex(r"[a-z]{2,8}", fullmatch=True)
snake = st.tuples(part, part).map("_".join)
camel = st.tuples(part, part).map(lambda p: p[0] + p[1].capitalize())
key = st.one_of(snake, camel)


def sentence(keys: list[str], style: int) -> str:
    if style == 0:
        return "Must provide " + ", ".join(keys[:-1]) + (", and " if len(keys) > 1 else "") + keys[-1] + "."
    if style == 1:
        return "input needs " + " and ".join(f"`{k}`" for k in keys)
    return "; ".join(f"'{k}' is required" for k in keys)


@given(st.lists(key, min_size=1, max_size=5, unique=True), st.integers(0, 2))
def test_every_named_key_is_found_and_nothing_is_invented(keys, style):
    message = sentence(keys, style)
    found = _named_keys(message)
    assert set(keys) <= set(found)
    assert set(found) <= set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", message))  # words of the message only


def test_plain_prose_names_no_keys_and_account_words_are_kept():
    assert _named_keys("Something went wrong, please try again.") == []
    assert _named_keys("Must provide username, new_password, and reset_token.") == [
        "username",
        "new_password",
        "reset_token",
    ]
