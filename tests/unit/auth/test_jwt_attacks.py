"""Every attack here must be refused; each is its own named test."""

import asyncio
import hashlib
import hmac
import json

import jwt
import pytest

from bastion.auth.errors import AuthError
from bastion.auth.jwt import Issuer, JwtVerifier, KeySet, load_pem, typed_keys

from .keys import AUD, EC, ED, ISS, RSA, RSA_OTHER, SECRET, b64, claims, pem_public, sign

ALL = ("RS256", "PS256", "ES256", "EdDSA", "HS256")


def verifier(
    algorithms=("RS256",), *, required=("exp", "iat", "sub"), max_age=None, typ=(), hmac_secret=None, leeway=5
):
    keys = KeySet()
    keys.add("rsa1", typed_keys(load_pem(pem_public(RSA)), tuple(algorithms)))
    keys.add("ec1", typed_keys(load_pem(pem_public(EC)), tuple(algorithms)))
    keys.add("ed1", typed_keys(load_pem(pem_public(ED)), tuple(algorithms)))
    if hmac_secret is not None:
        keys.add("hs1", typed_keys(hmac_secret.encode(), tuple(algorithms)))
    issuer = Issuer(ISS, tuple(algorithms), (AUD,), keys, None, tuple(required), leeway, max_age, tuple(typ))
    return JwtVerifier([issuer])


def verify(v, token):
    return asyncio.run(v.verify(token))


def refused(v, token, why=None):
    with pytest.raises(AuthError) as exc:
        verify(v, token)
    if why:
        assert why in exc.value.reason
    return exc.value.reason


# ---- the baseline: good tokens pass ----------------------------------------------------------


@pytest.mark.parametrize(
    "alg,key,kid", [("RS256", RSA, "rsa1"), ("PS256", RSA, "rsa1"), ("ES256", EC, "ec1"), ("EdDSA", ED, "ed1")]
)
def test_valid_tokens_are_accepted(alg, key, kid):
    v = verifier(ALL)
    out = verify(v, sign(key, alg, {"kid": kid}))
    assert out.claims["sub"] == "alice"


def test_valid_hmac_token_is_accepted():
    v = verifier(("HS256",), hmac_secret=SECRET)
    assert verify(v, sign(SECRET, "HS256", {"kid": "hs1"})).claims["sub"] == "alice"


# ---- the attack suite ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_casing(alg):
    token = f"{b64({'alg': alg, 'typ': 'JWT', 'kid': 'rsa1'})}.{b64(claims())}."
    refused(verifier(ALL), token)
    token_with_sig = token + "AAAA"
    refused(verifier(ALL), token_with_sig)


def test_missing_signature():
    good = sign(RSA)
    refused(verifier(), good.rsplit(".", 1)[0] + ".", "missing signature")


def test_signature_of_another_key():
    refused(verifier(), sign(RSA_OTHER), "bad signature")


def test_rs256_to_hs256_confusion_with_the_public_key_as_secret():
    public_pem = pem_public(RSA).encode()
    header = b64({"alg": "HS256", "typ": "JWT", "kid": "rsa1"})
    body = b64(claims())
    sig = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
    token = f"{header}.{body}.{b64(sig)}"
    refused(verifier(("RS256",)), token, "algorithm not allowed")
    # even an issuer that allows both: the RSA key is typed and never becomes an HMAC secret
    refused(verifier(("RS256", "HS256")), token, "no key")


def test_empty_hmac_secret():
    header = b64({"alg": "HS256", "typ": "JWT", "kid": "hs1"})
    body = b64(claims())
    sig = hmac.new(b"", f"{header}.{body}".encode(), hashlib.sha256).digest()
    refused(verifier(("HS256",), hmac_secret=SECRET), f"{header}.{body}.{b64(sig)}", "bad signature")


def test_empty_hmac_secret_is_refused_in_config():
    from pydantic import ValidationError

    from bastion.policies.auth import JwtKeyConfig

    for weak in ("", "short"):
        with pytest.raises(ValidationError):
            JwtKeyConfig(secret=weak)


def test_ecdsa_psychic_signature_r_s_zero():
    header = b64({"alg": "ES256", "typ": "JWT", "kid": "ec1"})
    token = f"{header}.{b64(claims())}.{b64(bytes(64))}"
    refused(verifier(("ES256",)), token)


@pytest.mark.parametrize(
    "kid", ["../../../../../dev/null", "/etc/passwd", "' OR '1'='1' --", "rsa1' --", "rsa1\x00", "*", ""]
)
def test_kid_injection(kid):
    token = jwt.encode(claims(), RSA_OTHER, algorithm="RS256", headers={"kid": kid})
    refused(verifier(), token)


def test_jku_pointing_elsewhere():
    token = jwt.encode(
        claims(), RSA_OTHER, algorithm="RS256", headers={"kid": "attacker", "jku": "https://evil.example/jwks.json"}
    )
    refused(verifier(), token, "no key")
    token = jwt.encode(
        claims(), RSA_OTHER, algorithm="RS256", headers={"kid": "rsa1", "jku": "https://evil.example/jwks.json"}
    )
    refused(verifier(), token, "bad signature")


def test_x5u_pointing_elsewhere():
    token = jwt.encode(
        claims(), RSA_OTHER, algorithm="RS256", headers={"kid": "rsa1", "x5u": "https://evil.example/cert.pem"}
    )
    refused(verifier(), token, "bad signature")


def test_embedded_jwk():
    attacker = jwt.algorithms.RSAAlgorithm.to_jwk(RSA_OTHER.public_key(), as_dict=True)
    token = jwt.encode(claims(), RSA_OTHER, algorithm="RS256", headers={"kid": "rsa1", "jwk": attacker})
    refused(verifier(), token, "bad signature")
    token = jwt.encode(claims(), RSA_OTHER, algorithm="RS256", headers={"jwk": attacker})
    refused(verifier(), token, "bad signature")


def test_unknown_crit():
    token = jwt.encode(claims(), RSA, algorithm="RS256", headers={"kid": "rsa1", "crit": ["exp-ext"], "exp-ext": 1})
    refused(verifier(), token, "critical")


def test_expired():
    refused(verifier(), sign(RSA, exp=1_000_000, iat=999_000), "expired")


def test_not_yet_valid():
    import time

    refused(verifier(), sign(RSA, nbf=int(time.time()) + 3600), "not yet valid")


def test_wrong_audience():
    refused(verifier(), sign(RSA, aud="api://someone-else"), "audience")


def test_wrong_or_unknown_issuer():
    refused(verifier(), sign(RSA, iss="https://evil.example"), "issuer")
    refused(verifier(), sign(RSA, iss=None), "issuer")


def test_refresh_token_as_access_token():
    refused(verifier(), sign(RSA, typ="refresh"), "token type")
    strict = verifier(typ=("access",))
    refused(strict, sign(RSA, typ=None), "token type")
    assert verify(strict, sign(RSA, typ="access")).claims["typ"] == "access"


def test_token_of_100_kb():
    refused(verifier(), sign(RSA, padding="x" * 100_000), "too large")


def test_non_json_header():
    good = sign(RSA)
    _, body, sig = good.split(".")
    refused(verifier(), f"{b64(b'not json at all')}.{body}.{sig}", "malformed")
    refused(verifier(), f"{b64(b'[1,2,3]')}.{body}.{sig}", "malformed")


def test_bad_base64():
    good = sign(RSA)
    h, body, sig = good.split(".")
    for bad in (f"{h}!.{body}.{sig}", f"{h}.{body}=.{sig}", f"{h}.{body}.{sig}+/", f"{h}.{body}", "a.b.c.d"):
        refused(verifier(), bad)


def test_duplicate_claims():
    header = b64({"alg": "RS256", "typ": "JWT", "kid": "rsa1"})
    body = json.dumps(claims())[:-1] + ', "sub": "admin"}'
    signing_input = f"{header}.{b64(body.encode())}"
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    sig = RSA.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    refused(verifier(), f"{signing_input}.{b64(sig)}", "duplicate")


def test_missing_required_claim():
    refused(verifier(), sign(RSA, exp=None), "missing claim exp")


def test_too_old():
    import time

    refused(verifier(max_age=60), sign(RSA, iat=int(time.time()) - 3600), "too old")


def test_cached_token_is_still_bounded_by_expiry():
    import time as t

    v = verifier(leeway=0)
    token = sign(RSA, exp=int(t.time()) + 1)
    verify(v, token)
    verify(v, token)  # from the cache
    t.sleep(2.05)
    refused(v, token, "expired")  # the cache never serves a token past its exp
