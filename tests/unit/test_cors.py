"""Origin matching for the CORS policy."""

import pytest
from pydantic import ValidationError

from bastion.pipeline import PolicyEnv
from bastion.policies.cors import Cors, CorsConfig, canonical_origin


def cors(**kw):
    return Cors(CorsConfig(**kw), PolicyEnv())


P = cors(allow_origins=["https://app.example.com", "https://*.example.com", "http://localhost:3000"])


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com",
        "https://APP.example.com",
        "https://app.example.com:443",
        "https://a.example.com",
        "https://a-b.example.com",
        "http://localhost:3000",
    ],
)
def test_allowed(origin):
    assert P.allowed(origin)


@pytest.mark.parametrize(
    "origin",
    [
        "https://app.example.com.evil.com",
        "https://evilexample.com",
        "https://example.com",
        "https://a.b.example.com.evil.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://x.example.com.",
        "https://app.example.com/",
        "https://app.example.com@evil.com",
        "https://evil.com#.example.com",
        "https://evil.com?.example.com",
        "null",
        "",
        "https://a_b.example.com",
        "http://localhost:3001",
        "https://app%2eexample.com",
        "javascript://app.example.com",
    ],
)
def test_refused(origin):
    assert not P.allowed(origin)


def test_null_only_when_listed():
    assert cors(allow_origins=["null"]).allowed("null")
    assert not cors(allow_origins=["*"]).allowed("null")


def test_wildcard_with_credentials_is_a_config_error():
    with pytest.raises(ValidationError, match="allow_credentials"):
        CorsConfig(allow_origins=["*"], allow_credentials=True)


@pytest.mark.parametrize(
    "bad",
    [
        "https://*",
        "https://*.com",
        "https://a*.example.com",
        "example.com",
        "https://example.com/path",
        "ftp://x.example.com",
    ],
)
def test_bad_patterns_refused_at_load(bad):
    with pytest.raises(ValidationError):
        CorsConfig(allow_origins=[bad])


def test_canonical_origin():
    assert canonical_origin("HTTPS://Example.COM:443") == "https://example.com"
    assert canonical_origin("http://[::1]:8080") == "http://[::1]:8080"
    assert canonical_origin("https://example.com/x") is None
