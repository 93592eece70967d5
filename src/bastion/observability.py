"""Prometheus metrics: request counters and latency histograms (filled by the `metrics` policy's
log phase), and a collector that reads the counters the policies keep (rate-limit decisions,
auth failures, WAF blocks, deprecated-version calls) and the gateway's own state."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import metrics as prometheus_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

REGISTRY = CollectorRegistry(auto_describe=True)
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# The request series (the `metrics` policy's): counted per request into plain dicts and lists
# (no lock, no child object, a bisect for the histogram bucket), turned into metric families only
# at scrape time by `RequestMetrics`. An observation (the `metrics` policy's, inline) is
# prometheus-client's `Histogram.observe`: +1 in the first bucket whose bound is >= the value
# (`bisect_left(BOUNDS, value)`; NaN: none, as there), the value added to the sum. The
# exposition is what prometheus-client's Counter and Histogram objects made of the same
# observations (names, help, types, labels, buckets, series order, `_created`):
# tests/unit/test_request_metrics.py compares the two scrape texts.
BOUNDS = (*(float(b) for b in _BUCKETS), math.inf)
_LE = tuple(floatToGoString(b) for b in BOUNDS)
HIST_SUM = len(BOUNDS)  # a histogram's list: one count per bucket (not cumulative), the sum, created
HIST_CREATED = HIST_SUM + 1


def new_histogram() -> list[float]:
    return [0] * len(BOUNDS) + [0.0, time.time()]


class RequestMetrics(Collector):
    """The request counters and latency histograms. Each value is a list `[count, created]`
    (counters) or `new_histogram()` (histograms), keyed by its label values; dicts keep the order
    in which series appeared, as prometheus-client's children do."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, int], list[float]] = {}  # (route, method label, status)
        self.rejections: dict[tuple[str, int], list[float]] = {}  # (policy, status)
        self.upstream_errors: dict[tuple[str, str], list[float]] = {}  # (route, kind)
        self.timers: dict[str, tuple[list[float], list[float]]] = {}  # route -> (upstream, gateway overhead)

    @staticmethod
    def count(series: dict[Any, list[float]], key: Any) -> None:
        entry = series.get(key)
        if entry is None:
            series[key] = [1, time.time()]
        else:
            entry[0] += 1

    def describe(self) -> Iterator[Any]:
        yield from self._families(False)

    def collect(self) -> Iterator[Any]:
        yield from self._families(True)

    def _families(self, filled: bool) -> Iterator[Any]:
        created = getattr(prometheus_metrics, "_use_created", True)  # PROMETHEUS_DISABLE_CREATED_SERIES
        requests = CounterMetricFamily("bastion_requests", "Requests answered", labels=["route", "method", "status"])
        rejections = CounterMetricFamily(
            "bastion_rejections", "Requests a policy or the gateway refused", labels=["policy", "status"]
        )
        gateway = HistogramMetricFamily(
            "bastion_gateway_overhead_seconds", "Time spent in the gateway (total minus upstream)", labels=["route"]
        )
        upstream = HistogramMetricFamily(
            "bastion_upstream_seconds", "Time to the upstream's response head", labels=["route"]
        )
        errors = CounterMetricFamily(
            "bastion_upstream_errors", "Upstream failures (502/504 and broken answers)", labels=["route", "kind"]
        )
        if filled:
            for (route, method, status), (n, t) in list(self.requests.items()):
                requests.add_metric([route, method, str(status)], n, created=t if created else None)
            for (policy, status), (n, t) in list(self.rejections.items()):
                rejections.add_metric([policy, str(status)], n, created=t if created else None)
            timers = list(self.timers.items())
            for family, which in ((gateway, 1), (upstream, 0)):
                for route, pair in timers:
                    hist = pair[which][:]
                    acc = 0.0
                    buckets = []
                    for le, n in zip(_LE, hist[:HIST_SUM], strict=True):
                        acc += n
                        buckets.append((le, acc))
                    family.add_metric([route], buckets, hist[HIST_SUM])
                    if created:
                        family.add_sample(family.name + "_created", {"route": route}, hist[HIST_CREATED])
            for (route, kind), (n, t) in list(self.upstream_errors.items()):
                errors.add_metric([route, kind], n, created=t if created else None)
        yield from (requests, rejections, gateway, upstream, errors)


REQUEST_METRICS = RequestMetrics()
REGISTRY.register(REQUEST_METRICS)


_certificates: dict[str, float] = {}  # listener → notAfter of the chain it serves (earliest)


def note_certificate(listener: str, cert_file: str) -> None:
    """Record when the certificate chain a listener has just loaded stops being valid (the
    earliest `notAfter` in the file: an expired intermediate breaks the chain as surely as the
    leaf). Called when the listener starts and after each successful reload, so the gauge is what
    is being served, not what lies on disk. A file that cannot be read leaves the old value."""
    from cryptography import x509

    try:
        with open(cert_file, "rb") as f:
            chain = x509.load_pem_x509_certificates(f.read())
    except (OSError, ValueError):
        return
    _certificates[listener] = min(c.not_valid_after_utc.timestamp() for c in chain)


class PolicyCollector(Collector):
    """Counters the policies and the server keep, read at scrape time (no cost per request)."""

    def __init__(self) -> None:
        self.state: Callable[[], Any] | None = None
        self.server: Any = None

    def collect(self) -> Iterator[Any]:
        if self.state is None:
            return
        state = self.state()
        decisions = CounterMetricFamily("bastion_ratelimit_decisions", "Rate-limit decisions", labels=["outcome"])
        auth = CounterMetricFamily("bastion_auth_failures", "Refused credentials", labels=["reason"])
        waf = CounterMetricFamily("bastion_waf_blocked", "Requests blocked by the WAF")
        deprecated = CounterMetricFamily(
            "bastion_deprecated_version_calls", "Calls to deprecated API versions", labels=["version"]
        )
        validation = CounterMetricFamily(
            "bastion_validation_failures",
            "Request fields refused by the OpenAPI validation",
            labels=["location", "rule"],
        )
        response_schema = CounterMetricFamily(
            "bastion_response_schema_violations", "Responses that broke their OpenAPI schema"
        )
        removed = CounterMetricFamily("bastion_response_properties_removed", "Undeclared response properties removed")
        ssrf = CounterMetricFamily(
            "bastion_ssrf_refused",
            "URL arguments the SSRF guard found internal (refused or, in audit mode, logged)",
            labels=["reason"],
        )
        ssrf_reasons: dict[str, float] = {}
        by_rule: dict[tuple[str, str], float] = {}
        violations = 0.0
        removed_n = 0.0
        totals: dict[str, float] = {}
        reasons: dict[str, float] = {}
        versions: dict[str, float] = {}
        blocked = 0.0
        for p in state.policies:
            for outcome, n in getattr(p, "decisions", {}).items():
                totals[outcome] = totals.get(outcome, 0) + n
            for reason, n in getattr(p, "failures", {}).items():
                reasons[reason] = reasons.get(reason, 0) + n
            blocked += getattr(p, "blocked", 0)
            for key, n in getattr(p, "failures_by_rule", {}).items():
                by_rule[key] = by_rule.get(key, 0) + n
            violations += getattr(p, "response_violations", 0)
            removed_n += getattr(p, "properties_removed", 0)
            for reason, n in getattr(p, "ssrf_refusals", {}).items():
                ssrf_reasons[reason] = ssrf_reasons.get(reason, 0) + n
            for (version, _client), n in getattr(p, "usage", {}).items():
                versions[version] = versions.get(version, 0) + n
        for outcome, n in totals.items():
            decisions.add_metric([outcome], n)
        for reason, n in reasons.items():
            auth.add_metric([reason[:80]], n)
        for version, n in versions.items():
            deprecated.add_metric([version], n)
        waf.add_metric([], blocked)
        for (where, rule), n in by_rule.items():
            validation.add_metric([where, rule], n)
        response_schema.add_metric([], violations)
        removed.add_metric([], removed_n)
        for reason, n in ssrf_reasons.items():
            ssrf.add_metric([reason], n)
        yield from (decisions, auth, waf, deprecated, validation, response_schema, removed, ssrf)
        up = GaugeMetricFamily("bastion_store_up", "Whether a store answers (1) or not (0)", labels=["store"])
        latency = GaugeMetricFamily(
            "bastion_store_latency_seconds", "Time of a trivial query (PING, SELECT 1)", labels=["store"]
        )
        if getattr(state, "token_app", None) is not None:
            from bastion.tokens.app import database_ping

            try:
                ms = database_ping(state.token_app)
                up.add_metric(["database"], 1)
                latency.add_metric(["database"], ms / 1000)
            except Exception:
                up.add_metric(["database"], 0)
        urls = {getattr(p, "store_url", "memory") for p in state.policies} | {
            getattr(p, "revocation_url", "memory") for p in state.policies
        }
        for url in sorted(u for u in urls if u.startswith(("redis://", "rediss://", "unix://"))):
            label = "redis " + url.split("@")[-1]
            ok, seconds = redis_ping(url)
            up.add_metric([label], 1 if ok else 0)
            if ok:
                latency.add_metric([label], seconds)
        yield up
        yield latency
        version = GaugeMetricFamily("bastion_config_version", "Version of the config being served")
        version.add_metric([], state.version)
        yield version
        if _certificates:
            expiry = GaugeMetricFamily(
                "bastion_tls_certificate_expiry_timestamp_seconds",
                "When the certificate chain a TLS listener serves expires (earliest notAfter, Unix time)",
                labels=["listener"],
            )
            for listener, ts in sorted(_certificates.items()):
                expiry.add_metric([listener], ts)
            yield expiry
        inflight = GaugeMetricFamily("bastion_requests_in_flight", "Requests being handled")
        inflight.add_metric([], state.inflight)
        yield inflight
        if self.server is not None:
            reloads = CounterMetricFamily("bastion_config_reloads", "Successful config reloads")
            reloads.add_metric([], self.server.reloads)
            yield reloads


_sync_clients: dict[str, Any] = {}


def redis_ping(url: str) -> tuple[bool, float]:
    """A PING at scrape time, on a small synchronous client (the gateway's own clients belong to
    its event loop)."""
    import time

    import redis

    client = _sync_clients.get(url)
    if client is None:
        client = _sync_clients[url] = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    t0 = time.perf_counter()
    try:
        client.ping()
    except redis.RedisError:
        return False, 0.0
    return True, time.perf_counter() - t0


POLICY_COLLECTOR = PolicyCollector()
REGISTRY.register(POLICY_COLLECTOR)
