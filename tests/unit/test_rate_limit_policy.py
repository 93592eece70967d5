"""Tiers and key composition, deciding on requests built directly (memory store)."""

import asyncio
import ipaddress
import uuid

import pytest
from pydantic import ValidationError

from bastion.http import Request
from bastion.pipeline import Context, PolicyEnv
from bastion.policies.rate_limit import RateLimit, RateLimitConfig
from bastion.principal import Principal


async def _receive():
    return {"type": "http.request", "body": b""}


def request(ip="192.0.2.1", path="/x", headers=()):
    return Request(
        method="GET",
        path=path,
        query=b"",
        headers=list(headers),
        client_ip=ipaddress.ip_address(ip),
        peer_ip=ipaddress.ip_address(ip),
        peer_trusted=False,
        scheme="http",
        host="h",
        receive=_receive,
        route_name="r",
    )


def policy(**cfg):
    cfg.setdefault("login_limits", [])
    return RateLimit(RateLimitConfig.model_validate(cfg), PolicyEnv())


def statuses(p, n, make_ctx, req):
    async def go():
        out = []
        for _ in range(n):
            resp = await p.on_request(req, make_ctx())
            out.append(200 if resp is None else resp.status)
        return out

    return asyncio.run(go())


def test_tier_picks_its_limits_and_unknown_tiers_get_the_default():
    per_user = lambda rate: [{"rate": rate, "key": ["user"]}]  # noqa: E731
    p = policy(
        limits=per_user("2/hour"),
        tiers={"free": per_user("3/hour"), "pro": per_user("5/hour")},
        algorithm="fixed_window",
    )
    ip = f"198.51.100.{uuid.uuid4().int % 250}"

    def ctx(tier, user):
        return lambda: Context(principal=Principal(user, tier=tier))

    u = uuid.uuid4().hex
    assert statuses(p, 6, ctx("pro", u + "p"), request(ip)) == [200] * 5 + [429]
    assert statuses(p, 4, ctx("free", u + "f"), request(ip)) == [200] * 3 + [429]
    assert statuses(p, 3, ctx("platinum", u + "x"), request(ip)) == [200] * 2 + [429]
    assert statuses(p, 3, ctx(None, u + "n"), request(ip)) == [200] * 2 + [429]


def test_user_key_falls_back_to_the_ip_for_anonymous_requests():
    p = policy(limits=[{"rate": "1/hour", "key": ["user"]}], algorithm="fixed_window")
    a, b = "203.0.113.10", "203.0.113.11"
    tag = uuid.uuid4().hex
    # two anonymous clients are not pooled into one "no user" bucket
    assert statuses(p, 1, lambda: Context(), request(a + "", path="/" + tag)) == [200]
    assert statuses(p, 1, lambda: Context(), request(b, path="/" + tag)) == [200]
    assert statuses(p, 1, lambda: Context(), request(a, path="/" + tag)) == [429]
    # one user on two addresses is one bucket
    user = uuid.uuid4().hex
    assert statuses(p, 1, lambda: Context(principal=Principal(user)), request(a)) == [200]
    assert statuses(p, 1, lambda: Context(principal=Principal(user)), request(b)) == [429]


def test_combined_key_and_claims():
    p = policy(limits=[{"rate": "1/hour", "key": ["claim:org", "route"]}], algorithm="fixed_window")
    org = uuid.uuid4().hex
    ctx = lambda: Context(principal=Principal("someone", claims={"org": org}))  # noqa: E731
    assert statuses(p, 2, ctx, request("192.0.2.50")) == [200, 429]
    assert statuses(p, 1, ctx, request("192.0.2.51")) == [429]  # same org, other address


def test_cost_from_context_is_charged():
    p = policy(limits=[{"rate": "10/hour", "key": ["header:x-k"]}], algorithm="fixed_window")
    h = [(b"x-k", uuid.uuid4().hex.encode())]
    ctx = lambda: Context(values={"cost": 4})  # noqa: E731
    assert statuses(p, 3, ctx, request(headers=h)) == [200, 200, 429]


@pytest.mark.parametrize(
    "bad",
    [
        {"limits": ["10/fortnight"]},
        {"limits": [{"rate": "1/s", "key": ["ipaddr"]}]},
        {"algorithm": "magic"},
        {"limits": [{"rate": "1/s", "fail": "maybe"}]},
    ],
)
def test_bad_config_is_refused_at_load(bad):
    with pytest.raises(ValidationError):
        RateLimitConfig.model_validate(bad)
