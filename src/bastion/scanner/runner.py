"""Run a scan: discover, log identities in, run the selected checks in order with a progress
bar, and return the findings with what it cost (requests, seconds, the rate kept)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bastion.scanner.checks import MODULES
from bastion.scanner.checks.api7 import Canary
from bastion.scanner.client import ScanClient
from bastion.scanner.context import ScanContext, jwt_parts
from bastion.scanner.discovery import crawl, find_graphql, find_spec, operations
from bastion.scanner.model import SEVERITIES, Finding, Identity


@dataclass
class ScanOptions:
    base_url: str
    openapi: str | None = None
    graphql: str | None = None
    identities: list[Identity] = field(default_factory=list)
    logins: list[dict[str, Any]] = field(default_factory=list)  # login recipes from the scan config
    checks: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    rate: float = 10.0
    concurrency: int = 4
    timeout: float = 10.0
    allow_destructive: bool = False
    burst: int = 25
    origins: list[str] = field(default_factory=list)  # the browser origins the API trusts (CORS look-alikes)


@dataclass
class ScanResult:
    target: str
    findings: list[Finding]
    requests: int
    seconds: float
    max_rate_seen: float
    operations: int
    checks_run: list[str]


def _selected(check_id: str, opts: ScanOptions) -> bool:
    def hit(patterns: list[str]) -> bool:
        return any(check_id == p or check_id.startswith(p.rstrip("-") + "-") for p in patterns)

    return (not opts.checks or hit(opts.checks)) and not hit(opts.skip)


def _max_rate(times: list[float]) -> float:
    """Most requests sent in any one-second window."""
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    return float(best)


async def _login(client: ScanClient, recipe: dict[str, Any]) -> Identity:
    if recipe.get("form") is not None:  # OAuth2 password grant style: form-encoded fields
        from urllib.parse import urlencode

        r = await client.request(
            recipe.get("method", "POST"),
            recipe["path"],
            content=urlencode(recipe["form"]),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            record=False,
        )
    else:
        r = await client.request(recipe.get("method", "POST"), recipe["path"], json=recipe.get("json"), record=False)
    doc = r.json()
    value: Any = doc
    for part in str(recipe.get("token", "access_token")).split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if not isinstance(value, str):
        why = f"the target is unreachable ({r.error})" if not r.status else f"HTTP {r.status}"
        raise RuntimeError(f"login for {recipe['name']} failed: {why}")
    header, _, template = str(recipe.get("header", "Authorization: Bearer {token}")).partition(":")
    json_body = recipe.get("json")
    sent: dict[str, Any] = json_body if isinstance(json_body, dict) else recipe.get("form") or {}
    username = recipe.get("username") or next(
        (str(v) for k, v in sent.items() if str(k).lower() in ("username", "user", "login", "email", "user_name")), None
    )
    return Identity(
        recipe["name"], {header.strip(): template.strip().replace("{token}", value)}, recipe.get("subject"), username
    )


def _most_severe_each(findings: list[Finding]) -> list[Finding]:
    """One finding per check, method and path: the first, which is the most severe in `findings`' order."""
    seen: set[tuple[str, str, str]] = set()
    kept = []
    for f in findings:
        k = (f.check, f.method, f.url.split("?")[0])
        if k not in seen:
            seen.add(k)
            kept.append(f)
    return kept


async def scan(opts: ScanOptions, progress: Any = None) -> ScanResult:
    started = time.monotonic()
    client = ScanClient(opts.base_url, rate=opts.rate, concurrency=opts.concurrency, timeout=opts.timeout)
    canary = Canary()
    await canary.start()
    try:
        identities = list(opts.identities)
        for recipe in opts.logins:
            identities.append(await _login(client, recipe))
        for ident in identities:
            parts = jwt_parts(ident.token) if ident.token else None
            if ident.subject is None and parts is not None and parts[1].get("sub") is not None:
                ident.subject = str(parts[1]["sub"])
        spec, spec_url = await find_spec(client, opts.openapi)
        graphql_path = opts.graphql or await find_graphql(client)
        ops = operations(spec) if spec else await crawl(client)
        ctx = ScanContext(
            client,
            opts.base_url.rstrip("/"),
            ops,
            spec,
            spec_url,
            identities,
            opts.allow_destructive,
            graphql_path,
            canary,
            opts.burst,
            origins=list(opts.origins),
        )
        modules = [m for m in MODULES if any(_selected(c, opts) for c in m.IDS)]
        findings: list[Finding] = []
        ran: list[str] = []
        task = progress.add_task("scanning", total=len(modules)) if progress else None
        for module in modules:
            name = module.__name__.rsplit(".", 1)[-1]
            if progress:
                progress.update(task, description=f"{name:8} ({len(client.sent)} requests)")
            found = await module.run(ctx)
            findings += [f for f in found if _selected(f.check, opts)]
            ran += [c for c in module.IDS if _selected(c, opts)]
            if progress:
                progress.advance(task)
        order = {s: i for i, s in enumerate(SEVERITIES)}
        findings.sort(key=lambda f: (order[f.severity], f.category, f.check, f.url))
        findings = _most_severe_each(findings)
        return ScanResult(
            opts.base_url, findings, len(client.sent), time.monotonic() - started, _max_rate(client.sent), len(ops), ran
        )
    finally:
        await canary.close()
        await client.close()


def run_sync(opts: ScanOptions, progress: Any = None) -> ScanResult:
    return asyncio.run(scan(opts, progress))
