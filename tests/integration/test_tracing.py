"""OpenTelemetry: a span per request, one per policy, one for the upstream call, and the W3C
traceparent the upstream receives."""

from __future__ import annotations

from helpers import forwarded_headers, raw_request, run_gateway, wait_for

from bastion.policies.tracing import TracingConfig, provider_for

INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def finished(memory, predicate, timeout=3.0):
    """Spans once `predicate` holds: the request span ends in the log phase, after the answer."""
    import time

    deadline = time.time() + timeout
    while True:
        spans = memory.get_finished_spans()
        if predicate(spans) or time.time() > deadline:
            return spans
        time.sleep(0.02)


def test_spans_and_propagation(base_config, tmp_path):
    name = f"bastion-test-{tmp_path.name}"
    base_config["policies"]["tracing"] = {"exporter": "memory", "service_name": name}
    # a token bucket: exactly 5 pass, the 6th is refused whatever the clock's minute is
    base_config["policies"]["rate_limit"] = {
        "limits": [{"rate": "5/minute", "algorithm": "token_bucket"}],
        "key_prefix": f"trace-{tmp_path.name}",
    }
    base_config["routes"] = [{"path": "/traced/*", "upstream": "up"}]
    memory = provider_for(TracingConfig(exporter="memory", service_name=name)).memory
    with run_gateway(base_config, tmp_path) as gw:
        memory.clear()
        r = raw_request(
            gw.port, "GET", "/traced/a?secret=1", {"traceparent": f"00-{INCOMING_TRACE}-00f067aa0ba902b7-01"}
        )
        assert r.status == 200
        seen = forwarded_headers(r)
        every = finished(memory, lambda ss: any(x.name == "GET /traced/*" for x in ss))
        spans = {s.name: s for s in every}
        # the edge pipeline's request id span only: the route's pipeline does not run it again
        assert [s.name for s in every].count("policy request_id") == 1
        root = spans["GET /traced/*"]
        upstream = spans["upstream up"]
        assert format(root.context.trace_id, "032x") == INCOMING_TRACE  # the client's trace continues
        assert root.parent.span_id == 0x00F067AA0BA902B7
        assert {"policy request_id", "policy rate_limit"} <= set(spans)
        assert all(s.parent.span_id == root.context.span_id for n, s in spans.items() if n.startswith("policy "))
        assert upstream.parent.span_id == root.context.span_id
        assert root.attributes["http.response.status_code"] == 200
        assert "secret" not in str(root.attributes)  # no query strings on spans
        tp = seen["traceparent"][0].split("-")
        assert tp[1] == INCOMING_TRACE and tp[2] == format(upstream.context.span_id, "016x")
        # a refused request: the span names the policy
        memory.clear()
        for _ in range(5):
            last = raw_request(gw.port, "GET", "/traced/b")
        assert last.status == 429
        spans = finished(memory, lambda ss: any(x.attributes.get("bastion.stopped_by") == "rate_limit" for x in ss))
        refused = [s for s in spans if s.attributes.get("bastion.stopped_by") == "rate_limit"]
        assert refused and refused[-1].attributes["http.response.status_code"] == 429


def test_untrusted_incoming_trace_starts_a_new_one(base_config, tmp_path):
    name = f"bastion-test-untrusted-{tmp_path.name}"
    base_config["policies"]["tracing"] = {"exporter": "memory", "service_name": name, "trust_incoming": False}
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    memory = provider_for(TracingConfig(exporter="memory", service_name=name, trust_incoming=False)).memory
    with run_gateway(base_config, tmp_path) as gw:
        memory.clear()
        r = raw_request(gw.port, "GET", "/x", {"traceparent": f"00-{INCOMING_TRACE}-00f067aa0ba902b7-01"})
        root = [
            s
            for s in finished(memory, lambda ss: any(x.name.startswith("GET") for x in ss))
            if s.name.startswith("GET")
        ][0]
        assert format(root.context.trace_id, "032x") != INCOMING_TRACE
        assert INCOMING_TRACE not in forwarded_headers(r)["traceparent"][0]


def test_unsampled_requests_make_no_spans_but_pass_the_context_on(base_config, tmp_path):
    name = f"bastion-test-unsampled-{tmp_path.name}"
    base_config["policies"]["tracing"] = {"exporter": "memory", "service_name": name, "sample_ratio": 0.0}
    base_config["routes"] = [{"path": "/*", "upstream": "up"}]
    memory = provider_for(TracingConfig(exporter="memory", service_name=name, sample_ratio=0.0)).memory
    with run_gateway(base_config, tmp_path) as gw:
        memory.clear()
        r = raw_request(gw.port, "GET", "/x")
        # the log phase (where a span would end) runs before the request leaves `inflight`
        wait_for(lambda: gw.server.gateway.state.inflight == 0, what="the request's log phase")
        assert r.status == 200 and memory.get_finished_spans() == ()
        tp = forwarded_headers(r)["traceparent"][0].split("-")
        assert len(tp[1]) == 32 and int(tp[3], 16) & 1 == 0  # a trace id, the sampled flag off
        # a client's unsampled context goes on untouched, and nothing is recorded
        mine = f"00-{INCOMING_TRACE}-00f067aa0ba902b7-00"
        r = raw_request(gw.port, "GET", "/z", {"traceparent": mine})
        assert forwarded_headers(r)["traceparent"] == [mine]
        # a sampled parent from the client still decides (ParentBased)
        r = raw_request(gw.port, "GET", "/y", {"traceparent": f"00-{INCOMING_TRACE}-00f067aa0ba902b7-01"})
        assert any(
            s.name.startswith("GET") for s in finished(memory, lambda ss: any(x.name.startswith("GET") for x in ss))
        )
