"""The lifecycle against a controlled clock: the same version is deprecated, then gone."""

import asyncio
import ipaddress
from datetime import UTC, datetime

from bastion.http import Request, Response
from bastion.pipeline import Context, PolicyEnv
from bastion.policies.versioning import Versioning, VersioningConfig

SUNSET = datetime(2027, 6, 1, tzinfo=UTC)


async def _receive():
    return {"type": "http.request", "body": b""}


def request(path):
    ip = ipaddress.ip_address("192.0.2.1")
    return Request("GET", path, b"", [], ip, ip, False, "https", "h", _receive)


def test_deprecated_until_the_sunset_then_gone():
    p = Versioning(
        VersioningConfig(
            versions=[
                {
                    "name": "v1",
                    "status": "deprecated",
                    "sunset": SUNSET,
                    "deprecated_at": datetime(2027, 1, 1, tzinfo=UTC),
                    "successor": "https://api.example.com/v2",
                }
            ]
        ),
        PolicyEnv(),
    )
    p.clock = lambda: SUNSET.timestamp() - 1
    ctx = Context()
    assert asyncio.run(p.on_request(request("/v1/x"), ctx)) is None
    resp = Response(200)
    asyncio.run(p.on_response(request("/v1/x"), resp, ctx))
    assert resp.get_header(b"sunset") == b"Tue, 01 Jun 2027 00:00:00 GMT"
    assert resp.get_header(b"deprecation") == b"@1798761600"
    p.clock = lambda: SUNSET.timestamp()
    gone = asyncio.run(p.on_request(request("/v1/x"), Context()))
    assert gone is not None and gone.status == 410
    assert b"https://api.example.com/v2" in gone.body
