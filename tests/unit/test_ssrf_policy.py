"""The SSRF policy's choice of arguments: the name rule, configured fields, schema formats."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.arguments import Argument
from bastion.pipeline import PolicyEnv
from bastion.policies.ssrf import NAME_WORDS, Ssrf, SsrfConfig, _format_paths, _string_arguments


def policy(**kw) -> Ssrf:
    return Ssrf(SsrfConfig(**kw), PolicyEnv())


def chosen(p: Ssrf, name: str, value: object = "http://x/", source: str = "body") -> bool:
    return p._target_value(Argument(source, name, value)) is not None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    [
        "url",
        "uri",
        "host",
        "callback",
        "webhook",
        "endpoint",
        "avatar_url",
        "callbackUrl",
        "webhookURL",
        "redirect-uri",
        "profile.avatar_url",
        "items.0.url",
        "items.3.links.0",
        "pastes.importPaste.host",
        "variables.input.callbackUrl",
        "HOSTNAME",
        "targetHost",
        "image_href",
    ],
)
def test_names_that_are_targets(name: str) -> None:
    assert chosen(policy(), name)


@pytest.mark.parametrize(
    "name", ["ghost", "url_count", "hostility", "callback_id", "urlencoded", "note", "items.0", "description", ""]
)
def test_names_that_are_not(name: str) -> None:
    assert not chosen(policy(), name)


def test_values_that_are_never_checked() -> None:
    p = policy()
    assert not chosen(p, "url", None) and not chosen(p, "url", True) and not chosen(p, "url", 1.5)
    assert not chosen(p, "url", "")
    assert chosen(p, "host", 2130706433)  # an integer host is an address (127.0.0.1)


def test_configured_and_ignored_fields() -> None:
    p = policy(fields=["target.*.where", "importPaste.source"], ignore_fields=["meta.url"])
    assert chosen(p, "target.0.where") and chosen(p, "importPaste.source", source="graphql")
    assert not chosen(p, "target.0.1.where") and not chosen(p, "meta.url") and chosen(p, "other.url")


words = st.sampled_from(NAME_WORDS)
prefix = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)


@settings(max_examples=300, deadline=None)
@given(prefix, words, st.sampled_from(["snake", "camel", "kebab", "upper"]), st.lists(prefix, max_size=3))
def test_any_name_ending_in_a_target_word_is_chosen(first: str, word: str, style: str, parents: list[str]) -> None:
    seg = {
        "snake": f"{first}_{word}",
        "camel": first + word[0].upper() + word[1:],
        "kebab": f"{first}-{word}",
        "upper": f"{first.upper()}_{word.upper()}",
    }[style]
    assert chosen(policy(), ".".join([*parents, seg]))


@settings(max_examples=300, deadline=None)
@given(st.lists(prefix, min_size=1, max_size=4))
def test_names_whose_last_word_is_no_target_word_are_not(parts: list[str]) -> None:
    seg = "_".join(parts)
    if parts[-1] in NAME_WORDS or seg in NAME_WORDS:
        return
    assert not chosen(policy(), seg)


def test_schema_format_paths() -> None:
    schema = {
        "type": "object",
        "properties": {
            "source": {"type": "string", "format": "uri"},
            "mirrors": {"type": "array", "items": {"type": "string", "format": "uri-reference"}},
            "server": {"$ref": "#/$defs/Server"},
            "note": {"type": "string"},
        },
        "$defs": {"Server": {"type": "object", "properties": {"address": {"type": "string", "format": "hostname"}}}},
    }
    formats = frozenset(["uri", "uri-reference", "hostname"])
    assert _format_paths(schema, formats, top_items=False) == {("source",), ("mirrors", "*"), ("server", "address")}
    array_param = {"type": "array", "items": {"type": "string", "format": "uri"}}
    assert _format_paths(array_param, formats, top_items=True) == {()}


def test_unparsed_graphql_strings() -> None:
    args = _string_arguments('{ a(url: "http://127.0.0.1/\\u0041", n: "x\\"y") { id } ')
    assert [(a.name, a.value) for a in args] == [("url", "http://127.0.0.1/A"), ("n", 'x"y')]
