"""The CRS files are loaded without their sections above the paranoia level (policies/waf.py,
`_above_level_removed`): at levels 1-3 every request of an attack and benign table matches
exactly the rules, and gets exactly the verdict, it gets with every file loaded whole."""

from __future__ import annotations

import glob
import os
from types import SimpleNamespace

import pytest

from bastion.http import Request
from bastion.pipeline import Context
from bastion.policies import waf as waf_module
from bastion.policies.waf import CRS_RULES, Waf, WafConfig

QUERIES = [
    b"q=meeting+notes&page=2",
    b"q=1%27+union+select+password+from+users--",
    b"q=%3Cscript%3Ealert(1)%3C/script%3E",
    b"file=../../../../etc/passwd",
    b"cmd=%3Bcat+/etc/passwd",
    b"x=%3C%3Fphp+system(%27id%27)%3B+%3F%3E",
    b"u=http://10.0.0.1/evil.txt%3F",
    b"p=java.lang.Runtime.getRuntime().exec(%27id%27)",
    b"s=require(%27child_process%27).exec(%27id%27)",
    b"name=o%27brien&title=Tom+%26+Jerry",
]
HEADERS = [
    [(b"host", b"api.example.com"), (b"user-agent", b"Mozilla/5.0"), (b"accept", b"*/*")],
    [(b"host", b"api.example.com"), (b"user-agent", b"sqlmap/1.4.7")],
    [(b"host", b"api.example.com"), (b"referer", b"javascript:alert(document.cookie)")],
]


def _req(query: bytes, headers: list[tuple[bytes, bytes]]) -> Request:
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    return Request(
        method="GET",
        path="/api/items",
        query=query,
        headers=headers,
        client_ip=None,
        peer_ip=None,
        peer_trusted=False,
        scheme="http",
        host="api.example.com",
        receive=receive,
    )


def _verdicts(policy: Waf) -> list[tuple[list[int], int | None]]:
    out = []
    for headers in HEADERS:
        for query in QUERIES:
            req = _req(query, headers)
            uri = policy._uri(req, [], drop_graphql=False)
            matched, it = policy._transaction(req, Context(), b"", None, None, uri, False)
            out.append((sorted({rid for rid, _ in matched}), it.status if it is not None else None))
    return out


@pytest.mark.parametrize("level", [1, 2, 3])
def test_same_rules_match_with_the_sections_above_the_level_removed(level, monkeypatch):
    files = sorted(glob.glob(os.path.join(CRS_RULES, "REQUEST-9[1-4]*.conf")))
    trimmed = [f for f in files if waf_module._above_level_removed(f, level) is not None]
    assert len(trimmed) >= 14  # the attack files (911-944, 949) are all trimmed, so this tests something
    env = SimpleNamespace(config_dir=".")
    config = WafConfig(paranoia_level=level, mode="detect")
    fast = _verdicts(Waf(config, env))
    monkeypatch.setattr(waf_module, "_above_level_removed", lambda path, level: None)
    whole = _verdicts(Waf(config, env))
    assert fast == whole
    hit = {rid // 1000 for rules, _ in whole for rid in rules}
    assert {913, 930, 932, 933, 941, 942, 944} <= hit  # the table reaches the rules of many files
    assert whole[0] == ([], None)  # the benign GET matches nothing


def test_level_four_loads_every_file_whole():
    files = sorted(glob.glob(os.path.join(CRS_RULES, "REQUEST-9*.conf")))
    assert all(waf_module._above_level_removed(f, 4) is None for f in files)
