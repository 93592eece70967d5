"""bench/tokens: logins/s, refreshes/s and issued tokens/s of the token service, beside the
floor each one sits on, measured in the same run: argon2id verify/s with the same parameters
(logins), PyJWT RS256 encode/s (issuing), on SQLite in a temporary directory.

    .venv/bin/python bench/tokens.py [--seconds 2] [--database sqlite:///...|postgresql://...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import jwt
from argon2 import PasswordHasher, Type
from cryptography.hazmat.primitives.asymmetric import rsa

from bastion.tokens.app import TokenApp
from bastion.tokens.config import TokenServiceConfig

KEK = "ZmDfcTF7_60GrrY167zsiPd67pEvs0aGOv2oasOM1Pg="
PASSWORD = "Correct-horse-9!"


def rate(fn, seconds: float, threads: int = 1) -> float:
    deadline = time.perf_counter() + seconds
    counts = [0] * threads

    def worker(i: int) -> None:
        while time.perf_counter() < deadline:
            fn()
            counts[i] += 1

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(worker, range(threads)))
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--database", default=None)
    ap.add_argument("--time-cost", type=int, default=3)
    ap.add_argument("--memory-kib", type=int, default=65536)
    ap.add_argument("--parallelism", type=int, default=2)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    db = args.database or f"sqlite:///{tmp}/bench.db"
    cfg = TokenServiceConfig(
        database=db,
        issuer="https://bench/auth",
        audience=["api"],
        key_encryption_key=KEK,
        argon2={"time_cost": args.time_cost, "memory_kib": args.memory_kib, "parallelism": args.parallelism},
    )
    app = TokenApp(cfg)
    svc = app.service
    name = "u" + uuid.uuid4().hex[:10]
    svc.register(name, f"{name}@example.com", PASSWORD)

    ph = PasswordHasher(
        time_cost=args.time_cost, memory_cost=args.memory_kib, parallelism=args.parallelism, type=Type.ID
    )
    stored = ph.hash(PASSWORD)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {
        "iss": "https://bench/auth",
        "aud": "api",
        "sub": "x",
        "jti": "j",
        "typ": "access",
        "iat": 1,
        "exp": 2**31,
        "scope": "a b",
        "role": "user",
    }

    print(
        f"argon2id time_cost={args.time_cost} memory={args.memory_kib} KiB parallelism={args.parallelism}; "
        f"database {db.split('://')[0]}; RS256 2048-bit"
    )
    rows = []
    for threads in (1, 2):
        floor = rate(lambda: ph.verify(stored, PASSWORD), args.seconds, threads)
        mine = rate(lambda: svc.login(name, PASSWORD), args.seconds, threads)
        rows.append((f"logins/s ({threads} thread{'s' if threads > 1 else ''})", mine, "argon2 verify/s", floor))
    refresh_tokens = [svc.login(name, PASSWORD).refresh_token]

    def one_refresh() -> None:
        doc = svc.refresh(refresh_tokens[-1])
        refresh_tokens.append(doc.refresh_token)

    floor = rate(lambda: jwt.encode(claims, key, algorithm="RS256"), args.seconds)
    rows.append(("refreshes/s (2 tokens + 3 writes)", rate(one_refresh, args.seconds), "RS256 encode/s", floor))
    user = svc.user(svc.authenticate(name, PASSWORD).id)
    rows.append(
        (
            "issued access tokens/s",
            rate(lambda: svc._access(user.id, "user", "a b", None, time.time()), args.seconds),
            "RS256 encode/s",
            floor,
        )
    )
    print(f"{'what':38} {'bastion':>10}   {'baseline':20} {'':>10} {'ratio':>6}")
    for label, a, blabel, b in rows:
        print(f"{label:38} {a:10,.0f}   {blabel:20} {b:10,.0f} {a / b:6.2f}")


if __name__ == "__main__":
    main()
