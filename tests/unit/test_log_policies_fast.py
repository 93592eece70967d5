"""The per-request work of the request_id, audit and metrics policies and of the dashboard's live
feed, made cheaper in session 7, against the way each was done before (kept here as oracles):
differential tests on generated requests (hostile ids, header lists, paths, query strings, user
agents, clients), equal results required."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import re
from typing import Any

from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from bastion.http import Response
from bastion.http.messages import Request
from bastion.pipeline import Context, PolicyEnv
from bastion.policies import request_id as request_id_module
from bastion.policies.request_id import RequestId, RequestIdConfig


async def _receive() -> dict:
    return {}


def _request(
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    method: str = "GET",
    path: str = "/a",
    query: bytes = b"",
    client_ip: Any = None,
) -> Request:
    return Request(
        method=method,
        path=path,
        query=query,
        headers=headers or [],
        client_ip=client_ip,
        peer_ip=client_ip,
        peer_trusted=False,
        scheme="http",
        host="h",
        receive=_receive,
    )


# ---- request_id --------------------------------------------------------------------------------

_OLD_WELL_FORMED = re.compile(rb"[A-Za-z0-9._:\-]+")
_HEX32 = re.compile(r"[0-9a-f]{32}")


def test_ids_are_the_csprng_bytes_hex_encoded_16_at_a_time(monkeypatch):
    """Every id is 16 bytes of one os.urandom read, in hex, each slice used once: the old source's
    ids (`pool[pos:pos + 16].hex()`), as a set, for two reads' worth."""
    draws: list[bytes] = []

    def urandom(n: int) -> bytes:
        data = random.Random(len(draws)).randbytes(n)
        draws.append(data)
        return data

    monkeypatch.setattr(request_id_module.os, "urandom", urandom)
    monkeypatch.setattr(request_id_module, "_pool", [])
    got = [request_id_module.new_id() for _ in range(512)]
    assert len(draws) == 2
    old = {d[i : i + 16].hex() for d in draws for i in range(0, len(d), 16)}
    assert set(got) == old and len(got) == len(set(got)) == 512
    assert all(_HEX32.fullmatch(i) for i in got)


def test_fresh_ids_are_unique_and_well_formed():
    ids = [request_id_module.new_id() for _ in range(3000)]
    assert len(set(ids)) == len(ids)
    assert all(_HEX32.fullmatch(i) for i in ids)


def _old_response_headers(policy: RequestId, headers: list[tuple[bytes, bytes]], rid: str) -> list[tuple[bytes, bytes]]:
    mine = policy.mine
    if any(k in mine for k, _ in headers):
        headers = [h for h in headers if h[0] not in mine]
    out = [*headers, (policy.header, rid.encode())]
    if policy.time_header is not None:
        out.append((policy.time_header, b"T"))
    return out


_names = st.sampled_from([b"x-request-id", b"x-response-time", b"x-trace", b"content-type", b"a", b"x-request-idx"])
_header_lists = st.lists(st.tuples(_names, st.binary(max_size=8)), max_size=8)
_incoming = st.one_of(
    st.none(),
    st.binary(max_size=140),
    st.text(alphabet="abcXYZ019._:-", min_size=1, max_size=140).map(str.encode),
)


@settings(max_examples=300, deadline=None)
@given(
    incoming=_incoming,
    trust=st.booleans(),
    upstream=_header_lists,
    time_header=st.sampled_from(["X-Response-Time", None]),
    name=st.sampled_from(["X-Request-Id", "X-Correlation-Id"]),
)
def test_request_id_phases_as_before(incoming, trust, upstream, time_header, name):
    """The request phase keeps exactly the ids the old `assign` kept (else a fresh one), tells the
    upstream that id in place of the client's header; the response phase drops the upstream's own
    id and time headers exactly when and as the old generator-based check did."""
    policy = RequestId(
        RequestIdConfig(header=name, trust_incoming=trust, response_time_header=time_header), PolicyEnv()
    )
    headers = [(b"accept", b"*/*")] + ([(policy.header, incoming)] if incoming is not None else [])
    req = _request(headers)
    ctx = Context()
    assert policy.on_request_sync(req, ctx) is None
    kept = (
        trust
        and bool(incoming)
        and len(incoming) <= policy.max_length
        and _OLD_WELL_FORMED.fullmatch(incoming) is not None
    )
    if kept:
        assert req.request_id == incoming.decode("ascii")
    else:
        assert _HEX32.fullmatch(req.request_id)
    assert policy.header in ctx.drop_request_headers
    assert ctx.upstream_headers == [(policy.header, req.request_id.encode())]
    # a second call (the route's pipeline) changes nothing
    assert policy.on_request_sync(req, ctx) is None and len(ctx.upstream_headers) == 1
    resp = Response(200, list(upstream))
    policy.on_response_sync(req, resp, ctx)
    got = resp.headers
    want = _old_response_headers(policy, list(upstream), req.request_id)
    if time_header is not None:
        assert re.fullmatch(rb"\d+\.\d\dms", got[-1][1])
        got = [*got[:-1], (got[-1][0], b"T")]
    assert got == want


def test_request_id_through_the_async_phase():
    policy = RequestId(RequestIdConfig(), PolicyEnv())
    req = _request([(b"x-request-id", b"abc")])
    asyncio.run(policy.on_request(req, Context()))
    assert req.request_id == "abc"
    assert ipaddress.ip_address("127.0.0.1")  # (the module's imports used)


# ---- audit -------------------------------------------------------------------------------------


class _Principal:
    def __init__(self, subject: str) -> None:
        self.subject = subject


def _old_audit_line(policy: Any, req: Request, resp: Response, ctx: Context, record: dict, now: float) -> bytes:
    """The audit line as `Audit.on_log` made it before session 7 (its `_now_iso` with `now`)."""
    from datetime import UTC, datetime

    import orjson

    from bastion.http import ip_text

    sec = int(now)
    stamp = f"{datetime.fromtimestamp(sec, UTC).strftime('%Y-%m-%dT%H:%M:%S')}.{int((now - sec) * 1000):03d}Z"
    line: dict[str, Any] = {
        "time": stamp,
        "request_id": req.request_id,
        "client_ip": ip_text(req.client_ip) if req.client_ip else None,
        "method": req.method,
        "path": req.path,
        "query": policy.redact_query(req.query),
        "route": req.route_name or None,
        "status": resp.status,
        "bytes_in": record.get("bytes_in", 0),
        "bytes_out": record.get("bytes_out", 0),
        "duration_ms": record.get("duration_ms"),
        "upstream_ms": record.get("upstream_ms"),
        "principal": ctx.principal.subject if ctx.principal is not None else None,
    }
    if policy.user_agent:
        ua = req.header(b"user-agent")
        line["user_agent"] = ua.decode("latin-1")[:256] if ua else None
    if resp.stopped_by:
        line["stopped_by"] = resp.stopped_by
        line["reason"] = resp.reason
    if ctx.log_fields:
        line.update(ctx.log_fields)
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


_SECRETS = ["access_token", "API_KEY", "Password", "sig", "code", "token", "client_secret"]
_any_text = st.text(alphabet=st.characters(blacklist_categories=()), max_size=40)  # surrogates too
_pair = st.tuples(
    st.one_of(st.sampled_from(_SECRETS), st.text(max_size=10)),
    st.one_of(st.just("sk_live_SECRET"), st.text(max_size=12)),
)
_query = st.one_of(
    st.binary(max_size=60),
    st.lists(_pair, max_size=5).map(
        lambda pairs: "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass")
    ),
)
_ips = [
    ipaddress.ip_address("127.0.0.1"),
    ipaddress.ip_address("127.0.0.1"),  # equal to the first, another object
    ipaddress.ip_address("10.1.2.3"),
    ipaddress.ip_address("2001:db8::1"),
    None,
]
_number = st.one_of(st.none(), st.integers(-5, 10**12), st.floats(allow_nan=False, allow_infinity=False))
_audit_request = st.fixed_dictionaries(
    {
        "now": st.floats(1.0e9, 2.0e9),
        "method": st.one_of(st.sampled_from(["GET", "POST"]), _any_text),
        "path": st.one_of(st.just("/users/1"), _any_text),
        "query": _query,
        "ua": st.one_of(st.none(), st.binary(max_size=300)),
        "client": st.integers(0, len(_ips) - 1),
        "route": st.one_of(st.just(""), st.just("users"), _any_text),
        "rid": st.one_of(st.just(""), st.text(alphabet="abc012-", max_size=40)),
        "status": st.integers(100, 599),
        "stopped_by": st.one_of(st.just(""), st.sampled_from(["waf", "rate_limit"]), _any_text),
        "reason": _any_text,
        "principal": st.one_of(st.none(), _any_text),
        "record": st.dictionaries(
            st.sampled_from(["bytes_in", "bytes_out", "duration_ms", "upstream_ms", "client_gone"]), _number
        ),
        "fields": st.dictionaries(st.sampled_from(["waf.rule", "status", "path", "x"]), st.one_of(_any_text, _number)),
    }
)


@settings(max_examples=300, deadline=None)
@given(requests=st.lists(_audit_request, min_size=1, max_size=6), user_agent=st.booleans())
def test_audit_lines_as_before(requests, user_agent):
    """Hostile paths, query strings (secrets among them), user agents, unicode and control
    characters, lone surrogates: each line is the old one byte for byte (the same failure when
    orjson refuses a value), the time stamp included."""
    import io
    import json

    import pytest

    from bastion.policies import audit as audit_module
    from bastion.policies.audit import Audit, AuditConfig, _Sink

    policy = Audit(AuditConfig(include_user_agent=user_agent), PolicyEnv())
    out = io.BytesIO()
    sink = policy.sink = _Sink(out)
    with pytest.MonkeyPatch.context() as mp:
        for r in requests:
            headers = [(b"accept", b"*/*")] + ([(b"user-agent", r["ua"])] if r["ua"] is not None else [])
            req = _request(headers, method=r["method"], path=r["path"], query=r["query"], client_ip=_ips[r["client"]])
            req.route_name, req.request_id = r["route"], r["rid"]
            resp = Response(r["status"], [])
            resp.stopped_by, resp.reason = r["stopped_by"], r["reason"]
            ctx = Context()
            ctx.principal = _Principal(r["principal"]) if r["principal"] is not None else None  # type: ignore[assignment]
            ctx.log_fields.update(r["fields"])
            try:
                want: bytes | None = _old_audit_line(policy, req, resp, ctx, r["record"], r["now"])
            except Exception:  # orjson refuses lone surrogates: (session 8) a stand-in line, not none
                want = None
            mp.setattr(audit_module, "_time", lambda now=r["now"]: now)
            before = len(out.getvalue())
            policy.on_log(req, resp, ctx, dict(r["record"]))  # (no loop running: written at once)
            got = out.getvalue()[before:]
            assert sink.buffer == []
            if want is None:
                assert isinstance(json.loads(got), dict) and got.endswith(b"\n") and got.count(b"\n") == 1
            else:
                assert got == want


def test_audit_line_redacts_secret_parameters():
    import io
    import json

    from bastion.policies.audit import Audit, AuditConfig, _Sink

    policy = Audit(AuditConfig(), PolicyEnv())
    out = io.BytesIO()
    policy.sink = _Sink(out)
    req = _request(query=b"access_token=sk_live_SECRET&API_KEY=sk_live_SECRET&page=2&Sig=x%20y")
    policy.on_log(req, Response(200, []), Context(), {})
    assert b"sk_live_SECRET" not in out.getvalue()
    assert json.loads(out.getvalue())["query"] == "access_token=[REDACTED]&API_KEY=[REDACTED]&page=2&Sig=[REDACTED]"


def test_audit_sink_schedules_once_and_writes_when_full(tmp_path):
    """The line added by `on_log` itself: a flush scheduled once per batch, written at once when
    the buffer is full, every line written once and in order."""
    from bastion.policies.audit import Audit, AuditConfig, _Sink

    path = tmp_path / "a.log"
    policy = Audit(AuditConfig(output=str(path)), PolicyEnv(config_dir=str(tmp_path)))

    async def run() -> None:
        sink = policy.sink
        assert isinstance(sink, _Sink)
        for i in range(5):
            req = _request(path=f"/p{i}")
            policy.on_log(req, Response(200, []), Context(), {})
        assert sink.scheduled and len(sink.buffer) == 5
        sink.FLUSH_BYTES = 1  # the next line fills it
        policy.on_log(_request(path="/p5"), Response(200, []), Context(), {})
        assert sink.buffer == []
        await policy.close()

    asyncio.run(run())
    import json

    assert [json.loads(x)["path"] for x in path.read_text().splitlines()] == [f"/p{i}" for i in range(6)]


# ---- the dashboard's live feed -----------------------------------------------------------------


class _OldLive:
    """bastion.live.Live as it was before session 7 (keyword record, Counters, status classes
    counted per request), the clock given."""

    def __init__(self) -> None:
        from collections import Counter, deque

        self.Counter = Counter
        self.buckets: deque[Any] = deque(maxlen=300)
        self.events: deque[dict[str, Any]] = deque(maxlen=200)
        self.headroom: dict[str, dict[str, Any]] = {}

    def _bucket(self, now: float) -> Any:
        second = int(now)
        if not self.buckets or self.buckets[-1]["second"] != second:
            C = self.Counter
            self.buckets.append(
                {"second": second, "total": 0, "classes": C(), "rejections": C(), "clients": C(), "limited": C()}
            )
        return self.buckets[-1]

    def record(self, now: float, *, route, method, path, status, client, stopped_by, reason, request_id,
               limited_key, rate_results) -> None:  # fmt: skip
        b = self._bucket(now)
        b["total"] += 1
        b["classes"][f"{status // 100}xx"] += 1
        b["clients"][client] += 1
        if stopped_by and status >= 400:
            b["rejections"][stopped_by] += 1
            self.events.append(
                {"time": now, "status": status, "policy": stopped_by, "reason": reason[:160], "method": method,
                 "path": path[:200], "client": client, "route": route, "request_id": request_id}
            )  # fmt: skip
        if limited_key:
            b["limited"][limited_key[:120]] += 1
        if rate_results:
            limit, d = min(rate_results, key=lambda r: r[1].remaining / max(1, r[1].limit))
            self.headroom[route] = {"limit": limit.name, "remaining": d.remaining, "of": d.limit, "time": now}

    def snapshot(self, at: float, seconds: int) -> dict[str, Any]:
        now = int(at)
        start = now - seconds + 1
        by_second = {b["second"]: b for b in self.buckets if b["second"] >= start}
        series = []
        clients = self.Counter()
        limited = self.Counter()
        policies: set[str] = set()
        for sec in range(start, now + 1):
            b = by_second.get(sec)
            if b is None:
                series.append({"t": sec, "total": 0, "classes": {}, "rejections": {}})
                continue
            series.append(
                {"t": sec, "total": b["total"], "classes": dict(b["classes"]), "rejections": dict(b["rejections"])}
            )
            clients.update(b["clients"])
            limited.update(b["limited"])
            policies.update(b["rejections"])
        return {
            "now": now,
            "seconds": seconds,
            "series": series,
            "policies": sorted(policies),
            "top_clients": clients.most_common(8),
            "top_limited": limited.most_common(8),
            "headroom": [{"route": r, **h} for r, h in sorted(self.headroom.items()) if h["time"] > now - 300],
            "events": list(self.events)[-50:][::-1],
        }


class _Limit:
    def __init__(self, name: str) -> None:
        self.name = name


class _Decision:
    def __init__(self, remaining: int, limit: int) -> None:
        self.remaining, self.limit = remaining, limit


_rate = st.lists(
    st.tuples(st.sampled_from(["per-ip", "per-key", "burst"]), st.integers(0, 50), st.integers(0, 50)), max_size=3
)
_live_event = st.fixed_dictionaries(
    {
        "step": st.one_of(st.just(0.0), st.floats(0, 1.5), st.sampled_from([-3.0, 120.0, 400.0])),
        "route": st.sampled_from(["-", "users", "a/b"]),
        "method": st.sampled_from(["GET", "POST", "X" * 12]),
        "path": st.one_of(st.just("/u"), st.text(max_size=250)),
        "status": st.one_of(st.sampled_from([200, 201, 204, 302, 400, 403, 404, 429, 500, 502]), st.integers(0, 1200)),
        "client": st.sampled_from(["127.0.0.1", "10.0.0.1", "::1", "-"] + [f"10.9.0.{i}" for i in range(12)]),
        "stopped_by": st.sampled_from(["", "", "waf", "rate_limit", "auth"]),
        "reason": st.one_of(st.just(""), st.text(max_size=200)),
        "request_id": st.text(alphabet="0123456789abcdef", max_size=32),
        "limited_key": st.one_of(st.none(), st.just(""), st.sampled_from(["ip=1", "k" * 150]), st.text(max_size=130)),
        "rate": st.one_of(st.none(), _rate),
    }
)


@settings(max_examples=200, deadline=None)
@given(events=st.lists(_live_event, max_size=60), seconds=st.sampled_from([1, 5, 60, 120, 300]))
def test_live_feed_as_before(events, seconds):
    """What the dashboard reads (`snapshot` for any window, `events`) is the old feed's for the
    same requests at the same times: clock steps of none, parts of a second, backwards, past the
    window; odd status codes; long reasons, paths and keys; rate-limit headroom."""
    import pytest

    from bastion import live as live_module

    new, old = live_module.Live(), _OldLive()
    now = 1.7e9 + 0.25
    with pytest.MonkeyPatch.context() as mp:
        for ev in events:
            now += ev["step"]
            mp.setattr(live_module, "_time", lambda at=now: at)
            results = [(_Limit(n), _Decision(r, lim)) for n, r, lim in ev["rate"]] if ev["rate"] is not None else None
            values: dict[str, Any] = {"tracing": True}
            if ev["limited_key"] is not None:
                values["rate_limit.limited_key"] = ev["limited_key"]
            if results is not None:
                values["rate_limit.results"] = results
            req = _request(method=ev["method"], path=ev["path"])
            req.request_id = ev["request_id"]
            resp = Response(ev["status"], [])
            resp.stopped_by, resp.reason = ev["stopped_by"], ev["reason"]
            new.record(ev["route"], ev["client"], req, resp, values if len(values) > 1 or ev["step"] else {})
            old.record(
                now, route=ev["route"], method=ev["method"], path=ev["path"], status=ev["status"],
                client=ev["client"], stopped_by=ev["stopped_by"], reason=ev["reason"],
                request_id=ev["request_id"], limited_key=ev["limited_key"], rate_results=results,
            )  # fmt: skip
        for at in (now, now + 1, now + 30):
            mp.setattr(live_module, "_time", lambda at=at: at)
            assert new.snapshot(seconds) == old.snapshot(at, seconds)
            # the same JSON (key order included: the dashboard's series and classes)
            import orjson

            assert orjson.dumps(new.snapshot(seconds)) == orjson.dumps(old.snapshot(at, seconds))
    assert list(new.events) == list(old.events)


@settings(max_examples=100, deadline=None)
@given(clients=st.lists(st.integers(0, len(_ips) - 1), max_size=20))
def test_metrics_feeds_the_live_view_each_clients_own_text(clients):
    """The metrics policy's one-entry cache of the client's text (by identity of the address
    object) never gives one client's text to another."""
    from collections import Counter

    import pytest

    from bastion import live as live_module
    from bastion.observability import RequestMetrics
    from bastion.policies import metrics as metrics_module

    feed = live_module.Live()
    policy = metrics_module.Metrics(metrics_module.MetricsConfig(), PolicyEnv())
    policy.stats = RequestMetrics()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(metrics_module, "LIVE", feed)
        mp.setattr(live_module, "_time", lambda: 1.7e9)
        for i in clients:
            policy.on_log(_request(client_ip=_ips[i]), Response(200, []), Context(), {})
        got = dict(feed.snapshot(1)["top_clients"])
    want = Counter(str(_ips[i]) if _ips[i] is not None else "-" for i in clients)
    assert got == dict(want.most_common(8))


# ---- tracing: new, unsampled traces ------------------------------------------------------------

_M128, _M64 = 2**128 - 1, 2**64 - 1
_field = st.one_of(st.just(0), st.integers(1, 255), st.integers(0, _M64), st.integers(0, _M128))


@settings(max_examples=40, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate))  # (no shrinking: long)
@given(fields=st.lists(st.tuples(_field, _field), min_size=256, max_size=256), seed=st.integers(0, 2**32))
def test_unsampled_traceparents_are_the_old_formula_of_the_same_bits(fields, seed):
    """A batch of ready-made traceparent values equals, value for value, the old per-request
    `b"00-%032x-%016x-00" % (getrandbits(128) or 1, getrandbits(64) or 1)` of the same bits:
    zero ids (made 1), ids with zero bytes, and plain random batches (the fast way)."""
    import pytest

    pytest.importorskip("opentelemetry.sdk.trace")
    from bastion.policies import tracing as tracing_module

    for batch in (fields, [(random.Random(seed + i).getrandbits(128), random.getrandbits(64)) for i in range(256)]):
        bits = 0
        for trace_id, span_id in batch:
            bits = (bits << 192) | ((trace_id & _M128) << 64) | (span_id & _M64)
        want = [b"00-%032x-%016x-00" % ((t & _M128) or 1, (s & _M64) or 1) for t, s in batch]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(tracing_module, "_getrandbits", lambda n, bits=bits: bits)
            mp.setattr(tracing_module, "_unsampled", [])
            first = tracing_module._refill_unsampled()
            got = [first, *reversed(tracing_module._unsampled)]
        assert sorted(got) == sorted(want) and len(got) == 256


def test_unsampled_request_sends_a_valid_new_unsampled_context():
    import pytest

    pytest.importorskip("opentelemetry.sdk.trace")
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from bastion.policies.tracing import Tracing, TracingConfig

    policy = Tracing(TracingConfig(exporter="memory", service_name="unit-unsampled", sample_ratio=0.0), PolicyEnv())
    seen = set()
    for _ in range(600):  # more than a batch
        req, ctx = _request([(b"traceparent", b"garbage"), (b"tracestate", b"a=b")]), Context()
        assert policy.on_request_sync(req, ctx) is None
        assert ctx.trace is None
        assert ctx.drop_request_headers == {b"traceparent", b"tracestate"}
        ((name, value),) = ctx.upstream_headers
        assert name == b"traceparent" and re.fullmatch(rb"00-[0-9a-f]{32}-[0-9a-f]{16}-00", value)
        sc = TraceContextTextMapPropagator().extract({"traceparent": value.decode()})
        from opentelemetry import trace

        span_context = trace.get_current_span(sc).get_span_context()
        assert span_context.is_valid and not span_context.trace_flags.sampled
        seen.add(value)
        policy.on_log(req, Response(200, []), ctx, {})
    assert len(seen) == 600


def test_forked_children_make_their_own_ids():
    """A forked child does not reuse its parent's unused request ids or trace ids."""
    import os

    import pytest

    pytest.importorskip("opentelemetry.sdk.trace")
    from bastion.policies import tracing as tracing_module

    request_id_module.new_id()
    tracing_module._unsampled.clear()
    tracing_module._refill_unsampled()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        try:
            pool = tracing_module._unsampled
            trace = pool.pop() if pool else tracing_module._refill_unsampled()
            os.write(write, request_id_module.new_id().encode() + b" " + trace)
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 200).split(b" ")
    os.close(read)
    assert len(child) == 2
    assert child[0] != request_id_module.new_id().encode()
    assert child[1] != tracing_module._unsampled.pop()
