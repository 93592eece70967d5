"""A route with `openapi:` becomes one route per operation.

Each operation route carries, as policy settings over the route's own:
- `validation`: the spec and the operation (parameters, bodies, responses);
- `auth`: `require` from the operation's (or the document's) `security`, with `[]` public —
  OpenAPI's own semantics — and the gateway's schemes adjusted to where the spec says the
  credential travels (an apiKey's header, query parameter or cookie). An operation with no
  `security` in a document with none is public in OpenAPI's semantics, but the gateway fails
  closed: the route's own auth applies (any configured scheme) unless the route says
  `default_security: public` (`unsecured` lists them for `bastion check`);
- `rate_limit`, `authorization`, `cors` from `x-bastion-rate-limit`, `x-bastion-authorization`,
  `x-bastion-cors`, and any policy from `x-bastion-policies: {name: settings}`.

One more route catches the rest of the prefix: requests to paths or methods the spec does not
declare are refused (404, or 405 with `Allow`) unless `passthrough_undocumented` is set — the
inventory protection (OWASP API9).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bastion.openapi.operations import compile_operations
from bastion.openapi.spec import Spec, SpecError, load_spec

ALL_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"))
EXTENSIONS = {
    "x-bastion-rate-limit": "rate_limit",
    "x-bastion-authorization": "authorization",
    "x-bastion-cors": "cors",
}


@dataclass
class RoutePlan:
    name: str
    pattern: str
    methods: frozenset[str] | None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    loc: tuple[Any, ...] = ()


def base_path(spec: Spec, given: str | None) -> str:
    if given is not None:
        return given.rstrip("/")
    servers = spec.root.get("servers") or []
    if servers and isinstance(servers[0], dict):
        url = str(servers[0].get("url", ""))
        if "{" in url:
            return ""  # templated server URLs: say base_path explicitly
        return urlsplit(url).path.rstrip("/")
    return ""


def _scheme_settings(spec: Spec, name: str, gateway: dict[str, Any] | None, where: str) -> tuple[dict[str, Any], bool]:
    """The gateway's scheme `name`, adjusted to the spec's securityScheme; (settings, query key?)."""
    declared = ((spec.root.get("components") or {}).get("securitySchemes") or {}).get(name)
    if declared is None:
        raise SpecError(where, f"security names {name!r}, which is not in components.securitySchemes")
    declared, _ = spec.deref(declared, spec.path)
    if gateway is None:
        raise SpecError(
            where,
            f"the spec's security scheme {name!r} needs a scheme of that name in "
            "policies.auth.schemes (how to verify it: keys, JWT issuers, introspection)",
        )
    kind = declared.get("type")
    have = gateway.get("type")
    settings = dict(gateway)
    query = False
    if kind == "apiKey":
        if have != "api_key":
            raise SpecError(where, f"scheme {name!r} is an apiKey in the spec but {have!r} in the config")
        where_in, key_name = declared.get("in"), declared.get("name")
        if where_in == "header":
            settings["header"] = key_name
        elif where_in == "query":
            settings["query_param"] = key_name
            query = True
        elif where_in == "cookie":
            settings["cookie"] = key_name
    elif kind == "http":
        scheme = str(declared.get("scheme", "")).lower()
        if scheme != "bearer":
            raise SpecError(
                where,
                f"scheme {name!r}: http {scheme!r} is not supported at the gateway (use bearer tokens or API keys)",
            )
        if have not in ("jwt", "introspection", "api_key"):
            raise SpecError(where, f"scheme {name!r} is http bearer in the spec but {have!r} in the config")
    elif kind in ("oauth2", "openIdConnect"):
        if have not in ("jwt", "introspection"):
            raise SpecError(
                where, f"scheme {name!r} is {kind} in the spec but {have!r} in the config (use jwt or introspection)"
            )
    elif kind == "mutualTLS":
        if have != "mtls":
            raise SpecError(where, f"scheme {name!r} is mutualTLS in the spec but {have!r} in the config")
    else:
        raise SpecError(where, f"scheme {name!r} has an unknown type {kind!r}")
    return settings, query


def unsecured(route: Any, config_dir: str) -> list[str]:
    """The operations of an `openapi:` route that neither they nor the document give a
    `security`, as "METHOD /path (operationId)"; [] when the spec cannot be loaded (that error
    is reported where the routes are built)."""
    try:
        ops = compile_operations(load_spec(Path(config_dir) / route.openapi))
    except SpecError:
        return []
    return [
        f"{op.method} {op.path}" + (f" ({op.operation_id})" if op.operation_id else "")
        for op in ops.values()
        if op.security is None
    ]


def plan_routes(
    index: int,
    route: Any,
    config_dir: str,
    auth_defaults: dict[str, Any] | None,
    spec_policies: frozenset[str] = frozenset(),
) -> list[RoutePlan]:
    """The routes of one `openapi:` route entry. `auth_defaults`: the auth settings this route
    would have without the spec (defaults merged with its own block), for the scheme names.
    `spec_policies`: other policies, on for this route, that read the operation (`spec` and
    `operation` settings, as validation does: the SSRF guard's `format: uri` fields)."""
    path = Path(config_dir) / route.openapi
    spec = load_spec(path)
    ops = compile_operations(spec)
    base = base_path(spec, route.base_path)
    prefix_name = route.name or Path(route.openapi).stem
    schemes_cfg: dict[str, Any] = dict((auth_defaults or {}).get("schemes") or {})
    own = route.policies.model_dump(exclude_unset=True) if route.policies is not None else {}
    own_validation = own.get("validation") or {}
    plans: list[RoutePlan] = []
    by_template: dict[str, set[str]] = {}
    for key, op in ops.items():
        where = f"{spec.path}#/paths/{op.path}/{op.method.lower()}"
        pattern = (base + op.path) or "/"
        by_template.setdefault(pattern, set()).add(op.method)
        overrides: dict[str, dict[str, Any]] = {}
        validation = {"spec": str(spec.path), "operation": key}
        if "x-bastion-normalise" in op.extensions:
            validation["normalise"] = op.extensions["x-bastion-normalise"]
        if own_validation.get("enabled", True):
            overrides["validation"] = validation
        if op.security is not None:
            require = [{k: list(v or []) for k, v in alt.items()} for alt in op.security]
            schemes: dict[str, Any] = {}
            query = False
            for alt in require:
                for name in alt:
                    if name not in schemes:
                        schemes[name], q = _scheme_settings(spec, name, schemes_cfg.get(name), where)
                        query |= q
            auth: dict[str, Any] = {"require": require}
            if schemes:
                auth["schemes"] = {**schemes_cfg, **schemes}
            if query:
                auth["allow_query_key"] = True
            overrides["auth"] = auth
        elif route.default_security == "public":
            overrides["auth"] = {"require": []}
        for ext, policy in EXTENSIONS.items():
            if ext in op.extensions:
                value = op.extensions[ext]
                if not isinstance(value, dict):
                    raise SpecError(where, f"{ext} is a mapping of {policy} settings")
                overrides[policy] = value
        extra = op.extensions.get("x-bastion-policies")
        if extra is not None:
            if not isinstance(extra, dict) or not all(isinstance(v, dict) for v in extra.values()):
                raise SpecError(where, "x-bastion-policies maps policy names to settings")
            overrides.update(extra)
        for name in spec_policies:
            overrides[name] = {**overrides.get(name, {}), "spec": str(spec.path), "operation": key}
        methods = frozenset({op.method, "HEAD"} if op.method == "GET" else {op.method})
        plans.append(
            RoutePlan(
                f"{prefix_name}:{op.operation_id or key}",
                pattern,
                methods,
                overrides,
                ("routes", index, "openapi", key),
            )
        )
    catch = route.path or ((base or "") + "/*")
    if route.passthrough_undocumented:
        for pattern, documented in by_template.items():
            declared = frozenset(documented) | ({"HEAD"} if "GET" in documented else frozenset())
            rest = ALL_METHODS - declared
            if rest:
                plans.append(RoutePlan(f"{prefix_name}:undocumented", pattern, frozenset(rest), {}, ("routes", index)))
        plans.append(RoutePlan(f"{prefix_name}:undocumented", catch, None, {}, ("routes", index)))
    else:
        plans.append(
            RoutePlan(
                f"{prefix_name}:undocumented",
                catch,
                None,
                {"validation": {"spec": str(spec.path), "undocumented": True}},
                ("routes", index),
            )
        )
    return plans
