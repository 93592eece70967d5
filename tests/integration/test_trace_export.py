"""The trace exporter process: spans recorded by `bastion serve` reach a real OTLP/HTTP receiver
through it; SIGTERM on the server exports the last batch; SIGKILL of the server leaves no
exporter process behind; a full queue drops (and counts) instead of waiting. Its own encoding
goes out as the SDK's exporter sends: the SDK's request, headers, compression, and a retry on a
503."""

from __future__ import annotations

import contextlib
import gzip
import marshal
import os
import re
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from helpers import STARTUP_SECONDS, raw_request, wait_for

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@contextlib.contextmanager
def otlp_receiver():
    """A real OTLP/HTTP traces endpoint: the spans it received, as (service.name, span)."""
    got: list[tuple[str, object]] = []
    with recording_receiver(fail_first=0, spans=got) as (endpoint, _posts):
        yield endpoint, got


def exporters(endpoint: str) -> list[int]:
    """Pids of the exporter processes sending to `endpoint` (read from /proc, killed by no one)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                args = (entry / "cmdline").read_bytes().split(b"\0")
                env = (entry / "environ").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            mine = b"BASTION_TRACE_ENDPOINT=" + endpoint.encode() in env
            if b"bastion.trace_export" in args and mine and state != "Z":
                assert endpoint.encode() not in b" ".join(args)  # not on its command line
                out.append(int(entry.name))
    return out


@contextlib.contextmanager
def serve(base_config: dict, tmp_path: Path, endpoint: str):
    config = dict(base_config)
    config["listeners"] = [{"host": "127.0.0.1", "port": 0}]
    config["routes"] = [{"path": "/traced/*", "upstream": "up"}]
    config["policies"] = dict(config["policies"], tracing={"endpoint": endpoint, "policy_spans": False})
    path = tmp_path / "traced.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion.cli", "serve", "--no-watch", "--workers", "1", "-c", str(path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(x) for x in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
    try:
        port = wait_for(
            lambda: next(
                (int(m.group(1)) for x in lines if (m := re.search(r"listening on http://127\.0\.0\.1:(\d+)", x))), None
            ),
            STARTUP_SECONDS,
            what="the gateway",
        )
        yield proc, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_spans_go_through_the_exporter_process_and_sigterm_exports_the_last(base_config, tmp_path):
    with otlp_receiver() as (endpoint, got), serve(base_config, tmp_path, endpoint) as (proc, port):
        r = raw_request(port, "GET", "/traced/a?secret=1")
        assert r.status == 200
        first = wait_for(lambda: exporters(endpoint), STARTUP_SECONDS, what="the exporter process")
        assert len(first) == 1
        wait_for(lambda: any(s.name == "GET /traced/*" for _, s in got), STARTUP_SECONDS, what="the first span")
        got.clear()
        for path in ("/traced/b", "/traced/c", "/traced/d"):
            assert raw_request(port, "GET", path).status == 200
        proc.send_signal(signal.SIGTERM)  # before the next timed flush (5 s): the drain exports them
        assert proc.wait(60) == 0
        assert exporters(endpoint) == []  # it exported and exited with its pipe
        roots = [s for service, s in got if s.name == "GET /traced/*" and service == "bastion"]
        clients = [s for _, s in got if s.name == "upstream up"]
        assert len(roots) == 3 and len(clients) == 3
        assert {c.trace_id for c in clients} == {r.trace_id for r in roots}
        assert all(any(c.parent_span_id == r.span_id for r in roots) for c in clients)
        attrs = {a.key: a.value for a in roots[0].attributes}
        assert attrs["http.response.status_code"].int_value == 200 and attrs["bastion.route"].string_value
        assert "secret" not in str(roots)  # no query strings on spans


def test_sigkill_of_the_server_leaves_no_exporter(base_config, tmp_path):
    with otlp_receiver() as (endpoint, got), serve(base_config, tmp_path, endpoint) as (proc, port):
        assert raw_request(port, "GET", "/traced/a").status == 200
        (pid,) = wait_for(lambda: exporters(endpoint), STARTUP_SECONDS, what="the exporter process")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        wait_for(lambda: pid not in exporters(endpoint), 30, what="the exporter's exit")


def test_exporter_process_ignores_sigterm_and_exports_until_its_pipe_closes():
    from bastion.policies.tracing import TracingConfig, _start_exporter

    with otlp_receiver() as (endpoint, got):
        proc = _start_exporter(TracingConfig(endpoint=endpoint, service_name="framing"))
        span = ("GET x", 1, 5, 7, 3, "k=v", 0, False, 10, 20, {"http.response.status_code": 200}, 0)
        frame = __import__("marshal").dumps([span, span[:3] + (8,) + span[4:]])
        proc.stdin.write(len(frame).to_bytes(4, "big") + frame)  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        wait_for(lambda: len(got) == 2, STARTUP_SECONDS, what="the first batch")
        proc.send_signal(signal.SIGTERM)  # ignored: a group's SIGTERM must not lose the last batch
        proc.stdin.write(len(frame).to_bytes(4, "big") + frame)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
        assert proc.wait(30) == 0
        assert len(got) == 4  # the batch written after SIGTERM, exported before the exit
        service, s = got[0]
        assert (
            service == "framing"
            and s.name == "GET x"
            and s.trace_state == "k=v"
            and s.span_id == (7).to_bytes(8, "big")
        )


def test_a_full_queue_drops_and_counts():
    from bastion.policies import tracing

    sink = tracing.SpanSink(tracing.TracingConfig(endpoint="http://127.0.0.1:9/v1/traces", service_name="drops"))
    sink.MAX_QUEUE = 2
    sink._start = lambda: None  # type: ignore[method-assign]  # no export thread: the queue stays full
    before = tracing.DROPPED._value.get() if tracing.DROPPED is not None else 0
    for i in range(5):
        span = tracing.Span(sink, f"s{i}", 1, 5, 3, None, 0, False)
        span.end()
    assert [s.name for s in sink.queue] == ["s0", "s1"]
    assert tracing.DROPPED._value.get() - before == 3


@contextlib.contextmanager
def recording_receiver(fail_first: int, spans: list[tuple[str, object]] | None = None):
    """An OTLP/HTTP endpoint that records each POST (headers, body as received) and answers the
    first `fail_first` with 503 (retryable for the SDK's client), the others with 200; the spans
    of the accepted ones also go to `spans`, when given, as (service.name, span)."""
    posts: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            headers = {k.lower(): v for k, v in self.headers.items()}
            body = self.rfile.read(int(self.headers["content-length"]))
            posts.append((headers, body))
            failing = len(posts) <= fail_first
            if spans is not None and not failing:
                raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
                for rs in ExportTraceServiceRequest.FromString(raw).resource_spans:
                    service = next(a.value.string_value for a in rs.resource.attributes if a.key == "service.name")
                    for ss in rs.scope_spans:
                        spans.extend((service, s) for s in ss.spans)
            out = b"" if failing else ExportTraceServiceResponse().SerializeToString()
            self.send_response(503 if failing else 200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", posts
    finally:
        server.shutdown()


BATCH = [
    ("upstream up", 2, 2**128 - 1, 7, 3, None, 9, False, 11, 19, {"http.response.status_code": 200}, 0),
    ("GET /users/*", 1, 2**128 - 1, 9, 1, "k=v,x=y", 2**64 - 1, True, 10, 20, {"url.path": "/users/é", "n": True}, 2),
    ("policy jwt", 0, 1, 1, 0, None, 0, False, 0, 2**64 - 1, {"ratio": 0.5}, 1),
]


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_the_exporter_process_sends_the_sdks_request_and_retries_a_503(compression):
    """The real process, written one frame: the body it POSTs is the SDK's encoding of the
    batch (encode_spans of the ReadableSpans; the resource's service.instance.id is the
    process's own), with the SDK exporter's content type and
    compression; a 503 is retried (the SDK's backoff, ~1 s), then the same body accepted."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from bastion.trace_export import Readables, resource_and_scope

    with recording_receiver(fail_first=1) as (endpoint, posts):
        env = dict(
            os.environ,
            BASTION_TRACE_ENDPOINT=endpoint,
            BASTION_TRACE_SERVICE="retry",
            OTEL_EXPORTER_OTLP_TRACES_COMPRESSION=compression,
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "bastion.trace_export"], stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        frame = marshal.dumps(BATCH)
        _, err = proc.communicate(len(frame).to_bytes(4, "big") + frame, timeout=60)  # then its stdin closes
        assert proc.returncode == 0
    want = encode_spans(Readables(*resource_and_scope("retry"))(BATCH)).SerializePartialToString()
    assert len(posts) == 2 and posts[0] == posts[1]  # the 503, then the retry of the same request
    headers, body = posts[1]
    assert headers["content-type"] == "application/x-protobuf"
    if compression == "gzip":
        assert headers["content-encoding"] == "gzip"
        body = gzip.decompress(body)
    else:
        assert "content-encoding" not in headers
    got, sdk = ExportTraceServiceRequest.FromString(body), ExportTraceServiceRequest.FromString(want)
    resource = {a.key: a.value.string_value for a in got.resource_spans[0].resource.attributes}
    assert resource.keys() == {a.key for a in sdk.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "retry"
    got.resource_spans[0].resource.CopyFrom(sdk.resource_spans[0].resource)  # but its service.instance.id
    assert got.SerializeToString(deterministic=True) == sdk.SerializeToString(deterministic=True)
    spans = got.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == [f[0] for f in BATCH]
    assert spans[1].parent_span_id == b"\xff" * 8 and spans[1].flags == 0x300 and spans[1].trace_state == "k=v,x=y"
    assert b"Transient error" in err and b"Traceback" not in err  # the SDK client's retry warning


def test_without_the_sdks_client_the_exporter_keeps_the_sdks_path(monkeypatch):
    """On an SDK whose exporter has no `_OTLPHTTPClient` (`sender` finds none), `Exporter` sends
    the SDK's own export of the ReadableSpans: the same request reaches the endpoint."""
    from bastion import trace_export

    monkeypatch.setattr(trace_export, "sender", lambda exporter: None)
    with recording_receiver(fail_first=0) as (endpoint, posts):
        exporter = trace_export.Exporter(endpoint, "fallback")
        try:
            assert exporter.encode is None and exporter.export(BATCH)
        finally:
            exporter.shutdown()
        want = trace_export.OtlpEncoder(*trace_export.resource_and_scope("fallback"))(BATCH)
    assert len(posts) == 1 and posts[0][1] == want  # one process here: the same service.instance.id


def test_without_the_sdks_encoder_helpers_the_exporter_keeps_the_sdks_path(monkeypatch):
    """An SDK that has the client but not the encoder helpers `OtlpEncoder` reads (private names
    too): the exporter process starts anyway, on the SDK's own path, and sends the same request."""
    from bastion import trace_export

    def missing(*args):
        raise ImportError("cannot import name '_encode_resource'")

    monkeypatch.setattr(trace_export.OtlpEncoder, "__init__", missing)
    with recording_receiver(fail_first=0) as (endpoint, posts):
        exporter = trace_export.Exporter(endpoint, "fallback")
        try:
            assert exporter.encode is None and exporter.send is None and exporter.export(BATCH)
        finally:
            exporter.shutdown()
    monkeypatch.undo()
    want = trace_export.OtlpEncoder(*trace_export.resource_and_scope("fallback"))(BATCH)
    assert len(posts) == 1 and posts[0][1] == want


def test_a_full_batch_wakes_the_export_of_whole_batches_only():
    """Woken by a full batch, the export thread ships whole batches; the rest waits for the
    next full batch or the timer (a part batch of its own at once doubled the POSTs under load);
    the timer, a drain or the shutdown ship it."""
    from bastion.policies import tracing

    sink = tracing.SpanSink(tracing.TracingConfig(endpoint="http://127.0.0.1:9/v1/traces", service_name="batches"))
    shipped: list[list[str]] = []
    sink._ship = lambda batch: shipped.append([f[0] for f in batch])  # type: ignore[method-assign]
    sink._start = lambda: None  # type: ignore[method-assign]  # the thread's steps are run here
    sink.BATCH = 4
    for i in range(10):
        tracing.Span(sink, f"s{i}", 1, 5, 3, None, 0, False).end()
    sink._drain(whole=False)  # what a wake by size runs
    assert shipped == [["s0", "s1", "s2", "s3"], ["s4", "s5", "s6", "s7"]] and len(sink.queue) == 2
    sink._drain()  # the timer's (and shutdown's) drain
    assert shipped[2:] == [["s8", "s9"]] and not sink.queue

    # the thread itself: a size wake leaves the part batch, the timer ships it
    shipped.clear()
    calls: list[bool] = []
    drain = sink._drain

    def recorded(whole: bool = True) -> None:
        calls.append(whole)
        drain(whole)

    sink._drain = recorded  # type: ignore[method-assign]
    sink.DELAY = 0.2
    for i in range(6):
        tracing.Span(sink, f"t{i}", 1, 5, 3, None, 0, False).end()
    sink.wake.set()
    thread = threading.Thread(target=sink._run, daemon=True)
    thread.start()
    wait_for(lambda: len(shipped) >= 2, STARTUP_SECONDS, 0.01, "the timer's part batch")
    sink.closing = True
    sink.wake.set()
    thread.join(10)
    assert calls[:2] == [False, True]  # the size wake: whole batches; the timer's: the rest
    assert shipped == [["t0", "t1", "t2", "t3"], ["t4", "t5"]]


def test_without_the_exporter_process_the_serving_process_sends_the_same_request(monkeypatch):
    """`exporter_process: false`: the export thread of the serving process encodes and sends with
    the exporter process's `Exporter`: the SDK's request for the same spans, no process started."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from bastion.policies import tracing
    from bastion.trace_export import Readables, resource_and_scope

    started: list[object] = []
    monkeypatch.setattr(tracing, "_start_exporter", lambda config: started.append(config))
    with recording_receiver(fail_first=0) as (endpoint, posts):
        config = tracing.TracingConfig(endpoint=endpoint, service_name="in-process", exporter_process=False)
        sink = tracing.SpanSink(config)
        assert sink.tuples is not None
        root = tracing.Span(sink, "GET /users/{id}", 1, 7, 3, None, 0, False)
        root.attributes.update({"http.request.method": "GET", "http.response.status_code": 200})
        child = tracing.Trace(root, False).child("upstream up", client=True)
        child.end()
        root.end()
        fields = [child.fields(), root.fields()]
        sink.shutdown()
    assert not started
    assert len(posts) == 1
    got = ExportTraceServiceRequest.FromString(posts[0][1])
    want = encode_spans(Readables(*resource_and_scope("in-process"))(fields))

    # (the resource's service.instance.id is made per Resource: the rest compared apart)
    def resource(message: ExportTraceServiceRequest) -> dict[str, str]:
        attributes = message.resource_spans[0].resource.attributes
        return {kv.key: kv.value.string_value for kv in attributes if kv.key != "service.instance.id"}

    assert resource(got) == resource(want) and resource(got)["service.name"] == "in-process"
    for message in (got, want):
        message.resource_spans[0].resource.ClearField("attributes")
    assert got.SerializeToString(deterministic=True) == want.SerializeToString(deterministic=True)
    spans = got.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in spans] == ["upstream up", "GET /users/{id}"] and spans[0].parent_span_id == spans[1].span_id
