"""The auth policy reads each scheme's credential once per request: the ambiguity check and the
authentication decide on the same extraction."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from bastion.auth.apikeys import hash_key
from bastion.http import Request
from bastion.pipeline import Context, PolicyEnv
from bastion.policies.auth import Auth, AuthConfig
from tests.unit.auth.keys import AUD, ISS, SECRET

KEY = "bk_test_" + "K" * 43


async def _receive():
    return {"type": "http.request", "body": b""}


def request(headers):
    ip = ipaddress.ip_address("192.0.2.1")
    return Request(
        method="GET",
        path="/x",
        query=b"",
        headers=list(headers),
        client_ip=ip,
        peer_ip=ip,
        peer_trusted=False,
        scheme="http",
        host="h",
        receive=_receive,
        route_name="r",
    )


def auth_policy(require):
    config = {
        "schemes": {
            "bearer": {
                "type": "jwt",
                "issuers": [{"issuer": ISS, "audiences": [AUD], "algorithms": ["HS256"], "keys": [{"secret": SECRET}]}],
            },
            "key": {"type": "api_key", "keys": [{"id": "k1", "owner": "o", "hash": hash_key(KEY), "scopes": ["read"]}]},
        },
        "require": require,
    }
    return Auth(AuthConfig.model_validate(config), PolicyEnv())


@pytest.mark.parametrize(
    ("headers", "require", "status"),
    [
        ([(b"x-api-key", KEY.encode())], [{"key": ["read"]}], None),
        ([(b"authorization", b"Bearer " + KEY.encode())], [{"key": ["read"]}], None),
        ([(b"authorization", b"Bearer a.b.c"), (b"x-api-key", KEY.encode())], [{"key": []}, {"bearer": []}], 400),
        ([], [{"key": []}], 401),
    ],
)
def test_each_scheme_extracts_once(headers, require, status):
    policy = auth_policy(require)
    calls: dict[str, int] = {}
    for name, scheme in policy.schemes.items():
        original = scheme.extract

        def counted(req, allow_query, _name=name, _original=original):
            calls[_name] = calls.get(_name, 0) + 1
            return _original(req, allow_query)

        scheme.extract = counted  # type: ignore[method-assign]  # a counting wrapper around the real one
    resp = asyncio.run(policy.on_request(request(headers), Context()))
    assert (None if resp is None else resp.status) == status
    assert calls == {"bearer": 1, "key": 1}
