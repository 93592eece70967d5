"""Offline cracking of HMAC-signed JWTs (HS256/384/512) against the shipped candidate list
(data/jwt-secrets.txt.gz, built by scripts/build_jwt_wordlist.py; ~370k candidates).

The loop is `hmac.digest` (OpenSSL's one-shot HMAC, no Python object per candidate) compared
with the token's raw signature bytes: no base64 per candidate. bench/scan_crack.py measures it.

After the list, every string of 1 to 6 digits (1,111,110 candidates, generated, not stored): a
secret made "random" as a PIN is (`random.choices(digits, k=6)`) is in no word list, and the
whole space takes ~10 s here, in a thread beside the scan."""

from __future__ import annotations

import base64
import gzip
import hmac
from functools import lru_cache
from importlib import resources

DIGESTS = {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}


@lru_cache(maxsize=1)
def candidates() -> tuple[bytes, ...]:
    data = resources.files("bastion.scanner").joinpath("data/jwt-secrets.txt.gz").read_bytes()
    return tuple(w for w in gzip.decompress(data).split(b"\n") if w)


def numeric(max_digits: int = 6):
    """Every decimal string of 1..max_digits digits, shortest first (leading zeros included)."""
    for n in range(1, max_digits + 1):
        fmt = f"%0{n}d".encode()
        for i in range(10**n):
            yield fmt % i


def crack(token: str, extra: tuple[bytes, ...] = ()) -> tuple[str | None, int]:
    """The secret that signs `token`, if it is a candidate; and how many candidates were tried."""
    try:
        h, p, s = token.split(".")
        import orjson

        alg = orjson.loads(base64.urlsafe_b64decode(h + "=" * (-len(h) % 4))).get("alg")
        sig = base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
    except Exception:
        return None, 0
    digest = DIGESTS.get(str(alg))
    if digest is None:
        return None, 0
    msg = f"{h}.{p}".encode()
    tried = 0
    mac = hmac.digest
    for words in (extra, candidates(), numeric()):
        for w in words:
            if mac(w, msg, digest) == sig:
                return w.decode("utf-8", "replace"), tried + 1
            tried += 1
    return None, tried
