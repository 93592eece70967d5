"""The SSRF policy's choice of arguments: the name rule, configured fields, schema formats."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.arguments import Argument
from bastion.http import Request
from bastion.pipeline import Context, PolicyEnv
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
        "server_ip",
        "mail.domain",
    ],
)
def test_names_that_are_targets(name: str) -> None:
    assert chosen(policy(), name)


@pytest.mark.parametrize(
    "name",
    [
        "ghost",
        "zip",
        "ipsum",
        "url_count",
        "hostility",
        "callback_id",
        "urlencoded",
        "note",
        "items.0",
        "description",
        "",
    ],
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


# ----------------------------------------------------------------------------- whole requests


def request(body: bytes, query: bytes = b"") -> Request:
    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return Request("POST", "/x", query, headers, None, None, False, "http", "h", receive)


def refused(p: Ssrf, doc: object) -> dict | None:
    resp = asyncio.run(p.on_request(request(orjson.dumps(doc)), Context()))
    return None if resp is None else orjson.loads(resp.body)


plain_keys = st.sampled_from(["name", "title", "tags", "count", "profile", "items", "bio", "note", "id"])
json_leaf = st.one_of(st.integers(0, 100), st.text(alphabet="abc xyz", max_size=8), st.booleans(), st.none())
json_doc = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(plain_keys, inner, max_size=3)),
    max_leaves=12,
)
internal_url = st.sampled_from(
    ["http://127.0.0.1/", "http://2130706433/", "http://[::ffff:10.0.0.1]/", "http://169.254.169.254/", "file:///x"]
)


def put(doc: object, path: list[str | int], value: object) -> object:
    """`doc` with `value` at `path` (dicts and lists created as needed)."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        items = list(doc) if isinstance(doc, list) else []
        return [*items, put(None, rest, value)]
    obj = dict(doc) if isinstance(doc, dict) else {}
    obj[head] = put(obj.get(head), rest, value)
    return obj


@settings(max_examples=200, deadline=None)
@given(
    json_doc,
    st.lists(st.one_of(plain_keys, st.just(0)), max_size=3),
    st.sampled_from(["url", "avatar_url", "callbackUrl", "webhook", "host", "endpoints"]),
    internal_url,
)
def test_an_internal_url_anywhere_in_a_json_body_is_refused(doc, path, key, url) -> None:
    body = put(doc, [*path, key], url)
    answer = refused(policy(), body)
    assert answer is not None and answer["type"].endswith("/ssrf-blocked"), body
    assert answer["argument"].split(".")[-1] == key


@settings(max_examples=200, deadline=None)
@given(json_doc, st.lists(st.one_of(plain_keys, st.just(0)), max_size=3), internal_url)
def test_internal_urls_under_other_names_pass(doc, path, url) -> None:
    assert refused(policy(), put(doc, [*path, "link_text"], url)) is None
