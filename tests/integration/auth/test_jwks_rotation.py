"""A JWKS served over HTTP (a real server on loopback) rotates its keys: a token signed by a key
the set no longer holds is refused as soon as the gateway has fetched the new set, even when the
verifier had accepted (and cached) it before — as for `jwks_file`.

Generated: any sequence of "publish this key set" and "present the token of key x". The model is
what the verifier knows: the set it last fetched, refetched when a token names a kid it does not
know (`jwks_min_refresh_seconds: 0`) or when the set is older than `jwks_cache_seconds`. A token
is accepted exactly when its key is in the set the verifier holds after that lookup; the cache of
verified tokens must never make a difference. Before the fix the cache did: a token verified
once stayed accepted after its key left the set."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import ThreadedUvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.auth.errors import AuthError
from bastion.auth.schemes import Jwt, JwtScheme

ISS = "https://rotating.example"
KEYS = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in ("a", "b", "c")}
TOKENS = {
    kid: jwt.encode(
        {"iss": ISS, "sub": f"user-{kid}", "iat": int(time.time()), "exp": int(time.time()) + 3600},
        key,
        "RS256",
        headers={"kid": kid},
    )
    for kid, key in KEYS.items()
}


def jwk(kid: str) -> dict[str, Any]:
    d = jwt.algorithms.RSAAlgorithm.to_jwk(KEYS[kid].public_key(), as_dict=True)
    return {**d, "kid": kid, "use": "sig", "alg": "RS256"}


class JwksServer:
    """Serves whatever set `publish` was last given; counts the fetches."""

    def __init__(self) -> None:
        self.body = b'{"keys": []}'
        self.fetches = 0

    def publish(self, kids: list[str]) -> None:
        self.body = json.dumps({"keys": [jwk(k) for k in kids]}).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.fetches += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": self.body})


@pytest.fixture(scope="module")
def jwks() -> Iterator[tuple[JwksServer, str]]:
    srv = JwksServer()
    with ThreadedUvicorn(srv) as t:
        yield srv, t.url + "/jwks.json"


def scheme(url: str, cache_seconds: float = 600) -> Jwt:
    conf = JwtScheme.model_validate(
        {
            "type": "jwt",
            "issuers": [
                {
                    "issuer": ISS,
                    "algorithms": ["RS256"],
                    "jwks_url": url,
                    "jwks_min_refresh_seconds": 0,
                    "jwks_cache_seconds": cache_seconds,
                }
            ],
        }
    )
    return Jwt("bearer", conf, ".")


async def accepted(s: Jwt, kid: str) -> bool:
    try:
        await s.authenticate(TOKENS[kid])
    except AuthError:
        return False
    return True


def test_a_rotated_out_key_takes_its_cached_tokens_with_it(jwks: tuple[JwksServer, str]) -> None:
    srv, url = jwks

    async def go() -> None:
        srv.publish(["a"])
        s = scheme(url)
        assert await accepted(s, "a")
        assert await accepted(s, "a")  # (from the cache)
        srv.publish(["b"])  # a rotated out
        assert await accepted(s, "b")  # an unknown kid: the new set is fetched
        assert not await accepted(s, "a")  # cached as accepted before; its key is gone

    asyncio.run(go())


def test_a_stale_set_is_refetched_even_when_every_token_is_cached(jwks: tuple[JwksServer, str]) -> None:
    # no new kid ever arrives: the set is refetched once it is older than jwks_cache_seconds, and
    # a key removed meanwhile stops its cached tokens then (jwks_file: within its poll second)
    srv, url = jwks

    async def go() -> None:
        srv.publish(["a"])
        s = scheme(url, cache_seconds=0.05)
        assert await accepted(s, "a")
        srv.publish(["b"])
        fetches = srv.fetches
        deadline = time.monotonic() + 10
        while await accepted(s, "a"):
            assert time.monotonic() < deadline, "a token of a removed key stayed accepted"
            await asyncio.sleep(0.06)
        assert srv.fetches > fetches

    asyncio.run(go())


steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.lists(st.sampled_from(sorted(KEYS)), unique=True, max_size=3)),
        st.tuples(st.just("present"), st.sampled_from(sorted(KEYS))),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps)
def test_the_cache_never_outlives_the_key_set(jwks: tuple[JwksServer, str], steps: list[tuple[str, Any]]) -> None:
    srv, url = jwks

    async def go() -> None:
        published: list[str] = ["a"]
        srv.publish(published)
        s = scheme(url)
        known: set[str] | None = None  # what the verifier fetched last (None: nothing yet)
        for op, arg in steps:
            if op == "publish":
                published = arg
                srv.publish(published)
                continue
            if known is None or arg not in known:
                known = set(published)  # first use, or an unknown kid: fetched now
            assert await accepted(s, arg) == (arg in known), (op, arg, known)

    asyncio.run(go())
