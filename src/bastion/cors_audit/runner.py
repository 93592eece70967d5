"""Run a CORS audit: every endpoint is its own target (the scanner's single-host client, one per
host so `--rate` holds per host), probed concurrently, with a progress bar over endpoints.

Only GET and OPTIONS are ever sent: the method matrix goes through preflights, so an audit never
writes to the audited API.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from bastion.cors_audit.origins import AllowList, ProbeOrigin, probe_origins
from bastion.cors_audit.verdicts import (
    CHECKS,
    HEADERS,
    METHODS,
    Exchange,
    Probes,
    choose_reference,
    trusted_by,
    verdicts,
)
from bastion.scanner.client import ScanClient
from bastion.scanner.model import SEVERITIES, Finding
from bastion.scanner.runner import _max_rate

KEPT = ("access-control-", "vary")


@dataclass
class AuditOptions:
    urls: list[str]
    allowed_origins: list[str] = field(default_factory=list)
    rate: float = 10.0  # requests per second, per host
    concurrency: int = 4  # requests in flight, per host
    timeout: float = 10.0
    endpoints_in_flight: int = 16
    headers: dict[str, str] = field(default_factory=dict)  # sent with every probe, never reported
    verify: bool = True  # False: any TLS certificate (`--insecure`)


@dataclass
class EndpointResult:
    url: str
    findings: list[Finding]
    requests: int
    error: str | None = None


@dataclass
class AuditResult:
    """Shaped like the scanner's ScanResult, so its json, sarif and md reporters can read it."""

    endpoints: list[EndpointResult]
    allowed_origins: list[str]
    requests: int
    seconds: float
    max_rate_seen: float  # the most requests sent to one host in any one second
    hosts: int

    @property
    def target(self) -> str:
        return f"{len(self.endpoints)} endpoint(s) on {self.hosts} host(s)"

    @property
    def findings(self) -> list[Finding]:
        return [f for e in self.endpoints for f in e.findings]

    @property
    def operations(self) -> int:
        return len(self.endpoints)

    @property
    def checks_run(self) -> list[str]:
        return list(CHECKS)

    def worst(self) -> str | None:
        found = {f.severity for f in self.findings}
        return next((s for s in SEVERITIES if s in found), None)


def host_key(url: str) -> str:
    """What `--rate` is counted per: scheme, host and port (one server)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def _exchange(
    client: ScanClient, origin: ProbeOrigin, method: str, url: str, extra: dict[str, str] | None = None
) -> Exchange:
    headers = {"Origin": origin.origin, **(extra or {})}
    r = await client.request(method, url, headers=headers, record=False)
    kept = {k.lower(): v for k, v in r.headers.items() if k.lower().startswith(KEPT)}
    return Exchange(origin, method, url, headers, r.status, kept, r.error)


async def probe(client: ScanClient, url: str, allowed: AllowList) -> Probes:
    origins = probe_origins(url, allowed)
    simple = await asyncio.gather(*(_exchange(client, o, "GET", url) for o in origins))
    if all(ex.error for ex in simple):
        return Probes(url, list(simple), [])
    preflight = await asyncio.gather(
        *(_exchange(client, o, "OPTIONS", url, {"Access-Control-Request-Method": "GET"}) for o in origins)
    )
    probes = Probes(url, list(simple), list(preflight))
    ref = choose_reference(origins, trusted_by(probes))
    if ref is not None:
        probes.reference = ref
        methods = await asyncio.gather(
            *(_exchange(client, ref, "OPTIONS", url, {"Access-Control-Request-Method": m}) for m in METHODS)
        )
        probes.methods = dict(zip(METHODS, methods, strict=False))
        headers = await asyncio.gather(
            *(
                _exchange(
                    client,
                    ref,
                    "OPTIONS",
                    url,
                    {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": h},
                )
                for h, _ in HEADERS
            )
        )
        probes.headers = {h: ex for (h, _), ex in zip(HEADERS, headers, strict=False)}
    return probes


async def audit(opts: AuditOptions, progress: Any = None) -> AuditResult:
    started = time.monotonic()
    allowed = AllowList(opts.allowed_origins)
    clients: dict[str, ScanClient] = {}
    for url in opts.urls:
        key = host_key(url)
        if key not in clients:
            clients[key] = ScanClient(
                key,
                rate=opts.rate,
                concurrency=opts.concurrency,
                timeout=opts.timeout,
                headers=opts.headers,
                verify=opts.verify,
            )
    gate = asyncio.Semaphore(opts.endpoints_in_flight)
    task = progress.add_task("auditing", total=len(opts.urls)) if progress else None
    done = 0

    async def one(url: str) -> EndpointResult:
        nonlocal done
        client = clients[host_key(url)]
        async with gate:
            probes = await probe(client, url, allowed)
        sent = len(probes.simple) + len(probes.preflight) + len(probes.methods) + len(probes.headers)
        done += 1
        if progress:
            total = sum(len(c.sent) for c in clients.values())
            progress.update(task, advance=1, description=f"{done}/{len(opts.urls)} endpoints · {total} requests")
        if not probes.preflight:
            errors = sorted({ex.error for ex in probes.simple if ex.error})
            return EndpointResult(url, [], sent, "unreachable (" + ", ".join(errors) + ")")
        return EndpointResult(url, verdicts(probes, allowed), sent)

    try:
        endpoints = list(await asyncio.gather(*(one(u) for u in opts.urls)))
    finally:
        for c in clients.values():
            await c.close()
    return AuditResult(
        endpoints,
        list(opts.allowed_origins),
        sum(len(c.sent) for c in clients.values()),
        time.monotonic() - started,
        max((_max_rate(c.sent) for c in clients.values()), default=0.0),
        len(clients),
    )


def run_sync(opts: AuditOptions, progress: Any = None) -> AuditResult:
    return asyncio.run(audit(opts, progress))
