"""`bastion check`: findings about a config that validates but is unsafe."""

from __future__ import annotations

import ipaddress
import math
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bastion.config.model import GatewayConfig
from bastion.policies import REGISTRY


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" refuses to start; "warning" is printed
    key: str
    message: str


def _policy(section, name):
    return getattr(section, name, None)


def _effective(cfg: GatewayConfig, section: object, pname: str, field: str) -> object:
    """A policy setting as the compiler builds it: a route's own key, else the defaults' (keys
    merge); a default-on policy the config does not mention runs with its model's defaults.
    None: the policy is not there (a route without its own section inherits the defaults')."""
    conf = _policy(section, pname) or _default_on(section is cfg.policies, pname)
    if conf is None:
        return None
    if section is not cfg.policies and field not in conf.model_fields_set:
        base = _policy(cfg.policies, pname) or _default_on(True, pname)
        if base is not None:
            return getattr(base, field)
    return getattr(conf, field)


def _default_on(defaults: bool, pname: str) -> Any:
    cls = REGISTRY.get(pname)
    return cls.Config() if defaults and cls is not None and cls.default_on else None


def per_process_state(cfg: GatewayConfig) -> list[tuple[str, str, bool]]:
    """Stores kept in one process's memory, as (config key, what they hold, whether
    `allow_per_worker_state` may accept them): with several workers each has its own copy.
    Sessions cannot be accepted: a login on one worker would be unknown to the others."""
    found: list[tuple[str, str, bool]] = []
    sections = [("policies", cfg.policies)] + [(f"routes[{i}].policies", r.policies) for i, r in enumerate(cfg.routes)]

    def get(section: object, pname: str, field: str) -> object:
        return _effective(cfg, section, pname, field)

    for key, section in sections:
        if get(section, "rate_limit", "enabled"):
            limited = any(get(section, "rate_limit", f) for f in ("limits", "tiers", "login_limits"))
            if limited and get(section, "rate_limit", "store") == "memory":
                what = "rate-limit counters"
                if _policy(section, "rate_limit") is None:  # on by default: its login-path limits
                    what += " (the built-in limit on login paths, 5/minute per address)"
                found.append((f"{key}.rate_limit.store", what, True))
        if get(section, "auth", "enabled"):
            if get(section, "auth", "schemes") and get(section, "auth", "revocation_store") == "memory":
                found.append((f"{key}.auth.revocation_store", "token revocations", True))
        if get(section, "login", "enabled"):
            if get(section, "login", "provider") and get(section, "login", "session_store") == "memory":
                found.append((f"{key}.login.session_store", "login sessions", False))
    if cfg.token_service is not None and cfg.token_service.revocation_store == "memory":
        found.append(("token_service.revocation_store", "token revocations", True))
    return list(dict.fromkeys(found))


def _cgroup_cpus() -> float | None:
    """The CPU quota of this process's cgroup (v2 `cpu.max`, v1 `cfs_quota_us`), in cores: a
    container run with `--cpus 2` on a 16-core host may use two, whatever the affinity says."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as fq, open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as fp:
            q, p = int(fq.read()), int(fp.read())
        return None if q <= 0 else q / p
    except (OSError, ValueError):
        return None


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. `taskset`), capped by its
    cgroup's CPU quota rounded up."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def worker_count(cfg: GatewayConfig, requested: int | None = None) -> tuple[int, str]:
    """How many worker processes `serve` runs, and why: `--workers`, else `workers:` in the
    config, else one per usable core, unless a store is per process (then 1: a user who has not
    chosen a worker count must not get N times the limits they wrote)."""
    if requested is not None:
        return requested, "--workers"
    if cfg.workers is not None:
        return cfg.workers, "workers in the config"
    cores = usable_cores()
    state = [s for s in per_process_state(cfg) if not (s[2] and cfg.allow_per_worker_state)]
    if state and cores > 1:
        where = "; ".join(f"{k} ({what})" for k, what, _ in state[:3])
        return 1, (
            f"one worker, not {cores}, because these 'memory' stores keep state in one process: {where}. "
            "Set them to a Redis URL to run on every core, or allow_per_worker_state: true "
            "to accept limits per worker"
        )
    return cores, f"one per usable core ({cores})"


def lint_workers(cfg: GatewayConfig, workers: int) -> list[Finding]:
    """Per-process stores with several workers: an error unless the user accepts them knowingly."""
    out: list[Finding] = []
    if workers <= 1:
        return out
    for key, what, acceptable in per_process_state(cfg):
        if not acceptable:
            out.append(
                Finding(
                    "error",
                    key,
                    f"'memory' keeps {what} in one process, and {workers} workers would not share them "
                    "(a user logged in on one worker is unknown to the others): use a Redis or database store",
                )
            )
        elif cfg.allow_per_worker_state:
            out.append(
                Finding(
                    "warning",
                    key,
                    f"'memory' with {workers} workers (allow_per_worker_state): each worker keeps its own "
                    f"{what}, so limits apply per worker (a limit of N allows up to {workers}×N) and a "
                    "revocation reaches one worker: use Redis to make them exact",
                )
            )
        else:
            out.append(
                Finding(
                    "error",
                    key,
                    f"'memory' keeps {what} in one process, and {workers} workers would each have their own "
                    f"(limits would apply per worker: a limit of N would allow up to {workers}×N, a revocation "
                    "would reach one worker): use a Redis store, run 1 worker, or set "
                    "allow_per_worker_state: true to accept limits per worker",
                )
            )
    return out


def _openapi_security(cfg: GatewayConfig, config_dir: str) -> list[Finding]:
    """Operations with no `security` (nor a global one): public in OpenAPI's semantics, so say
    what the gateway does with them and how to choose."""
    from bastion.openapi.routes import unsecured

    out: list[Finding] = []
    defaults = _policy(cfg.policies, "auth")
    for i, route in enumerate(cfg.routes):
        if route.openapi is None:
            continue
        ops = unsecured(route, config_dir)
        if not ops:
            continue
        listing = "\n  " + "\n  ".join(ops)
        if route.default_security == "public":
            out.append(
                Finding(
                    "warning",
                    f"routes[{i}].default_security",
                    f"{len(ops)} operation(s) of {route.openapi} declare no `security` and are public "
                    f"(default_security: public):{listing}",
                )
            )
            continue
        own = _policy(route.policies, "auth")
        auth = own if own is not None and "schemes" in own.model_fields_set else defaults
        require = own.require if own is not None and "require" in own.model_fields_set else auth and auth.require
        if (own is not None and not own.enabled) or auth is None or not auth.enabled or not auth.schemes:
            fate = "no auth scheme applies to this route, so anyone can call them"
        elif require == []:
            fate = "the route's auth says `require: []`, so anyone can call them"
        else:
            fate = (
                "OpenAPI reads that as public, but bastion requires a credential of any scheme in "
                "policies.auth.schemes (default_security: require), so without one they answer 401"
            )
        out.append(
            Finding(
                "warning",
                f"routes[{i}].openapi",
                f"{len(ops)} operation(s) of {route.openapi} declare no `security` and the spec has no "
                f"global `security`: {fate}. Mark the public ones (login, register...) with "
                "`security: []` in the spec, give the others their `security`, or set "
                f"`default_security: public` on the route to make all of them public:{listing}",
            )
        )
    return out


def lint(cfg: GatewayConfig, config_dir: str | None = None, *, workers: int | None = None) -> list[Finding]:
    """Findings about `cfg`; `config_dir`: where relative paths (OpenAPI specs) are, None skips the
    checks that read them; `workers` is what `serve --workers` asked (None: the config's choice)."""
    out: list[Finding] = lint_workers(cfg, worker_count(cfg, workers)[0])
    for i, lst in enumerate(cfg.listeners):
        if lst.tls is None and not lst.is_loopback():
            if lst.allow_plaintext:
                out.append(
                    Finding(
                        "warning",
                        f"listeners[{i}]",
                        f"{lst.host}:{lst.port} serves plain HTTP on a non-loopback "
                        "address (allow_plaintext is set): put TLS in front of it",
                    )
                )
            else:
                out.append(
                    Finding(
                        "error",
                        f"listeners[{i}]",
                        f"{lst.host}:{lst.port} would serve plain HTTP on a non-loopback "
                        "address; add tls: {cert, key} or set allow_plaintext: true "
                        "if a TLS proxy terminates in front of it",
                    )
                )
        if cfg.trusted_proxies and lst.max_connections_per_ip is not None:
            out.append(
                Finding(
                    "warning",
                    f"listeners[{i}].max_connections_per_ip",
                    f"clients come through proxies (trusted_proxies is set), but the cap of "
                    f"{lst.max_connections_per_ip} connections per address counts the TCP peer, "
                    "i.e. the proxy: raise it above what the proxy opens or set it to null",
                )
            )
    if cfg.admin is not None:
        adm = cfg.admin
        loopback = adm.host in ("127.0.0.1", "::1", "localhost")
        if not loopback and not adm.token:
            out.append(Finding("error", "admin", f"the admin listener on {adm.host} is not loopback and has no token"))
        if adm.token is not None and len(adm.token) < 24:
            out.append(Finding("error", "admin.token", "the admin token is shorter than 24 characters"))
    for cidr in cfg.trusted_proxies:
        net = ipaddress.ip_network(cidr, strict=False)
        if net.prefixlen == 0:
            out.append(
                Finding(
                    "error",
                    "trusted_proxies",
                    f"{cidr} trusts X-Forwarded-For from everyone: any client could choose its own address",
                )
            )
    for name, up in cfg.upstreams.items():
        if not up.tls_verify:
            out.append(
                Finding(
                    "warning",
                    f"upstreams.{name}.tls_verify",
                    "certificate verification is off: the upstream can be impersonated",
                )
            )
        for url in up.urls:
            parts = urlsplit(url)
            host = parts.hostname or ""
            local = host == "localhost"
            try:
                local = local or ipaddress.ip_address(host).is_loopback
            except ValueError:
                pass
            if parts.scheme == "http" and not local:
                out.append(
                    Finding(
                        "warning",
                        f"upstreams.{name}",
                        f"{url} is plain HTTP to a non-loopback host: traffic and "
                        "credentials cross the network unencrypted",
                    )
                )
    sections = [("policies", cfg.policies)] + [(f"routes[{i}].policies", r.policies) for i, r in enumerate(cfg.routes)]
    for key, section in sections:
        for pname in REGISTRY:
            conf = _policy(section, pname)
            if conf is not None and conf.enabled:  # each policy owns its rules (PolicyConfig.lint)
                out += [Finding(sev, f"{key}.{pname}{'.' + sub if sub else ''}", msg) for sev, sub, msg in conf.lint()]
        for name, cls in REGISTRY.items():
            p = _policy(section, name)
            if cls.warn_when_off and p is not None and not p.enabled:
                out.append(Finding("warning", f"{key}.{name}", f"{name} is turned off"))
    ts = cfg.token_service
    auth = _policy(cfg.policies, "auth")
    if ts is not None and auth is not None and auth.enabled and auth.revocation_store != ts.revocation_store:
        out.append(
            Finding(
                "error",
                "token_service.revocation_store",
                f"{ts.revocation_store!r} is not policies.auth.revocation_store "
                f"({auth.revocation_store!r}): logouts would never reach the gateway's checks",
            )
        )
    if ts is not None and ts.revocation_store == "memory":
        out.append(
            Finding(
                "warning",
                "token_service.revocation_store",
                "'memory': a logout is known to this process only (use Redis with several gateways)",
            )
        )
    if config_dir is not None:
        out += _openapi_security(cfg, config_dir)
    if not cfg.routes and cfg.token_service is None:
        out.append(Finding("warning", "routes", "no routes: every request will get 404"))
    return out
