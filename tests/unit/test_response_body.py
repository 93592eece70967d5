"""The response-body engine's rules, without sockets (the end-to-end table is in
tests/integration/test_response_body.py): the gate's decisions, Buffered's bounds, lint."""

from __future__ import annotations

import gzip

import orjson
import pytest

from bastion.config.lint import lint
from bastion.config.loader import load_config_text
from bastion.http import Request, Response
from bastion.pipeline import Context, PolicyEnv
from bastion.policies.error_masking import ErrorMasking, ErrorMaskingConfig
from bastion.policies.response_filter import ResponseFilter, ResponseFilterConfig
from bastion.response_body import BodyRefused, BodyRules, Buffered, Unfilterable, open_gate


def request() -> Request:
    async def receive():  # pragma: no cover - never called
        return {}

    return Request(
        method="GET",
        path="/x",
        query=b"",
        headers=[],
        client_ip=None,
        peer_ip=None,
        peer_trusted=False,
        scheme="http",
        host="h",
        receive=receive,
        body_timeout=1,
    )


def gate_for(headers, rules=None, status=200, rewriters=None):
    ctx = Context()
    ctx.body_rules = rules
    ctx.response_rewriters = rewriters or [ResponseFilter(ResponseFilterConfig(), PolicyEnv())]
    resp = Response(status, list(headers))
    return open_gate(request(), resp, ctx), resp, ctx


def run(gate, chunks):
    out, head_at = [], None
    for i, c in enumerate(chunks):
        ready, got = gate.push(c, i < len(chunks) - 1)
        if ready and head_at is None:
            head_at = i
        out += got
    return b"".join(out), head_at


DOC = orjson.dumps({"a": 1, "password": "p", "items": [{"token": "t", "x": 2}] * 50})


def test_small_answer_is_held_whole_and_gets_a_length():
    gate, resp, ctx = gate_for([(b"content-type", b"application/json"), (b"content-encoding", b"gzip")])
    z = gzip.compress(DOC)
    body, head_at = run(gate, [z[:10], z[10:], b""])
    assert head_at == 2 and orjson.loads(body)["items"][0] == {"x": 2} and b"password" not in body
    assert resp.get_header(b"content-length") == str(len(body)).encode()
    assert resp.get_header(b"content-encoding") is None and ctx.log_fields["filtered_fields"] == 51


def test_large_answer_streams_after_max_buffered_bytes():
    rules = BodyRules(max_buffered_bytes=1024)
    big = orjson.dumps([{"password": "p", "n": i} for i in range(20_000)])
    small = [ResponseFilter(ResponseFilterConfig(max_bytes=1024), PolicyEnv())]  # streams past 1 KB
    gate, resp, _ = gate_for(
        [(b"content-type", b"application/json"), (b"content-length", b"9")], rules, rewriters=small
    )
    pieces = [big[i : i + 4096] for i in range(0, len(big), 4096)] + [b""]
    body, head_at = run(gate, pieces)
    assert 0 < head_at < len(pieces) - 1  # the head went out before the end
    assert resp.get_header(b"content-length") is None
    assert orjson.loads(body) == [{"n": i} for i in range(20_000)]


def test_a_late_failure_after_the_head_cuts():
    rules = BodyRules(max_buffered_bytes=1024)
    big = orjson.dumps([{"password": "p", "n": i} for i in range(20_000)])[:-1] + b"}"
    small = [ResponseFilter(ResponseFilterConfig(max_bytes=1024), PolicyEnv())]
    gate, _, ctx = gate_for([(b"content-type", b"application/json")], rules, rewriters=small)
    with pytest.raises(BodyRefused):
        run(gate, [big[i : i + 4096] for i in range(0, len(big), 4096)] + [b""])
    assert ctx.log_fields["unfilterable"] == "malformed"


@pytest.mark.parametrize(
    "headers,reason",
    [
        ([(b"content-type", b"application/json"), (b"content-encoding", b"compress")], "unsupported"),
        ([(b"content-type", b"application/json"), (b"content-encoding", b"gzip")], "malformed"),
    ],
)
def test_refusals_before_the_head_are_502(headers, reason):
    gate, resp, _ = gate_for(headers)
    body, _ = run(gate, [b"not gzip at all", b""]) if gate.phase == "hold" else (b"".join(gate.first), 0)
    assert resp.status == 502 and orjson.loads(body)["reason"] == reason
    assert resp.get_header(b"content-type") == b"application/problem+json"


def test_pass_keeps_the_original_bytes_and_headers():
    gate, resp, _ = gate_for(
        [(b"content-type", b"application/json"), (b"content-length", b"18")], BodyRules(on_unfilterable="pass")
    )
    body, _ = run(gate, [b'{"password": "p"', b" x", b""])
    assert body == b'{"password": "p" x' and resp.status == 200
    assert resp.get_header(b"content-length") == b"18"


@pytest.mark.parametrize("ctype", [None, b"text/plain", b"text/html; charset=utf-8"])
def test_sniffing(ctype):
    headers = [(b"content-type", ctype)] if ctype else []
    gate, _, _ = gate_for(headers)
    body, _ = run(gate, [b'  \n{"password": 1, "a": 2}', b""])
    assert orjson.loads(body) == {"a": 2}
    gate, _, _ = gate_for(headers)
    assert run(gate, [b"password=1 {", b""])[0] == b"password=1 {"  # not JSON: passes
    gate, _, _ = gate_for(headers)
    assert run(gate, [b'{"a": 1, "b": [', b""])[0] == b'{"a": 1, "b": ['  # looked like JSON, is not
    # ... but when what looked like JSON already held a filtered field, it is refused: a streaming
    # reader (ijson) reads up to the error, the field included
    gate, resp, _ = gate_for(headers)
    body, _ = run(gate, [b'{"password": 1', b""])
    assert resp.status == 502 and orjson.loads(body)["reason"] == "malformed"
    assert gate_for(headers, BodyRules(sniff_json=False))[0] is None
    assert gate_for([(b"content-type", b"image/png")])[0] is None


def test_error_masking_alone_handles_a_5xx_even_if_malformed():
    mask = ErrorMasking(ErrorMaskingConfig(), PolicyEnv())
    gate, resp, _ = gate_for(
        [(b"content-type", b"application/json")],
        status=503,
        rewriters=[ResponseFilter(ResponseFilterConfig(), PolicyEnv()), mask],
    )
    body, _ = run(gate, [b'{"password": "p", "trace": ', b"x" * 100_000, b""])
    assert resp.status == 503 and orjson.loads(body)["type"].endswith("/upstream-error")


def test_head_and_bodiless_answers_are_left_alone():
    assert gate_for([(b"content-type", b"application/json")], status=204)[0] is None
    assert gate_for([(b"content-type", b"application/json")], status=304)[0] is None


def test_buffered_bounds():
    b = Buffered(lambda body: body.upper(), 10)
    assert b.feed(b"abc") == b"" and b.finish() == b"ABC"
    with pytest.raises(Unfilterable):
        Buffered(lambda body: body, 10).feed(b"x" * 11)
    looks = Buffered(lambda body: body, 10, needs=lambda d: b"did you mean" in d)
    assert looks.feed(b"x" * 11) == b"x" * 11 and looks.feed(b"more") == b"more"
    with pytest.raises(Unfilterable):  # a marker split across chunks is still seen
        looks.feed(b"... did you")
        looks.feed(b" mean x?")


def test_bastion_check_warns_about_pass():
    cfg = load_config_text(
        "upstreams: {up: {urls: ['http://127.0.0.1:1']}}\n"
        "routes:\n"
        "  - {path: /a/*, upstream: up, policies: {response_body: {on_unfilterable: pass}}}\n"
        "  - {path: /b/*, upstream: up, policies: {response_body: {on_unfilterable: refuse}}}\n"
    )
    found = [(f.severity, f.key) for f in lint(cfg)]
    assert ("warning", "routes[0].policies.response_body.on_unfilterable") in found
    assert not [k for _, k in found if k.startswith("routes[1].policies.response_body")]


def test_a_large_sniffed_body_that_is_not_json_passes():
    log = b"[INFO] password=hunter2 " + b"line\n" * 10_000
    small = [ResponseFilter(ResponseFilterConfig(max_bytes=1024), PolicyEnv())]
    gate, resp, _ = gate_for([(b"content-type", b"text/plain")], rewriters=small)
    body, _ = run(gate, [log[i : i + 4096] for i in range(0, len(log), 4096)] + [b""])
    assert body == log and resp.status == 200
    declared = gate_for([(b"content-type", b"application/json")], rewriters=small)[0]
    assert run(declared, [log, b""])[0].startswith(b'{"type"')  # declared JSON: refused


VALIDATORS = [
    (b"etag", b'"abc"'),
    (b"digest", b"sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="),
    (b"content-md5", b"Q2hlY2sgSW50ZWdyaXR5IQ=="),
    (b"content-digest", b"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
    (b"repr-digest", b"sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"),
]
KEPT = [(b"content-type", b"application/json"), (b"last-modified", b"Mon, 30 Nov 2026 10:00:00 GMT")]


def validators(resp) -> set[bytes]:
    return {k for k, _ in resp.headers if k in {n for n, _ in VALIDATORS}}


@pytest.mark.parametrize("split", [False, True])
def test_a_rewritten_body_loses_the_headers_that_describe_the_old_bytes(split):
    gate, resp, _ = gate_for([*KEPT, *VALIDATORS])
    chunks = [DOC[:7], DOC[7:], b""] if split else [DOC, b""]
    body, _ = run(gate, chunks)
    assert b"password" not in body and validators(resp) == set()
    assert resp.get_header(b"last-modified") == KEPT[1][1]


@pytest.mark.parametrize("split", [False, True])
def test_an_untouched_body_keeps_them(split):
    clean = orjson.dumps({"a": 1, "items": [{"x": 2}] * 50})
    gate, resp, _ = gate_for([*KEPT, *VALIDATORS])
    body, _ = run(gate, [clean[:7], clean[7:], b""] if split else [clean, b""])
    assert body == clean and validators(resp) == {n for n, _ in VALIDATORS}


def test_a_decoded_body_loses_them_even_when_nothing_was_filtered():
    clean = orjson.dumps({"a": 1})
    gate, resp, _ = gate_for([*KEPT, (b"content-encoding", b"gzip"), *VALIDATORS])
    body, _ = run(gate, [gzip.compress(clean), b""])
    assert body == clean and validators(resp) == set()


def test_a_refused_body_and_a_streamed_one_lose_them():
    gate, resp, _ = gate_for([*KEPT, *VALIDATORS])
    body, _ = run(gate, [b'{"password": "x"', b""])
    assert resp.status == 502 and validators(resp) == set()
    rules = BodyRules(max_buffered_bytes=1024)
    small = [ResponseFilter(ResponseFilterConfig(max_bytes=1024), PolicyEnv())]
    big = orjson.dumps([{"n": i} for i in range(20_000)])  # nothing to filter, but streamed
    gate, resp, _ = gate_for([*KEPT, *VALIDATORS], rules, rewriters=small)
    body, head_at = run(gate, [big[i : i + 4096] for i in range(0, len(big), 4096)] + [b""])
    assert 0 < head_at < len(big) // 4096 and orjson.loads(body) == [{"n": i} for i in range(20_000)]
    assert resp.get_header(b"content-length") is None and validators(resp) == set()


def test_types_naming_json_are_sniffed_but_json_streams_are_not():
    """`text/json`, `application/x-json` and list-valued types are read as JSON by clients
    (requests' .json(), fetch's Response.json()): sniffed. NDJSON / JSON Lines / json-seq are
    sequences of texts: not sniffed but filtered text by text ('seq'), streaming."""
    from bastion.http import Response as R
    from bastion.response_body import DEFAULT_RULES, body_kind

    def kind(ctype: bytes) -> str | None:
        return body_kind(R(200, [(b"content-type", ctype)]), DEFAULT_RULES)

    for ctype in (b"text/json", b"application/x-json", b"application/json, text/plain", b"Text/JSON; charset=utf-8"):
        assert kind(ctype) == "sniff", ctype
    for ctype in (b"application/x-ndjson", b"application/jsonl", b"application/json-seq", b"application/jsonlines"):
        assert kind(ctype) == "seq", ctype
    assert kind(b"image/png") is None
    assert kind(b"application/problem+json") == "json"
