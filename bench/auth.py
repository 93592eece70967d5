"""bench/auth: token verifications per second, bastion's verifier (cold and through its cache)
beside PyJWT's own decode of the same tokens, in one run.

    .venv/bin/python bench/auth.py [--seconds 1]

cold: every token is new (signature checked every time); cached: a client repeating its token
(revocation is checked by the policy on every request, not part of this figure).
"""

from __future__ import annotations

import argparse
import asyncio
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bastion.auth.jwt import Issuer, JwtVerifier, KeySet, typed_keys

ISS, AUD = "https://issuer.example", "api://bench"


def keys():
    secret = b"k" * 48
    r = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    e = ec.generate_private_key(ec.SECP256R1())
    d = ed25519.Ed25519PrivateKey.generate()
    return {
        "HS256": (secret, secret),
        "RS256": (r, r.public_key()),
        "ES256": (e, e.public_key()),
        "EdDSA": (d, d.public_key()),
    }


def token(priv, alg, i):
    now = int(time.time())
    return jwt.encode(
        {
            "iss": ISS,
            "aud": AUD,
            "sub": f"user{i}",
            "iat": now,
            "exp": now + 3600,
            "jti": str(i),
            "scope": "orders:read",
        },
        priv,
        algorithm=alg,
        headers={"kid": "k"},
    )


def rate(fn, tokens, seconds):
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for t in tokens:
            fn(t)
        n += len(tokens)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=1.0)
    args = ap.parse_args()
    print(f"{'alg':7} {'pyjwt/s':>10} {'bastion cold/s':>15} {'bastion cached/s':>17} {'cached/pyjwt':>13}")
    loop = asyncio.new_event_loop()
    for alg, (priv, pub) in keys().items():
        ks = KeySet()
        ks.add("k", typed_keys(pub, (alg,)))
        verifier = JwtVerifier([Issuer(ISS, (alg,), (AUD,), ks, None, ("exp", "iat", "sub"), 30, None, ())])
        many = [token(priv, alg, i) for i in range(2000)]
        one = [token(priv, alg, 0)]
        raw_key = pub

        def pyjwt_decode(t):
            jwt.decode(t, raw_key, algorithms=[alg], audience=AUD, issuer=ISS)

        # cold: a fresh verifier cache per pass would also work; 2000 distinct tokens > passes
        theirs = rate(pyjwt_decode, many[:200], args.seconds)
        cold_verifier = verifier

        def ours_cold(t):
            cold_verifier.cache.young.clear()
            cold_verifier.cache.old.clear()
            loop.run_until_complete(cold_verifier.verify(t))

        cold = rate(ours_cold, many[:200], args.seconds)

        async def cached_loop(n):
            v = verifier.verify
            t = one[0]
            for _ in range(n):
                await v(t)

        await_n = 200_000
        t0 = time.perf_counter()
        loop.run_until_complete(cached_loop(await_n))
        cached = await_n / (time.perf_counter() - t0)
        print(f"{alg:7} {theirs:10.0f} {cold:15.0f} {cached:17.0f} {cached / theirs:12.1f}x", flush=True)
    loop.close()


if __name__ == "__main__":
    main()
