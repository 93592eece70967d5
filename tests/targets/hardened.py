"""The hardened twin: the same vulnerable API behind `bastion serve` with a sensible config."""

from __future__ import annotations

import time
from pathlib import Path

import jwt

SECRET = "k" * 16 + "hardened-twin-signing-key-0123456789"  # not in any wordlist; ≥ 32 bytes
ISSUER = "https://id.example.test"
SPEC = Path(__file__).with_name("hardened-openapi.yaml")


def token(sub: str, role: str = "user") -> str:
    now = int(time.time())
    return jwt.encode(
        {"iss": ISSUER, "sub": sub, "iat": now, "exp": now + 3600, "role": role}, SECRET, algorithm="HS256"
    )


def config(upstream_url: str, audit: str) -> dict:
    return {
        "upstreams": {"app": {"urls": [upstream_url]}},
        "policies": {
            "audit": {"output": audit},
            "body_limit": {"max_bytes": 65536},
            "cors": {"allow_origins": ["https://app.example.com"], "allow_credentials": True},
            "rate_limit": {
                "limits": [{"rate": "20/second", "key": ["ip", "user"]}],
                "login_paths": ["/api/v2/login"],
                "login_limits": ["5/minute"],
            },
            "response_filter": {},
            "auth": {
                "forward_credentials": False,
                "schemes": {
                    "bearer": {
                        "type": "jwt",
                        "issuers": [
                            {
                                "issuer": ISSUER,
                                "algorithms": ["HS256"],
                                "keys": [{"secret": SECRET}],
                                "required_claims": ["exp", "iat", "sub"],
                            }
                        ],
                    }
                },
            },
        },
        "routes": [
            {"openapi": str(SPEC), "upstream": "app"},
            {
                "path": "/graphql",
                "methods": ["GET", "POST"],
                "upstream": "app",
                "policies": {
                    "graphql": {"introspection": False, "limits": {"max_depth": 6, "max_aliases": 10, "max_batch": 1}}
                },
            },
        ],
    }
