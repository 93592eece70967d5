"""Rate limits per route: several limits (all must pass), keyed by client, API key, user, route,
a header or a claim; tiers; RateLimit headers; a stricter limit on login endpoints by default."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Sequence
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bastion.http import Request, Response, ip_text, problem
from bastion.pipeline import Context, Policy, PolicyConfig, RequestAnswer
from bastion.ratelimit import ALGORITHMS, Decision, Rate, StoreUnavailable, parse_rate, shared_store

Algorithm = Literal["fixed_window", "sliding_log", "sliding_counter", "token_bucket", "leaky_bucket", "gcra"]
_KEY_PART = re.compile(r"ip|api_key|user|route|tier|(?:header|claim):[A-Za-z0-9_.\-]+")


class LimitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate: str = Field(description="'100/minute', '10/second burst 20', '5 per 10 seconds'.")
    key: list[str] = Field(
        default_factory=lambda: ["ip"],
        description="What the limit counts per: any of ip, api_key, user, route, tier, "
        "header:NAME, claim:NAME; several make a combined key. A missing part (no user on an "
        "anonymous request) falls back to the client IP.",
    )
    algorithm: Algorithm | None = Field(None, description="Overrides the policy's algorithm.")
    name: str | None = Field(None, description="Name in RateLimit-Policy and logs (default: the rate).")
    fail: Literal["open", "closed"] = Field(
        "open", description="When the store is unreachable: let requests through, or refuse (503)."
    )
    max_delay: float = Field(
        0.0,
        ge=0,
        le=60,
        description="leaky_bucket only: delay requests up to this many seconds (a shaper) "
        "instead of refusing at once (a meter).",
    )

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str) -> str:
        parse_rate(v)
        return v

    @field_validator("key")
    @classmethod
    def _key(cls, parts: list[str]) -> list[str]:
        if not parts:
            raise ValueError("a limit needs at least one key part")
        for p in parts:
            if not _KEY_PART.fullmatch(p):
                raise ValueError(f"{p!r} is not a key part (ip, api_key, user, route, tier, header:X, claim:X)")
        return parts


def _limits(values: Sequence[LimitConfig | str | dict[str, Any]]) -> list[LimitConfig]:
    """Limits with the `"10/minute"` shorthand spelled out (LimitConfig entries kept as they are)."""
    return [LimitConfig(rate=v) if isinstance(v, str) else LimitConfig.model_validate(v) for v in values]


class RateLimitConfig(PolicyConfig):
    store: str = Field(
        "memory",
        description="'memory' (per process) or a Redis URL shared by every gateway: redis://, "
        "rediss://, unix://, redis+sentinel://h1:26379,h2:26379/service, redis+cluster://h:p.",
    )
    key_prefix: str = Field("bastion:rl", description="Prefix of every Redis key (to share one Redis).")
    algorithm: Algorithm = Field("sliding_counter", description="Default algorithm for the limits.")
    limits: list[LimitConfig | str] = Field(
        default_factory=list, description="Limits that apply to everyone (all must pass)."
    )
    tiers: dict[str, list[LimitConfig | str]] = Field(
        default_factory=dict,
        description="Limits by the principal's tier (from its API key or token); they replace "
        "`limits` for that principal. An unknown or missing tier gets `limits`.",
    )
    login_paths: list[str] = Field(
        default_factory=lambda: ["/auth/login", "/auth/token", "/oauth/token", "/login", "/token"],
        description="Paths that get `login_limits` as well (credential guessing).",
    )
    login_limits: list[LimitConfig | str] = Field(
        default_factory=lambda: ["5/minute"],  # type: ignore[arg-type]  # a shorthand, normalised below
        description="Extra limits on `login_paths`, per client IP.",
    )
    headers: bool = Field(True, description="Send X-RateLimit-* and RateLimit/RateLimit-Policy headers.")
    max_keys: int = Field(1_000_000, ge=1000, description="Memory store: most keys kept (LRU beyond).")

    @model_validator(mode="after")
    def _normalise(self) -> RateLimitConfig:
        # the config accepts "10/minute" shorthands; from here on every entry is a LimitConfig
        # (the fields keep their declared `LimitConfig | str` type: it is the documented schema)
        self.limits = list[LimitConfig | str](_limits(self.limits))
        self.tiers = {t: list[LimitConfig | str](_limits(v)) for t, v in self.tiers.items()}
        self.login_limits = list[LimitConfig | str](_limits(self.login_limits))
        return self


class _Limit:
    __slots__ = ("name", "rate", "key", "algorithm", "fail", "max_delay")

    def __init__(self, c: LimitConfig, default_algorithm: str) -> None:
        self.rate: Rate = parse_rate(c.rate)
        self.name = c.name or c.rate.replace(" ", "")
        self.key = tuple(c.key)
        self.algorithm = c.algorithm or default_algorithm
        self.fail = c.fail
        self.max_delay = c.max_delay if self.algorithm == "leaky_bucket" else 0.0


class RateLimit(Policy[RateLimitConfig]):
    name: ClassVar[str] = "rate_limit"
    priority: ClassVar[int] = 600  # after authentication: limits may key on the principal
    Config = RateLimitConfig
    default_on: ClassVar[bool] = True

    def __new__(cls, config: RateLimitConfig | None = None, env: Any = None) -> RateLimit:
        """A config whose phases do nothing is built without them, so that the pipeline never
        calls them (a step costs ~1k instructions whatever it does): without any limit that can
        apply, neither phase; without RateLimit headers, no response phase."""
        if cls is RateLimit and config is not None:
            login = bool(config.login_limits and config.login_paths)
            if not (config.limits or any(config.tiers.values()) or login):
                cls = _Idle
            elif not config.headers:
                cls = _Headerless
        return super().__new__(cls)

    def __init__(self, config: RateLimitConfig, env) -> None:
        super().__init__(config, env)
        algo = config.algorithm
        self.limits = tuple(_Limit(c, algo) for c in _limits(config.limits))
        self.tiers = {t: tuple(_Limit(c, algo) for c in _limits(v)) for t, v in config.tiers.items()}
        self.login = tuple(_Limit(c, algo) for c in _limits(config.login_limits))
        self.login_paths = frozenset(p.rstrip("/") or "/" for p in config.login_paths)
        self.headers = config.headers
        self.store_url = config.store
        self.max_keys = config.max_keys
        self.key_prefix = config.key_prefix
        self.decisions = {"allowed": 0, "limited": 0, "store_unavailable": 0}

    def _key(self, limit: _Limit, req: Request, ctx: Context) -> str:
        parts = []
        p = ctx.principal
        for part in limit.key:
            value: Any
            if part == "ip":
                value = ip_text(req.client_ip) if req.client_ip else "-"
            elif part == "api_key":
                value = p.key_id if p is not None else None
            elif part == "user":
                value = p.subject if p is not None else None
            elif part == "route":
                value = req.route_name
            elif part == "tier":
                value = p.tier if p is not None else None
            elif part.startswith("header:"):
                raw = req.header(part[7:].lower().encode())
                value = hashlib.blake2b(raw, digest_size=12).hexdigest() if raw else None
            else:  # claim:NAME
                value = p.claims.get(part[6:]) if p is not None else None
            if value is None:  # a missing part never pools strangers together: fall back to the IP
                value = "ip=" + (ip_text(req.client_ip) if req.client_ip else "-")
            parts.append(f"{part}={value}")
        return "|".join(parts)

    def on_request_sync(self, req: Request, ctx: Context) -> RequestAnswer:
        # the limits that apply: the principal's tier's (or everyone's), and the login ones
        tier = ctx.principal.tier if ctx.principal is not None else None
        limits = self.tiers.get(tier, self.limits) if tier is not None else self.limits
        if self.login and (req.path.rstrip("/") or "/") in self.login_paths:
            limits = limits + self.login
        if not limits:
            return None  # (no coroutine for a request no limit applies to)
        return self._limit(limits, req, ctx)

    async def _limit(self, limits: tuple[_Limit, ...], req: Request, ctx: Context) -> Response | None:
        cost = int(ctx.values.get("cost", 1))
        charged = await self._charge(limits, cost, req, ctx)
        if isinstance(charged, Response):
            return charged
        results, refused = charged
        if results:
            ctx.values["rate_limit.results"] = results
        if refused is not None:
            self.decisions["limited"] += 1
            return self._too_many(req, ctx, results, refused, cost)
        self.decisions["allowed"] += 1
        delay = max((d.delay for _, d in results), default=0.0)
        if delay > 0:  # leaky-bucket shaper: leave at the fixed rate
            ctx.log_fields["rate_limit_delay_ms"] = round(delay * 1000, 1)
            await asyncio.sleep(delay)
        return None

    async def _charge(
        self, limits: tuple[_Limit, ...], cost: int, req: Request, ctx: Context
    ) -> tuple[list[tuple[_Limit, Decision]], tuple[_Limit, Decision] | None] | Response:
        """Charge `cost` to each limit in order: the decisions made, and the limit that refused
        (the last one charged), or a 503 when the store is down and a limit fails closed."""
        store = shared_store(self.store_url, max_keys=self.max_keys, prefix=self.key_prefix)
        results: list[tuple[_Limit, Decision]] = []
        for limit in limits:
            key = self._key(limit, req, ctx)
            try:
                d = await store.hit(limit.algorithm, key, limit.rate, cost, max_delay=limit.max_delay)
            except StoreUnavailable:
                self.decisions["store_unavailable"] += 1
                if limit.fail == "closed":
                    ctx.log_fields["rate_limit"] = {"limit": limit.name, "store": "unavailable"}
                    return problem(
                        503,
                        "rate-limit-unavailable",
                        "rate limiting is unavailable and this limit fails closed",
                        request_id=req.request_id,
                        headers=[(b"retry-after", b"1")],
                    )
                continue
            results.append((limit, d))
            if not d.allowed:
                # Stop here: limits after this one are not charged for a refused request.
                # (Those before it were; a refund would need a second round trip.)
                ctx.values["rate_limit.limited_key"] = f"{limit.name} {key}"
                return results, (limit, d)
        return results, None

    def _too_many(
        self,
        req: Request,
        ctx: Context,
        results: list[tuple[_Limit, Decision]],
        refused: tuple[_Limit, Decision],
        cost: int,
    ) -> Response:
        """The 429 for a request `refused` by one limit (never, at any rate: it costs more than the limit)."""
        limit, d = refused
        ctx.log_fields["rate_limit"] = {"limited_by": limit.name}
        headers = self._headers(results) if self.headers else []
        if math.isinf(d.retry_after):
            return problem(
                429,
                "rate-limited",
                f"this request costs {cost}, more than the limit {limit.name} allows",
                request_id=req.request_id,
                headers=headers,
                extra={"limit": limit.name, "cost": cost},
            )
        seconds = max(1, math.ceil(d.retry_after))
        headers.append((b"retry-after", str(seconds).encode()))
        return problem(
            429,
            "rate-limited",
            f"rate limit {limit.name} exceeded; retry in {seconds}s",
            request_id=req.request_id,
            headers=headers,
            extra={"retry_after": seconds, "limit": limit.name},
        )

    def _headers(self, results: list[tuple[_Limit, Decision]]) -> list[tuple[bytes, bytes]]:
        # the most restrictive limit speaks for the response
        limit, d = min(results, key=lambda r: (r[1].remaining, -r[1].reset_after))
        reset = max(0, math.ceil(d.reset_after))
        policy = ",".join(f'"{lim.name}";q={lim.rate.limit};w={lim.rate.period:g}' for lim, _ in results)
        return [
            (b"x-ratelimit-limit", str(d.limit).encode()),
            (b"x-ratelimit-remaining", str(d.remaining).encode()),
            (b"x-ratelimit-reset", str(reset).encode()),
            (b"ratelimit-policy", policy.encode()),
            (b"ratelimit", f'"{limit.name}";r={d.remaining};t={reset}'.encode()),
        ]

    def on_response_sync(self, req: Request, resp: Response, ctx: Context) -> None:
        results = ctx.values.get("rate_limit.results")
        if results and self.headers and resp.stopped_by != self.name:
            resp.headers.extend(self._headers(results))


class _Headerless(RateLimit):
    """A rate limit that sends no RateLimit headers: no response phase."""

    on_response_sync = Policy.on_response_sync


class _Idle(RateLimit):
    """A rate limit with no limit that can apply to any request (none configured, no login path
    or no login limit): in no phase. (`rate_limit` is on by default.)"""

    on_request_sync = Policy.on_request_sync
    on_response_sync = Policy.on_response_sync


assert set(ALGORITHMS) == set(get_args(Algorithm))
