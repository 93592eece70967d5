"""JWT bearer verification: typed keys, an algorithm allowlist per issuer, JWKS with a guarded
refresh, strict parsing, and a cache of verified tokens.

What never decides which key verifies a token: the token's `jku`, `x5u`, `jwk` and `x5c` headers
(ignored), its `alg` alone (a key is bound to the algorithms its type allows, so an RSA public
key can never become an HMAC secret), and its `kid` beyond a lookup among keys we configured
(a `kid` no key carries falls back only to the issuer's single key of that type, when that key
was configured without a `kid`).

Issuers: a token is verified by the issuer entry its `iss` names; a token without `iss` only by
the one entry configured without `issuer` (if any). A token whose `iss` names no entry is
refused, even when an entry without `issuer` exists.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import os
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt import PyJWK

from bastion.auth.cache import ExpiringCache
from bastion.auth.errors import AuthError
from bastion.net.fetch import FetchError, fetch

log = logging.getLogger("bastion.auth")

HMAC_ALGS = ("HS256", "HS384", "HS512")
RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGS = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
SUPPORTED = (*HMAC_ALGS, *RSA_ALGS, *EC_ALGS, "EdDSA")
MIN_HMAC_SECRET = 32


def _b64d(segment: str) -> bytes:
    """base64url without padding (RFC 7515 2), canonical only: a segment whose unused low bits
    are set decodes to the same bytes as another spelling, so two strings would be one token."""
    if not segment or any(c in segment for c in "=+/ \t\n"):
        raise AuthError("malformed token")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise AuthError("malformed token") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode("ascii", "replace"):
        raise AuthError("malformed token")
    return raw


B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")


def decode_secret_base64(text: str) -> bytes:
    """An HMAC secret written in base64 or base64url, padded or not (apps print either)."""
    t = text.strip().rstrip("=")
    if not t or not set(t) <= B64_ALPHABET or len(t) % 4 == 1:
        raise ValueError("secret_base64 is not base64 or base64url")
    try:
        return base64.b64decode(t.replace("-", "+").replace("_", "/") + "=" * (-len(t) % 4), validate=True)
    except binascii.Error:
        raise ValueError("secret_base64 is not base64 or base64url") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise AuthError(f"duplicate member {k!r} in token")
        out[k] = v
    return out


def _nesting(raw: bytes) -> int:
    """The deepest bracket nesting of a JSON text (brackets inside strings count too: an
    over-estimate only refuses more)."""
    depth = deepest = 0
    for b in raw:
        if b in (0x5B, 0x7B):
            depth += 1
            deepest = max(deepest, depth)
        elif b in (0x5D, 0x7D):
            depth -= 1
    return deepest


def _no_constants(name: str) -> Any:
    raise AuthError("malformed token")  # NaN, Infinity: not JSON (RFC 8259), Python accepts them


MAX_JSON_NESTING = 64  # claims are flat in practice; deeper is refused before any parser recurses


def _json_segment(segment: str) -> dict[str, Any]:
    raw = _b64d(segment)
    if raw.count(b"[") + raw.count(b"{") > MAX_JSON_NESTING and _nesting(raw) > MAX_JSON_NESTING:
        raise AuthError("malformed token")
    try:
        value = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except AuthError:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting ~1000 deep
        raise AuthError("malformed token") from None
    if not isinstance(value, dict):
        raise AuthError("malformed token")
    return value


def algorithms_for_key(key: Any) -> tuple[str, ...]:
    """The algorithms a key's type can verify."""
    if isinstance(key, (bytes, bytearray)):
        return HMAC_ALGS
    if isinstance(key, (rsa.RSAPublicKey, rsa.RSAPrivateKey)):
        return RSA_ALGS
    if isinstance(key, (ec.EllipticCurvePublicKey, ec.EllipticCurvePrivateKey)):
        return tuple(a for a, curve in EC_ALGS.items() if key.curve.name == curve)
    if isinstance(
        key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey, ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)
    ):
        return ("EdDSA",)
    return ()


def load_pem(pem: str | bytes) -> Any:
    data = pem.encode() if isinstance(pem, str) else pem
    if b"PRIVATE KEY" in data:
        return serialization.load_pem_private_key(data, password=None).public_key()
    if b"CERTIFICATE" in data:
        from cryptography import x509

        return x509.load_pem_x509_certificate(data).public_key()
    return serialization.load_pem_public_key(data)


def typed_keys(key: Any, allowed: tuple[str, ...]) -> list[PyJWK]:
    """One PyJWK per algorithm that both the allowlist and the key's type admit."""
    out = []
    for alg in algorithms_for_key(key):
        if alg not in allowed:
            continue
        if alg in HMAC_ALGS:
            jwk = {"kty": "oct", "k": base64.urlsafe_b64encode(bytes(key)).rstrip(b"=").decode()}
        else:
            impl = pyjwt.algorithms.get_default_algorithms()[alg]
            jwk = impl.to_jwk(key, as_dict=True)
        out.append(PyJWK(jwk, algorithm=alg))
    return out


def keys_from_jwk(jwk: dict[str, Any], allowed: tuple[str, ...], *, allow_symmetric: bool) -> list[PyJWK]:
    if jwk.get("use") not in (None, "sig"):
        return []
    kty = jwk.get("kty")
    if kty == "oct" and not allow_symmetric:
        return []  # a symmetric key from a URL would be a shared secret on the wire
    candidates = [
        a
        for a in allowed
        if (kty == "oct" and a in HMAC_ALGS)
        or (kty == "RSA" and a in RSA_ALGS)
        or (kty == "EC" and a in EC_ALGS)
        or (kty == "OKP" and a == "EdDSA")
    ]
    if jwk.get("alg"):
        candidates = [a for a in candidates if a == jwk["alg"]]
    out = []
    for alg in candidates:
        try:
            k = PyJWK(jwk, algorithm=alg)
        except (pyjwt.PyJWKError, pyjwt.InvalidKeyError, ValueError, KeyError, TypeError):
            continue
        if alg in EC_ALGS and getattr(k.key, "curve", None) is not None and k.key.curve.name != EC_ALGS[alg]:
            continue
        out.append(k)
    return out


def key_type(alg: str) -> str:
    """The JWK `kty` of the keys that verify `alg`."""
    if alg in HMAC_ALGS:
        return "oct"
    if alg in RSA_ALGS:
        return "RSA"
    return "EC" if alg in EC_ALGS else "OKP"


@dataclass
class KeySet:
    by_kid: dict[str, list[PyJWK]] = field(default_factory=dict)
    unnamed: list[PyJWK] = field(default_factory=list)
    types: dict[str, int] = field(default_factory=dict)  # kty -> how many keys (not algorithms) of it

    def add(self, kid: str | None, keys: list[PyJWK]) -> None:
        if kid:
            self.by_kid.setdefault(kid, []).extend(keys)
        else:
            self.unnamed.extend(keys)
        for kty in {key_type(k.algorithm_name) for k in keys}:
            self.types[kty] = self.types.get(kty, 0) + 1

    def find(self, kid: str | None, alg: str) -> list[PyJWK]:
        pool = self.by_kid.get(kid, []) if kid else self.unnamed + [k for ks in self.by_kid.values() for k in ks]
        return [k for k in pool if k.algorithm_name == alg]

    def lone_unnamed(self, alg: str) -> list[PyJWK]:
        """For a token whose `kid` no key carries: the key configured without a `kid`, when it is
        the only key of `alg`'s type here (apps sign with one key and still name it)."""
        if self.types.get(key_type(alg)) != 1:
            return []
        return [k for k in self.unnamed if k.algorithm_name == alg]


def _fingerprint(doc: Any) -> bytes:
    """One value per key set, whatever the order of its keys or of their members."""
    keys = doc.get("keys") if isinstance(doc, dict) else None
    members = sorted(json.dumps(k, sort_keys=True) for k in keys) if isinstance(keys, list) else []
    return hashlib.blake2b("\n".join(members).encode(), digest_size=16).digest()


class JwksSource:
    """Keys from a JWKS URL: cached, refreshed on an unknown `kid` at most every
    `min_refresh` seconds, and the last good set kept while the endpoint is down. `version`
    counts the changes of the set (a refetch of the same keys is no change): the verifier empties
    its cache of verified tokens when it moves, as for `JwksFile`."""

    def __init__(
        self, url: str, allowed: tuple[str, ...], *, cache_seconds: float = 600, min_refresh: float = 30
    ) -> None:
        self.url = url
        self.allowed = allowed
        self.cache_seconds = cache_seconds
        self.min_refresh = min_refresh
        self.keys = KeySet()
        self.fetched_at = 0.0  # last success
        self.tried_at = -1e18  # last attempt
        self._lock = asyncio.Lock()
        self.fetches = 0
        self.version = 0
        self.fingerprint = b""

    async def refresh(self) -> None:
        async with self._lock:
            now = time.monotonic()
            if now - self.tried_at < self.min_refresh:
                return  # someone just tried: no stampede on the JWKS endpoint
            self.tried_at = now
            self.fetches += 1
            try:
                status, body = await fetch(self.url, timeout=5)
                if status != 200:
                    raise FetchError(f"status {status}")
                doc = json.loads(body)
                keys = KeySet()
                for jwk in doc.get("keys", []):
                    if isinstance(jwk, dict):
                        keys.add(jwk.get("kid"), keys_from_jwk(jwk, self.allowed, allow_symmetric=False))
            except (FetchError, ValueError, AttributeError) as exc:
                log.warning("JWKS %s could not be refreshed (%s); keeping the last good keys", self.url, exc)
                return
            self.keys = keys
            self.fetched_at = now
            fingerprint = _fingerprint(doc)
            if fingerprint != self.fingerprint:
                self.fingerprint = fingerprint
                self.version += 1

    async def poll(self) -> None:
        """Refetch the set when it is older than `cache_seconds` (called on every token, cached
        ones included: a key removed from the set stops its tokens within that time)."""
        if self.fetched_at == 0.0 or time.monotonic() - self.fetched_at > self.cache_seconds:
            await self.refresh()

    async def find(self, kid: str | None, alg: str) -> list[PyJWK]:
        await self.poll()
        found = self.keys.find(kid, alg)
        if not found and kid and kid not in self.keys.by_kid:
            await self.refresh()  # a rotated key: refresh (rate-limited) and look again
            found = self.keys.find(kid, alg)
        return found


def load_jwks(doc: Any, allowed: tuple[str, ...]) -> KeySet:
    """A JWKS from a local file: symmetric (`oct`) keys are allowed (the file is as private as
    the config) but must be at least MIN_HMAC_SECRET bytes, like every HMAC secret."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError("not a JWKS (a JSON object with a `keys` list)")
    keys = KeySet()
    for i, jwk in enumerate(doc["keys"]):
        if not isinstance(jwk, dict):
            raise ValueError(f"keys[{i}] is not an object")
        if jwk.get("kty") == "oct":
            try:
                secret = _b64d(str(jwk.get("k", "")))
            except AuthError:
                raise ValueError(f"keys[{i}]: `k` is not base64url") from None
            if len(secret) < MIN_HMAC_SECRET:
                raise ValueError(f"keys[{i}]: an HMAC secret must be at least {MIN_HMAC_SECRET} bytes")
        kid = jwk.get("kid")
        keys.add(kid if isinstance(kid, str) else None, keys_from_jwk(jwk, allowed, allow_symmetric=True))
    return keys


class JwksFile:
    """Keys from a JWKS file, reloaded when the file changes (its mtime, size or inode, looked at
    no more than once per `poll_seconds`, on use: no thread, no inotify dependency). A file that
    cannot be read or parsed keeps the last good keys and logs why; at startup it is an error."""

    def __init__(self, path: str, allowed: tuple[str, ...], *, poll_seconds: float = 1.0, clock=time.monotonic) -> None:
        self.path = path
        self.allowed = allowed
        self.poll_seconds = poll_seconds
        self.clock = clock
        self.stamp = self._stamp()
        self.keys = self._load()
        self.checked = clock()
        self.reloads = 0
        self.version = 0  # moves with every reload (as JwksSource.version)

    def _stamp(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _load(self) -> KeySet:
        with open(self.path, "rb") as f:
            return load_jwks(json.loads(f.read()), self.allowed)

    def poll(self) -> bool:
        """Reload if the file changed; True when the keys did."""
        now = self.clock()
        if now - self.checked < self.poll_seconds:
            return False
        self.checked = now
        try:
            stamp = self._stamp()
        except OSError as exc:
            log.warning("JWKS file %s cannot be read (%s); keeping the last good keys", self.path, exc)
            return False
        if stamp == self.stamp:
            return False
        self.stamp = stamp  # a bad version is reported once, not on every poll
        try:
            keys = self._load()
        except (OSError, ValueError) as exc:
            log.warning("JWKS file %s could not be loaded (%s); keeping the last good keys", self.path, exc)
            return False
        self.keys = keys
        self.reloads += 1
        self.version += 1
        log.info("JWKS file %s reloaded", self.path)
        return True

    async def find(self, kid: str | None, alg: str) -> list[PyJWK]:
        return self.keys.find(kid, alg)


# Registered claims (RFC 7519 4.1) have types; a token whose claims have others is refused before
# anything compares or converts them, so no hostile value (a string `exp`, 1e400, 10**400, an
# object `sub`) reaches arithmetic, a cache or a header. Times are NumericDates: a finite number
# between the epoch and the end of year 9999.
MAX_NUMERIC_DATE = 253402300799
_STRING_CLAIMS = ("iss", "sub", "jti", "typ")
# `typ` values that name tokens which are never access tokens (case-insensitive; Keycloak spells
# them "Refresh", "Offline", "ID", "Logout"): refused unless the issuer lists accepted values.
NOT_ACCESS_TOKENS = frozenset({"refresh", "offline", "id", "logout"})


def check_claim_types(claims: dict[str, Any]) -> None:
    for name in ("exp", "nbf", "iat"):
        if name in claims:
            v = claims[name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 <= v <= MAX_NUMERIC_DATE):
                raise AuthError(f"malformed claim {name!r}")
    for name in _STRING_CLAIMS:
        if name in claims:
            v = claims[name]
            if not isinstance(v, str) or not _is_text(v):
                raise AuthError(f"malformed claim {name!r}")
    if claims.get("sub") == "":
        raise AuthError("malformed claim 'sub'")
    aud = claims.get("aud")
    if (
        aud is not None
        and not isinstance(aud, str)
        and not (isinstance(aud, list) and all(isinstance(a, str) for a in aud))
    ):
        raise AuthError("malformed claim 'aud'")


def _is_text(value: str) -> bool:
    """Encodable text: JSON allows lone surrogates (`"\ud800"`), which no header, log line or
    database column can carry."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def token_kind(typ: str) -> str:
    """A `typ` value reduced to its letters, case-folded and NFKC-normalised, so `Refresh`,
    `refresh `, `refresh\u0000`, `REFRESH` in full-width letters and `refresh_token` all read
    `refresh...`."""
    return "".join(c for c in unicodedata.normalize("NFKC", typ).casefold() if c.isalnum() or c == "+")


def typ_media_type(value: str) -> str:
    """RFC 7515 4.1.9: `typ` may omit the `application/` prefix; compared case-insensitively."""
    v = value.strip().lower()
    return v if "/" in v else "application/" + v


@dataclass
class Issuer:
    issuer: str | None  # None: the entry for tokens that carry no `iss`
    algorithms: tuple[str, ...]
    audiences: tuple[str, ...]
    static: KeySet
    jwks: JwksSource | JwksFile | None
    required: tuple[str, ...]
    leeway: float
    max_age: float | None
    typ_values: tuple[str, ...]  # accepted values of the `typ` claim; empty: any access-token kind
    header_typ: tuple[str, ...] = ()  # accepted header `typ` media types (e.g. at+jwt); empty: any


@dataclass
class Verified:
    claims: dict[str, Any]
    issuer: str | None
    expires: float


class JwtVerifier:
    def __init__(
        self, issuers: list[Issuer], *, max_token_bytes: int = 8192, cache_entries: int = 10_000, clock=time.time
    ) -> None:
        self.issuers: dict[str | None, Issuer] = {i.issuer: i for i in issuers}
        self.files = [i.jwks for i in issuers if isinstance(i.jwks, JwksFile)]
        self.urls = [i.jwks for i in issuers if isinstance(i.jwks, JwksSource)]
        self.max_token_bytes = max_token_bytes
        self.cache = ExpiringCache(cache_entries, clock=clock)
        self.clock = clock
        self.key_versions = self._key_versions()

    def _key_versions(self) -> tuple[int, ...]:
        return tuple(f.version for f in self.files) + tuple(u.version for u in self.urls)

    async def _fresh_keys(self) -> None:
        """Look at the key sources (a file's stat at most once a second, a URL's set when older
        than its cache time) and empty the cache when a set changed: a key that left a set must
        not leave its tokens accepted from the cache, whichever source it came from."""
        for f in self.files:
            f.poll()
        for u in self.urls:
            await u.poll()
        versions = self._key_versions()
        if versions != self.key_versions:
            self.key_versions = versions
            self.cache.clear()

    async def verify(self, token: str) -> Verified:
        if len(token) > self.max_token_bytes:
            raise AuthError("token too large")
        if self.files or self.urls:
            await self._fresh_keys()
        digest = hashlib.blake2b(token.encode("latin-1", "replace"), digest_size=16).digest()
        hit = self.cache.get(digest)
        if hit is not None:
            nbf = hit.claims.get("nbf")
            if nbf is None or nbf <= self.clock() + self.issuers[hit.issuer].leeway:
                return hit
        verified = await self._verify(token)
        if self._key_versions() == self.key_versions:
            self.cache.put(digest, verified, verified.expires)
        else:  # a set changed while this token was checked (an unknown kid refetched it)
            self.key_versions = self._key_versions()
            self.cache.clear()
        return verified

    async def _verify(self, token: str) -> Verified:
        """Structure and header first (nothing is trusted before the signature), then the key,
        PyJWT's verification, and the claims PyJWT does not judge (typ, iat, max_age)."""
        header, payload, alg = _parse_unverified(token)
        check_claim_types(payload)
        iss = payload.get("iss")  # a string when present (check_claim_types)
        issuer = self.issuers.get(iss)  # no `iss`: the entry configured without `issuer`, if any
        if issuer is None:
            raise AuthError("unknown issuer" if iss is not None else "token has no issuer")
        htyp = header.get("typ")
        if issuer.header_typ and (htyp is None or typ_media_type(htyp) not in issuer.header_typ):
            raise AuthError("wrong token type")
        if alg not in issuer.algorithms:
            raise AuthError("algorithm not allowed")
        keys = await _keys_for(issuer, header.get("kid"), alg)
        claims = _decode(token, keys, alg, issuer)
        now = self.clock()
        _check_token_type(claims, issuer)
        iat = claims.get("iat")
        if iat is not None and not isinstance(iat, (int, float)):
            raise AuthError("malformed token")
        if issuer.max_age is not None:
            if iat is None or now - iat > issuer.max_age + issuer.leeway:
                raise AuthError("token too old")
        exp = claims.get("exp")
        expires = float(exp) if isinstance(exp, (int, float)) else now + 60
        return Verified(claims, issuer.issuer, expires)


def _parse_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The header and payload of a well-formed compact JWS, and its (supported) algorithm."""
    parts = token.split(".")
    if len(parts) != 3:
        raise AuthError("malformed token")
    header = _json_segment(parts[0])
    payload = _json_segment(parts[1])
    if not parts[2]:
        raise AuthError("missing signature")
    _b64d(parts[2])
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in SUPPORTED:
        raise AuthError("algorithm not allowed")
    if "crit" in header or "b64" in header:
        # RFC 7797's unencoded payloads would make PyJWT verify other bytes than the claims read here
        raise AuthError("unsupported critical header parameters")
    htyp = header.get("typ")
    if htyp is not None and not isinstance(htyp, str):
        raise AuthError("malformed token")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AuthError("malformed token")
    return header, payload, alg


async def _keys_for(issuer: Issuer, kid: str | None, alg: str) -> list[Any]:
    """The issuer's keys that may have signed it: static by kid, then the JWKS, then the lone
    key without a kid of that type (only when the JWKS has none of the type)."""
    keys = issuer.static.find(kid, alg)
    if not keys and issuer.jwks is not None:
        keys = await issuer.jwks.find(kid, alg)
    if not keys and kid is not None and (issuer.jwks is None or not issuer.jwks.keys.types.get(key_type(alg))):
        keys = issuer.static.lone_unnamed(alg)
    if not keys:
        raise AuthError("no key for this token")
    return list(keys)


def _decode(token: str, keys: list[Any], alg: str, issuer: Issuer) -> dict[str, Any]:
    """PyJWT's verification with each candidate key; a clear AuthError for every refusal."""
    claims = None
    last: Exception | None = None
    for key in keys:
        try:
            claims = pyjwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=list(issuer.audiences) or None,
                issuer=issuer.issuer,
                leeway=issuer.leeway,
                options={"require": list(issuer.required), "verify_aud": bool(issuer.audiences)},
            )
            break
        except pyjwt.InvalidSignatureError as exc:
            last = exc
            continue
        except pyjwt.ExpiredSignatureError:
            raise AuthError("token expired") from None
        except pyjwt.ImmatureSignatureError:
            raise AuthError("token not yet valid") from None
        except pyjwt.InvalidAudienceError:
            raise AuthError("wrong audience") from None
        except pyjwt.InvalidIssuerError:
            raise AuthError("wrong issuer") from None
        except pyjwt.MissingRequiredClaimError as exc:
            raise AuthError(f"missing claim {exc.claim}") from None
        except pyjwt.InvalidTokenError as exc:
            raise AuthError(f"invalid token ({type(exc).__name__})") from None
    if claims is None:
        raise AuthError("bad signature") from last
    return claims


def _check_token_type(claims: dict[str, Any], issuer: Issuer) -> None:
    """The `typ` claim: one the issuer lists, else never an ID/refresh/other non-access token."""
    typ = claims.get("typ")
    folded = typ.lower() if isinstance(typ, str) else ""  # absent: "" (an issuer may list it)
    if issuer.typ_values:
        if folded not in issuer.typ_values:
            raise AuthError("wrong token type")
    elif (
        isinstance(typ, str)
        and any(token_kind(typ).startswith(k) for k in NOT_ACCESS_TOKENS if k != "id")
        or isinstance(typ, str)
        and token_kind(typ) in ("id", "idtoken")
    ):
        raise AuthError("wrong token type")
