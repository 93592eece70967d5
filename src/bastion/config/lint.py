"""`bastion check`: findings about a config that validates but is unsafe."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
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


def lint(cfg: GatewayConfig, config_dir: str | None = None) -> list[Finding]:
    """`config_dir`: where relative paths (OpenAPI specs) are; None skips the checks that read them."""
    out: list[Finding] = []
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
