"""Offline JWT secret cracking (`bastion scan`, check api2-weak-secret): candidates/s of
bastion.scanner.secrets_list.crack beside the naive loop (PyJWT decode per candidate) and beside
hmac.new + base64 per candidate (the scanner's former loop), on the same candidates, same run.

    .venv/bin/python bench/scan_crack.py [--n 50000]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import time

import jwt

from bastion.scanner.secrets_list import candidates, crack


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    n = ap.parse_args().n
    words = candidates()[:n]
    token = jwt.encode({"sub": "1"}, "not-a-candidate-" + "z" * 32, algorithm="HS256")
    h, p, s = token.split(".")

    t = time.perf_counter()
    secret, tried = crack(token, words)  # the extra list first: n candidates, then the shipped list
    full = time.perf_counter() - t
    rate = tried / full

    t = time.perf_counter()
    for w in words:
        if (
            base64.urlsafe_b64encode(hmac.new(w, f"{h}.{p}".encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
            == s
        ):
            break
    old = n / (time.perf_counter() - t)

    m = min(n, 20000)
    t = time.perf_counter()
    for w in words[:m]:
        try:
            jwt.decode(token, w, algorithms=["HS256"])
            break
        except jwt.InvalidSignatureError:
            pass
    naive = m / (time.perf_counter() - t)
    print(f"shipped list: {len(candidates())} candidates; full pass {full:.2f} s")
    print(f"crack():            {rate:12,.0f} candidates/s")
    print(f"hmac.new + base64:  {old:12,.0f} candidates/s   ratio {rate / old:.2f}x")
    print(f"PyJWT decode loop:  {naive:12,.0f} candidates/s   ratio {rate / naive:.2f}x")


if __name__ == "__main__":
    main()
