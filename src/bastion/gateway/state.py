"""A config compiled into what the hot path needs: router, pipelines, upstream pools."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import orjson
from pydantic import ValidationError

from bastion.config.loader import ConfigError, ConfigIssue
from bastion.config.model import OVERRIDE_HEADERS, GatewayConfig, WebSocketConfig
from bastion.gateway.inprocess import InProcessPool
from bastion.gateway.proxy import UpstreamPool
from bastion.gateway.router import Route, Router
from bastion.http import NetworkSet
from bastion.openapi.routes import plan_routes
from bastion.openapi.spec import SpecError
from bastion.pipeline import Pipeline, Policy, PolicyEnv
from bastion.policies import REGISTRY

log = logging.getLogger("bastion.gateway")


@dataclass(slots=True)
class RouteTarget:
    pipeline: Pipeline
    upstream: UpstreamPool | None  # None in middleware mode: the wrapped app answers
    methods: frozenset[str] | None
    websocket: WebSocketConfig = field(default_factory=lambda: WebSocketConfig(enabled=False))


@dataclass
class GatewayState:
    config: GatewayConfig
    version: int
    router: Router[RouteTarget]
    edge: Pipeline  # policies that also run for requests no route matches
    defaults: Pipeline  # every default policy: what the middleware applies where no route matches
    upstreams: dict[str, UpstreamPool]
    trusted: NetworkSet
    policies: list[Policy]
    inflight: int = 0
    retired: bool = False
    source: str = "<config>"
    extra: dict[str, Any] = field(default_factory=dict)
    token_app: Any = None
    # client headers never forwarded: rewrite/override headers not allowed by `edge`, and the
    # principal headers (only the gateway sets them)
    request_drop: frozenset[bytes] = frozenset()
    # (method, canonical path, Host) -> (route, path parameters) for requests routed before:
    # Gateway._route's answer, which is a function of these three and this state's routes only
    routed: dict[tuple[str, str, str], tuple[Any, dict[str, str]]] = field(default_factory=dict)

    async def close(self) -> None:
        for pool in self.upstreams.values():
            await pool.close()
        for policy in self.policies:
            await policy.close()


def _raw(section: Any, name: str) -> dict[str, Any] | None:
    value = getattr(section, name)
    return None if value is None else value.model_dump(exclude_unset=True)


class _Compiler:
    """Builds a `GatewayState` from a validated config, collecting every problem (with the key
    it belongs to) instead of stopping at the first, so `bastion check` reports them all."""

    def __init__(self, cfg: GatewayConfig, config_dir: str) -> None:
        self.cfg = cfg
        self.config_dir = config_dir
        self.env = PolicyEnv(
            config_dir=config_dir,
            tls=any(lst.tls for lst in cfg.listeners),
            principal_headers=cfg.principal_headers.compile(),
        )
        self.built: dict[tuple[str, bytes], Policy] = {}  # one object per distinct policy config
        self.issues: list[ConfigIssue] = []
        self.defaults: dict[str, dict[str, Any] | None] = {}
        self.global_policies: dict[str, Policy] = {}
        self.upstreams: dict[str, Any] = {name: UpstreamPool(name, up) for name, up in cfg.upstreams.items()}
        self.routes: list[Route[RouteTarget]] = []
        self.token_app: Any = None

    def build(self, name: str, raw: dict[str, Any], loc: tuple[Any, ...]) -> Policy | None:
        cls = REGISTRY[name]
        try:
            conf = cls.Config.model_validate(raw)
        except ValidationError as exc:
            for err in exc.errors():
                self.issues.append(ConfigIssue(loc + tuple(err["loc"]), None, err["msg"].removeprefix("Value error, ")))
            return None
        if not conf.enabled:
            return None
        key = (name, orjson.dumps(conf.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS))
        if key not in self.built:
            try:
                self.built[key] = cls(conf, self.env)
            except (ValueError, OSError) as exc:  # e.g. a key file that cannot be read
                self.issues.append(ConfigIssue(loc, None, str(exc)))
                return None
        return self.built[key]

    def global_defaults(self) -> None:
        for name, cls in REGISTRY.items():
            raw = _raw(self.cfg.policies, name)
            if raw is None and cls.default_on:
                raw = {}
            self.defaults[name] = raw
            if raw is not None:
                policy = self.build(name, raw, ("policies", name))
                if policy is not None:
                    self.global_policies[name] = policy

    def edge_policies(self) -> list[Policy]:
        """The policies of the edge pipeline (run for every request before routing)."""
        return [p for name, p in self.global_policies.items() if REGISTRY[name].unrouted]

    def add_route(
        self,
        rc: Any,
        name: str,
        pattern: str,
        methods: frozenset[str] | None,
        extra: dict[str, dict[str, Any]],
        loc: tuple[Any, ...],
    ) -> None:
        """One route: each policy is the global one unless the route (or `extra`, from a spec or
        the token service) overrides it, in which case the merged config is built."""
        policies: list[Policy] = []
        for pname, cls in REGISTRY.items():
            override = _raw(rc.policies, pname) if rc.policies is not None else None
            more = extra.get(pname)
            if not cls.per_route or (override is None and more is None):
                policy = self.global_policies.get(pname)
            else:
                merged = {**(self.defaults[pname] or {}), **(override or {}), **(more or {})}
                policy = self.build(pname, merged, (*loc, "policies", pname))
            if policy is not None:
                policies.append(policy)
        ws = getattr(rc, "websocket", None) or WebSocketConfig(enabled=False)  # the token service: none
        target = RouteTarget(
            Pipeline(policies, self.edge_policies()), self.upstreams[rc.upstream] if rc.upstream else None, methods, ws
        )
        case = self.cfg.edge.case_sensitive_paths if rc.case_sensitive is None else rc.case_sensitive
        self.routes.append(
            Route(name=name, pattern=pattern, methods=methods, host=rc.host, target=target, case_sensitive=case)
        )

    def configured_routes(self) -> None:
        for i, rc in enumerate(self.cfg.routes):
            if rc.openapi is None:
                assert rc.path is not None  # the config model requires a path without a spec
                self.add_route(
                    rc, rc.name or rc.path, rc.path, frozenset(rc.methods) if rc.methods else None, {}, ("routes", i)
                )
            else:
                self.openapi_routes(i, rc)

    def openapi_routes(self, i: int, rc: Any) -> None:
        auth = {**(self.defaults.get("auth") or {}), **(_raw(rc.policies, "auth") or {})}
        # other policies that read the spec's operation (`spec`/`operation` settings), when on here
        spec_policies: set[str] = set()
        for name, cls in REGISTRY.items():
            if name == "validation" or not {"spec", "operation"} <= set(cls.Config.model_fields):
                continue
            default, own = self.defaults.get(name), _raw(rc.policies, name) if rc.policies is not None else None
            if (default is not None or own is not None) and {**(default or {}), **(own or {})}.get("enabled", True):
                spec_policies.add(name)
        try:
            plans = plan_routes(i, rc, self.config_dir, auth, frozenset(spec_policies))
        except SpecError as exc:
            self.issues.append(ConfigIssue(("routes", i, "openapi"), None, str(exc)))
            return
        for plan in plans:
            methods = plan.methods
            if rc.methods and methods is not None:
                methods = methods & frozenset(rc.methods)
                if not methods:
                    continue
            self.add_route(rc, plan.name, plan.pattern, methods, plan.overrides, plan.loc)

    def token_service_route(self) -> None:
        ts = self.cfg.token_service
        if ts is None:
            return
        try:
            from bastion.tokens.app import TokenApp

            self.token_app = TokenApp(ts)
        except Exception as exc:  # the database or the key cannot be used: say which and why
            self.issues.append(ConfigIssue(("token_service",), None, f"{type(exc).__name__}: {exc}".splitlines()[0]))
            return
        self.upstreams["token_service"] = InProcessPool("token_service", self.token_app)
        p = ts.prefix
        throttled = [f"{p}/login", f"{p}/register", f"{p}/oauth/token", f"{p}/oauth/authorize"]
        configured = (self.defaults.get("rate_limit") or {}).get("login_paths")
        if configured is None:
            configured = REGISTRY["rate_limit"].Config().login_paths  # type: ignore[attr-defined]
        extra: dict[str, dict[str, Any]] = {"rate_limit": {"login_paths": list(configured) + throttled}}
        if self.defaults.get("auth") is not None:
            extra["auth"] = {"require": []}  # its endpoints check their own credentials
        # a route with no policy block of its own, to the in-process pool registered above
        plan = SimpleNamespace(policies=None, upstream="token_service", host=None, case_sensitive=None)
        self.add_route(plan, "token_service", f"{p}/*", None, extra, ("token_service",))


def compile_state(
    cfg: GatewayConfig, *, config_dir: str = ".", version: int = 1, source: str = "<config>"
) -> GatewayState:
    c = _Compiler(cfg, config_dir)
    c.global_defaults()
    c.configured_routes()
    c.token_service_route()
    if c.issues:
        raise ConfigError(source, c.issues)
    edge = Pipeline(c.edge_policies())
    request_drop = c.env.principal_headers.names() | frozenset(
        h.encode() for h in OVERRIDE_HEADERS if h not in cfg.edge.forward_override_headers
    )
    return GatewayState(
        cfg,
        version,
        Router(c.routes),
        edge,
        Pipeline(list(c.global_policies.values()), c.edge_policies()),
        c.upstreams,
        NetworkSet(cfg.trusted_proxies),
        list(c.built.values()),
        source=source,
        token_app=c.token_app,
        request_drop=request_drop,
    )
