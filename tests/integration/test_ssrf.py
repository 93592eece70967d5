"""The SSRF guard end to end: a real gateway in front of a real upstream that really fetches the
URLs it is given (urllib, as many Python services do; REST and GraphQL on graphql-core), and an
internal listener that must never be reached. Each attack is first sent to the upstream
directly, to show it would reach the internal listener without the gateway."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from graphql import build_schema, graphql
from helpers import ThreadedUvicorn, audit_lines, raw_request, run_gateway
from upstream_app import read_body

# ----------------------------------------------------------------------------- the apps

INTERNAL_HITS: list[str] = []
SECRET = "INTERNAL-SECRET-7f3a"


async def internal_app(scope, receive, send):
    """An internal service (think Redis' HTTP twin, an admin API, the metadata endpoint)."""
    if scope["type"] != "http":
        return
    INTERNAL_HITS.append(scope["path"])
    body = SECRET.encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", str(len(body)).encode())]}
    )
    await send({"type": "http.response.body", "body": body})


def fetch_with_curl(url: str) -> dict:
    """The same with curl (its own URL parser; a value without a scheme is http)."""
    import subprocess

    done = subprocess.run(  # noqa: S603
        ["curl", "-s", "-m", "3", "--noproxy", "*", "--proto-default", "http", "--", url],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return {"exit": done.returncode, "body": done.stdout[:2000].decode("utf-8", "replace")}


def fetch(url: str) -> dict:
    """What a careless service does with a URL it is given."""
    try:
        with urllib.request.urlopen(url, timeout=3) as r:  # noqa: S310 (the point of the test)
            return {"status": r.status, "body": r.read(2000).decode("utf-8", "replace")}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return {"error": type(exc).__name__}


SDL = """
scalar URL
type Query { preview(url: String!): String, mirror(src: URL!): String, mirrors(srcs: [URL!]!): String }
type Mutation {
  importPaste(host: String!, port: Int!, path: String!): String
  addWebhook(input: WebhookInput!): String
  importFrom(spec: ImportInput!): String
}
input WebhookInput { name: String!, callbackUrl: String! }
input ImportInput { origin: URL!, tags: [String!] }
"""
schema = build_schema(SDL)


class Root:
    @staticmethod
    async def preview(info, url):
        return json.dumps(await asyncio.to_thread(fetch, url))

    @staticmethod
    async def importPaste(info, host, port, path):
        return json.dumps(await asyncio.to_thread(fetch, f"http://{host}:{port}{path}"))

    @staticmethod
    async def mirror(info, src):
        return json.dumps(await asyncio.to_thread(fetch, src))

    @staticmethod
    async def mirrors(info, srcs):
        return json.dumps([await asyncio.to_thread(fetch, s) for s in srcs])

    @staticmethod
    async def importFrom(info, spec):
        return json.dumps(await asyncio.to_thread(fetch, spec["origin"]))

    @staticmethod
    async def addWebhook(info, input):
        return json.dumps(await asyncio.to_thread(fetch, input["callbackUrl"]))


async def fetcher_app(scope, receive, send):
    """REST: POST /fetch {"url"} or {"source"} (JSON or form), GET /preview?url=, GET
    /proxy/{host}/{path}; GraphQL: POST /graphql."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    path = scope["path"]
    query = dict(urllib.parse.parse_qsl(scope["query_string"].decode()))
    ctype = dict(scope["headers"]).get(b"content-type", b"")
    if path == "/graphql":
        doc = json.loads(body) if body else {}
        text = query.get("query") or doc["query"]  # as express-graphql: a query in the URL wins
        result = await graphql(schema, text, root_value=Root, variable_values=doc.get("variables"))
        out: dict = {"data": result.data}
        if result.errors:
            out["errors"] = [e.message for e in result.errors]
    elif path == "/fetch":
        doc = json.loads(body) if ctype.startswith(b"application/json") else dict(urllib.parse.parse_qsl(body.decode()))
        target = doc.get("url") or doc.get("source") or (doc.get("profile") or {}).get("avatar_url")
        out = await asyncio.to_thread(fetch_with_curl if doc.get("client") == "curl" else fetch, target)
    elif path == "/preview":
        out = await asyncio.to_thread(fetch, query["url"])
    elif path.startswith("/proxy/"):
        host, _, rest = path[len("/proxy/") :].partition("/")
        out = await asyncio.to_thread(fetch, f"http://{urllib.parse.unquote(host)}/{rest}")
    else:
        out = {"echo": path}
    data = json.dumps(out).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})


OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "fetcher", "version": "1"},
    "paths": {
        "/fetch": {
            "post": {
                "security": [],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "source": {"type": "string", "format": "uri"},
                                    "note": {"type": "string"},
                                },
                            }
                        }
                    }
                },
                "responses": {"200": {"description": "ok"}},
            }
        }
    },
}

# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def internal():
    with ThreadedUvicorn(internal_app) as server:
        yield server


@pytest.fixture(scope="module")
def fetcher():
    with ThreadedUvicorn(fetcher_app) as server:
        yield server


def gateway_config(base_config, fetcher, tmp_path, **ssrf):
    base_config["upstreams"]["fetcher"] = {
        "urls": [fetcher.url],
        "timeouts": {"connect": 2, "read": 8, "total": 10},
    }
    (tmp_path / "fetcher.yaml").write_text(yaml.safe_dump(OPENAPI))
    base_config["policies"]["ssrf"] = ssrf
    base_config["routes"] = [
        {"path": "/graphql", "upstream": "fetcher"},
        {"path": "/spec/*", "upstream": "fetcher", "openapi": "fetcher.yaml", "base_path": "/spec"},
        {"path": "/proxy/{host}/*", "upstream": "fetcher"},
        {"path": "/*", "upstream": "fetcher"},
    ]
    return base_config


@pytest.fixture()
def gw(base_config, fetcher, tmp_path):
    with run_gateway(gateway_config(base_config, fetcher, tmp_path), tmp_path) as g:
        yield g


def post_json(port: int, path: str, doc: object, request_id: str = "") -> object:
    headers = {"Content-Type": "application/json"}
    if request_id:
        headers["X-Request-Id"] = request_id
    return raw_request(port, "POST", path, headers, json.dumps(doc).encode())


def direct(fetcher, path: str, doc: object) -> dict:
    """The same request straight to the upstream, bypassing the gateway."""
    r = raw_request(fetcher.port, "POST", path, {"Content-Type": "application/json"}, json.dumps(doc).encode())
    return r.json()


def reached_internal(answer: object) -> bool:
    return SECRET in json.dumps(answer)


# ----------------------------------------------------------------------------- tests


def spellings(port: int) -> list[str]:
    me = socket.gethostname()
    return [
        f"http://127.0.0.1:{port}/secret",
        f"http://localhost:{port}/secret",
        f"http://{me}:{port}/secret",  # a name that resolves (via /etc/hosts) to loopback
        f"http://2130706433:{port}/secret",
        f"http://0x7f.1:{port}/secret",
        f"http://0177.0.0.1:{port}/secret",
        f"http://127.1:{port}/secret",
        f"http://[::ffff:127.0.0.1]:{port}/secret",
        f"http://good.example@127.0.0.1:{port}/secret",
        f"http://LOCALHOST.:{port}/secret",
        f"http://%31%32%37.0.0.1:{port}/secret",
        f"  http://127.0.0.1:{port}/secret",
        f"http://0:{port}/secret",
    ]


def test_every_spelling_reaches_the_internal_service_directly_and_is_refused_by_the_gateway(
    gw, fetcher, internal, tmp_path
):
    reached = []
    for url in spellings(internal.port):
        if reached_internal(direct(fetcher, "/fetch", {"url": url})):
            reached.append(url)
    # the attack is real: most spellings really reach the internal listener through urllib
    assert len(reached) >= 8, reached
    before = len(INTERNAL_HITS)
    for i, url in enumerate(spellings(internal.port)):
        r = post_json(gw.port, "/fetch", {"url": url}, f"ssrf-{i}")
        assert r.status == 400, (url, r.status, r.body)
        doc = r.json()
        assert doc["type"].endswith("/ssrf-blocked") and doc["argument"] == "url", doc
        assert r.header("content-type") == "application/problem+json"
        assert f":{internal.port}" not in r.body.decode()  # the value is not echoed
    assert len(INTERNAL_HITS) == before  # nothing reached the internal service through the gateway
    line = next(x for x in audit_lines(tmp_path / "audit.log", "ssrf-0") if x["request_id"] == "ssrf-0")
    assert line["stopped_by"] == "ssrf"
    assert line["ssrf"]["argument"] == "url" and line["ssrf"]["reason"] == "loopback"


def test_curl_reads_more_spellings_and_the_gateway_refuses_them_all(gw, fetcher, internal):
    """curl as the upstream's client: schemeless host:port values, IPv6-mapped hosts."""
    port = internal.port
    values = [
        f"127.0.0.1:{port}/secret",
        f"localhost:{port}/secret",
        f"http://0x7f.1:{port}/secret",
        f"http://2130706433:{port}/secret",
        f"http://[::ffff:127.0.0.1]:{port}/secret",
        f"http://[::1]:{port}/secret",
        f"http://good.example@127.0.0.1:{port}/secret",
        f"HTTP://127.0.0.1:{port}/secret",
    ]
    reached = [v for v in values if reached_internal(direct(fetcher, "/fetch", {"url": v, "client": "curl"}))]
    assert len(reached) >= 5, reached  # curl really fetches them (::1 only where the listener has IPv6)
    before = len(INTERNAL_HITS)
    for v in values:
        r = post_json(gw.port, "/fetch", {"url": v, "client": "curl"})
        assert r.status == 400 and r.json()["argument"] == "url", (v, r.status, r.body)
    assert len(INTERNAL_HITS) == before


def test_query_form_path_and_nested_json_arguments(gw, fetcher, internal):
    url = f"http://127.0.0.1:{internal.port}/secret"
    assert reached_internal(raw_request(fetcher.port, "GET", "/preview?url=" + urllib.parse.quote(url)).json())
    before = len(INTERNAL_HITS)
    r = raw_request(gw.port, "GET", "/preview?url=" + urllib.parse.quote(url))
    assert r.status == 400 and r.json()["argument"] == "url"
    form = urllib.parse.urlencode({"url": url}).encode()
    r = raw_request(gw.port, "POST", "/fetch", {"Content-Type": "application/x-www-form-urlencoded"}, form)
    assert r.status == 400 and r.json()["argument"] == "url"
    r = post_json(gw.port, "/fetch", {"profile": {"avatar_url": url}})
    assert r.status == 400 and r.json()["argument"] == "profile.avatar_url"
    r = post_json(gw.port, "/fetch", {"items": [{"callbackUrl": "gopher://127.0.0.1:6379/_INFO"}]})
    assert r.status == 400 and r.json()["argument"] == "items.0.callbackUrl" and r.json()["reason"] == "scheme"
    assert len(INTERNAL_HITS) == before
    # a path parameter named by the route's template
    path = f"/proxy/127.0.0.1:{internal.port}/secret"
    assert reached_internal(raw_request(fetcher.port, "GET", path).json())
    before = len(INTERNAL_HITS)
    r = raw_request(gw.port, "GET", path)
    assert r.status == 400 and r.json()["argument"] == "host", r.body
    r = raw_request(gw.port, "GET", f"/proxy/2130706433:{internal.port}/secret")
    assert r.status == 400 and r.json()["argument"] == "host", r.body
    assert len(INTERNAL_HITS) == before


def test_file_and_other_schemes(gw, fetcher):
    assert "root" in json.dumps(direct(fetcher, "/fetch", {"url": "file:///etc/passwd"}))  # urllib reads files
    r = post_json(gw.port, "/fetch", {"url": "file:///etc/passwd"})
    assert r.status == 400 and r.json()["reason"] == "scheme"
    assert "root:" not in r.body.decode()


def test_graphql_arguments_and_variables(gw, fetcher, internal):
    port = internal.port
    attack = {"query": f'{{ preview(url: "http://2130706433:{port}/x") }}'}
    host_port = {"query": f'mutation {{ importPaste(host: "localhost", port: {port}, path: "/x") }}'}
    assert reached_internal(direct(fetcher, "/graphql", attack))
    assert reached_internal(direct(fetcher, "/graphql", host_port))
    before = len(INTERNAL_HITS)
    r = post_json(gw.port, "/graphql", attack)
    assert r.status == 400 and r.json()["argument"] == "preview.url", r.body
    r = post_json(gw.port, "/graphql", host_port)
    assert r.status == 400 and r.json()["argument"] == "importPaste.host", r.body
    variables = {
        "query": "mutation($in: WebhookInput!) { addWebhook(input: $in) }",
        "variables": {"in": {"name": "n", "callbackUrl": f"http://[::ffff:7f00:1]:{port}/hook"}},
    }
    r = post_json(gw.port, "/graphql", variables)
    assert r.status == 400 and r.json()["argument"] == "variables.in.callbackUrl", r.body
    in_url = "/graphql?query=" + urllib.parse.quote(f'{{ preview(url: "http://127.1:{port}/x") }}')
    assert reached_internal(
        raw_request(fetcher.port, "POST", in_url, {"Content-Type": "application/json"}, b"{}").json()
    )
    before = len(INTERNAL_HITS)
    r = raw_request(gw.port, "POST", in_url, {"Content-Type": "application/json"}, b'{"a": 1}')
    assert r.status == 400 and r.json()["argument"] == "preview.url", r.body
    aliased = {"query": f'{{ a: preview(url: "http://0x7f.0.0.1:{port}/") }}'}
    r = post_json(gw.port, "/graphql", aliased)
    assert r.status == 400 and r.json()["argument"] == "preview.url"
    assert len(INTERNAL_HITS) == before


def test_ordinary_requests_pass(gw):
    """Values that are not targets, or name no host, are forwarded untouched."""
    for doc in (
        {"note": "see http://127.0.0.1/ in the logs"},  # not a URL field by name
        {"url": "/relative/path"},
        {"url": "#section"},
        {"hostname_count": 3},
        {"enabled": True, "host": None},
    ):
        r = post_json(gw.port, "/echo", doc)
        assert r.status == 200, (doc, r.body)
    r = post_json(gw.port, "/graphql", {"query": '{ preview(url: "/local/page") }'})
    assert r.status == 200


def test_openapi_format_uri_field(gw, fetcher, internal):
    """`source` is no URL by name; the spec says `format: uri`, so it is checked on the spec's route."""
    url = f"http://127.0.0.1:{internal.port}/secret"
    assert reached_internal(direct(fetcher, "/fetch", {"source": url}))
    assert post_json(gw.port, "/fetch", {"source": url}).status == 200  # the plain route: not a target by name
    r = post_json(gw.port, "/spec/fetch", {"source": url})
    assert r.status == 400 and r.json()["argument"] == "source", r.body


def test_allowlist_and_audit_mode(base_config, fetcher, internal, tmp_path):
    """An allowlisted internal network passes (and really is fetched); audit mode forwards and logs."""
    url = f"http://127.0.0.1:{internal.port}/allowed"
    cfg = gateway_config(base_config, fetcher, tmp_path, allow_networks=["127.0.0.0/8"])
    with run_gateway(cfg, tmp_path) as g:
        r = post_json(g.port, "/fetch", {"url": url})
        assert r.status == 200 and reached_internal(r.json())
        r = post_json(g.port, "/fetch", {"url": "http://169.254.169.254/latest/meta-data/"})
        assert r.status == 400 and r.json()["reason"] == "metadata"
    audit = tmp_path / "audit.log"
    cfg = gateway_config(base_config, fetcher, tmp_path, mode="audit")
    with run_gateway(cfg, tmp_path) as g:
        r = post_json(g.port, "/fetch", {"url": url}, "ssrf-audit")
        assert r.status == 200 and reached_internal(r.json())
        line = next(x for x in audit_lines(audit, "ssrf-audit") if x["request_id"] == "ssrf-audit")
        assert line["ssrf"] == {
            "argument": "url",
            "source": "body",
            "reason": "loopback",
            "target": "127.0.0.1",
            "blocked": False,
        }


def test_config_fields_and_ignore_fields(base_config, fetcher, internal, tmp_path):
    url = f"http://127.0.0.1:{internal.port}/secret"
    cfg = gateway_config(base_config, fetcher, tmp_path, fields=["target.*.where"], ignore_fields=["url"])
    with run_gateway(cfg, tmp_path) as g:
        r = post_json(g.port, "/echo", {"target": [{"where": url}]})
        assert r.status == 400 and r.json()["argument"] == "target.0.where"
        assert post_json(g.port, "/echo", {"url": url}).status == 200


def test_config_is_validated(base_config, fetcher, tmp_path):
    from bastion.config import load_config

    for bad in ({"allow_networks": ["10.0.0.0/33"]}, {"fields": ["a..b"]}, {"schemes": ["HTTP"]}, {"mode": "x"}):
        cfg = gateway_config(base_config, fetcher, tmp_path, **bad)
        path = Path(tmp_path / "bad.yaml")
        path.write_text(yaml.safe_dump(cfg))
        with pytest.raises(Exception, match="ssrf"):
            load_config(str(path))


def test_refusals_are_counted_in_metrics(base_config, fetcher, tmp_path):
    import re

    def count(text: str, reason: str) -> float:
        m = re.search(rf'^bastion_ssrf_refused_total\{{reason="{reason}"\}} (\S+)$', text, re.M)
        return float(m.group(1)) if m else 0.0

    base_config["admin"] = {"host": "127.0.0.1", "port": 0, "token": "admin-token-" + "x" * 20}
    with run_gateway(gateway_config(base_config, fetcher, tmp_path), tmp_path) as g:
        before = raw_request(g.server.admin_port, "GET", "/metrics").body.decode()
        for url in ("http://169.254.169.254/", "http://[fd00:ec2::254]/", "gopher://x/"):
            assert post_json(g.port, "/fetch", {"url": url}).status == 400
        after = raw_request(g.server.admin_port, "GET", "/metrics").body.decode()
    assert count(after, "metadata") - count(before, "metadata") == 2
    assert count(after, "scheme") - count(before, "scheme") == 1


def test_uploads_are_not_read_but_their_query_is(base_config, fetcher, internal, tmp_path):
    big = b"\x89PNG" + b"\x00" * 100_000
    with run_gateway(gateway_config(base_config, fetcher, tmp_path, max_body=10_000), tmp_path) as g:
        r = raw_request(g.port, "POST", "/upload", {"Content-Type": "image/png"}, big)
        assert r.status == 200, r.body  # not read against the guard's max_body
        url = urllib.parse.quote(f"http://127.0.0.1:{internal.port}/")
        r = raw_request(g.port, "POST", "/upload?callback=" + url, {"Content-Type": "application/octet-stream"}, big)
        assert r.status == 400 and r.json()["argument"] == "callback"
        doc = b'{"a":"' + b"x" * 20_000 + b'"}'
        r = raw_request(g.port, "POST", "/upload", {"Content-Type": "application/json"}, doc)
        assert r.status == 413  # a JSON body over max_body cannot be checked


def test_graphql_schema_types(base_config, fetcher, internal, tmp_path):
    """Arguments, input fields, list items and variables typed `URL` in the SDL are targets
    whatever their names (`src`, `spec.origin`, `$from`)."""
    port = internal.port
    url = f"http://127.0.0.1:{port}/secret"
    ops = [
        ({"query": f'{{ mirror(src: "{url}") }}'}, "mirror.src"),
        ({"query": f'{{ mirrors(srcs: ["http://8.8.8.8/", "{url}"]) }}'}, "mirrors.srcs.1"),
        ({"query": f'mutation {{ importFrom(spec: {{origin: "{url}"}}) }}'}, "importFrom.spec.origin"),
        (
            {"query": "query($from: URL!) { mirror(src: $from) }", "variables": {"from": url}},
            "variables.from",
        ),
        (
            {
                "query": "mutation($s: ImportInput!) { importFrom(spec: $s) }",
                "variables": {"s": {"origin": url, "tags": ["a"]}},
            },
            "variables.s.origin",
        ),
    ]
    assert reached_internal(direct(fetcher, "/graphql", ops[0][0]))
    assert reached_internal(direct(fetcher, "/graphql", ops[3][0]))
    with run_gateway(gateway_config(base_config, fetcher, tmp_path), tmp_path) as g:  # names alone: missed
        assert reached_internal(post_json(g.port, "/graphql", ops[0][0]).json())
    before = len(INTERNAL_HITS)
    (tmp_path / "fetcher.graphql").write_text(SDL)
    cfg = gateway_config(base_config, fetcher, tmp_path, graphql_schema="fetcher.graphql")
    with run_gateway(cfg, tmp_path) as g:
        for doc, argument in ops:
            r = post_json(g.port, "/graphql", doc)
            assert r.status == 400 and r.json()["argument"] == argument, (doc, r.body)
        ok = {"query": 'query($t: [String!]) { importFrom(spec: {origin: "https://8.8.8.8/x", tags: $t}) }'}
        assert post_json(g.port, "/graphql", {**ok, "variables": {"t": [url]}}).status != 400  # tags: String
    assert len(INTERNAL_HITS) == before
