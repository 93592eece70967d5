"""Red team, session 4, area `ssrf`: spellings and placements that reached a loopback listener
through the SSRF guard, each a real reach (an upstream that fetches with urllib and a listener
that records hits), now refused."""

from __future__ import annotations

import http.client
import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import pytest
from graphql_pastes_app import app as pastes_app
from helpers import RunningGateway, ThreadedUvicorn, run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


class Sink:
    """A loopback listener that records every request it gets (the internal service)."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sink.hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"INTERNAL-SECRET")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Fetcher(BaseHTTPRequestHandler):
    """An upstream that fetches the JSON body's `url` with urllib.request (the vulnerability)."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            # as Express's qs reads `?url[0]=x` (an array, which fetch() turns into "x")
            qs = [v for k, v in parse_qsl(urlsplit(self.path).query) if re.fullmatch(r"url(\[[0-9]*\])*", k)]
            doc = json.loads(body) if body else {}
            if "host" in doc:  # as a Node upstream builds `http://${host}:${port}/`
                host = doc["host"]
                host = int(host) if isinstance(host, float) and host.is_integer() else host  # String(n)
                doc["url"] = f"http://{host}:{doc['port']}/js"
            url = qs[0] if qs else doc["url"]
            result = urllib.request.urlopen(url, timeout=3).read().decode()  # noqa: S310
        except Exception as exc:
            result = f"error: {exc!r}"
        out = json.dumps({"result": result}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_OPTIONS = do_DELETE = do_POST

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.server.shutdown()


@pytest.fixture(scope="module")
def gateway(sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    fetcher = ThreadingHTTPServer(("127.0.0.1", 0), Fetcher)
    threading.Thread(target=fetcher.serve_forever, daemon=True).start()
    with ThreadedUvicorn(pastes_app) as gql:
        config = {
            "upstreams": {
                "fetcher": {"urls": [f"http://127.0.0.1:{fetcher.server_address[1]}"]},
                "gql": {"urls": [gql.url]},
            },
            "policies": {"ssrf": {}},
            "routes": [{"path": "/fetch", "upstream": "fetcher"}, {"path": "/graphql", "upstream": "gql"}],
        }
        with run_gateway(config, tmp_path_factory.mktemp("gw")) as gw:
            yield gw
    fetcher.shutdown()


def post(gw: RunningGateway, path: str, doc: Any) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    conn.request("POST", path, body=json.dumps(doc).encode(), headers={"content-type": "application/json"})
    resp = conn.getresponse()
    data = json.loads(resp.read() or b"{}")
    conn.close()
    return resp.status, data


def assert_refused(gw: RunningGateway, sink: Sink, path: str, doc: Any) -> None:
    before = len(sink.hits)
    status, data = post(gw, path, doc)
    assert len(sink.hits) == before, f"the internal listener was reached: {data}"
    assert status == 400 and data.get("type", "").endswith("/ssrf-blocked"), data


def test_the_fetcher_does_reach_the_listener(gateway: RunningGateway, sink: Sink) -> None:
    """The rig works: a public-looking value the guard lets through is fetched for real (the
    listener's own URL with the guard's check bypassed is what the tests below must not do)."""
    before = len(sink.hits)
    urllib.request.urlopen(f"<URL:http://127.0.0.1:{sink.port}/direct>", timeout=3).read()  # noqa: S310
    assert len(sink.hits) == before + 1


# --- finding: Unicode white space and urllib's `<URL:...>` wrapper around a URL --------------

WRAPPED = [
    "<http://127.0.0.1:{p}/angle>",
    "<URL:http://127.0.0.1:{p}/url-prefix>",
    "\u3000http://127.0.0.1:{p}/ideographic-space",
    "\xa0http://127.0.0.1:{p}/nbsp",
    "\u2003http://127.0.0.1:{p}/em-space",
    "\x85http://127.0.0.1:{p}/nel",
    "\u2028 <URL: http://localhost:{p}/line-separator> \u3000",
]


@pytest.mark.parametrize("template", WRAPPED)
def test_wrapped_urls_are_refused(gateway: RunningGateway, sink: Sink, template: str) -> None:
    assert_refused(gateway, sink, "/fetch", {"url": template.format(p=sink.port)})


_UNICODE_SPACE = st.sampled_from([chr(c) for c in range(0x10000) if chr(c).isspace()])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lead=st.text(_UNICODE_SPACE, max_size=3),
    trail=st.text(_UNICODE_SPACE, max_size=3),
    wrap=st.sampled_from(["{}", "<{}>", "<URL:{}>", "URL:{}", "< {} >"]),
    host=st.sampled_from(["127.0.0.1", "localhost", "127.1", "2130706433", "[::1]", "0x7f.0.0.1"]),
)
def test_generated_wrappers_never_reach_loopback(
    gateway: RunningGateway, sink: Sink, lead: str, trail: str, wrap: str, host: str
) -> None:
    """Invariant: whatever urllib would strip around a loopback URL, the guard refuses it and
    the listener is never reached."""
    url = lead + wrap.format(f"http://{host}:{sink.port}/gen") + trail
    assert_refused(gateway, sink, "/fetch", {"url": url})


# --- finding: a GraphQL variable named by the client, bound to a target argument -------------

IMPORT = 'mutation($%s: String!) { importPaste(host: $%s, port: %d, path: "/v") }'


@pytest.mark.parametrize("var", ["h", "x", "notAnAddress", "id"])
def test_variable_bound_to_a_target_argument_is_checked(gateway: RunningGateway, sink: Sink, var: str) -> None:
    doc = {"query": IMPORT % (var, var, sink.port), "variables": {var: "127.0.0.1"}}
    assert_refused(gateway, sink, "/graphql", doc)


def test_variable_default_bound_to_a_target_argument_is_checked(gateway: RunningGateway, sink: Sink) -> None:
    query = 'mutation($h: String! = "127.0.0.1") { importPaste(host: $h, port: %d, path: "/d") }' % sink.port
    assert_refused(gateway, sink, "/graphql", {"query": query})


def test_variables_as_a_json_text_bound_to_a_target_argument(gateway: RunningGateway, sink: Sink) -> None:
    doc = {"query": IMPORT % ("a", "a", sink.port), "variables": json.dumps({"a": "localhost"})}
    assert_refused(gateway, sink, "/graphql", doc)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    var=st.from_regex(r"[_A-Za-z][_0-9A-Za-z]{0,12}", fullmatch=True),
    host=st.sampled_from(["127.0.0.1", "localhost", "0177.0.0.1", "127.1", "0"]),
)
def test_generated_variable_names_never_hide_a_target(gateway: RunningGateway, sink: Sink, var: str, host: str) -> None:
    doc = {"query": IMPORT % (var, var, sink.port), "variables": {var: host}}
    assert_refused(gateway, sink, "/graphql", doc)


# --- finding: `\u{...}` escapes (GraphQL 2021, graphql-core 3.3) made the document unreadable ----


@pytest.mark.parametrize("host", [r"\u{31}27.0.0.1", r"\u{6c}ocalhost", r"\u{0000006C}\u006Fcalhost"])
def test_braced_unicode_escapes_are_decoded(gateway: RunningGateway, sink: Sink, host: str) -> None:
    query = 'mutation { importPaste(host: "%s", port: %d, path: "/u") }' % (host, sink.port)
    assert_refused(gateway, sink, "/graphql", {"query": query})


def test_braced_unicode_escapes_read_as_graphql_core_reads_them() -> None:
    from graphql import parse as core_parse

    from bastion.graphql.arguments import graphql_arguments

    for text in [r"\u{31}27.0.0.1", r"a\u{1F600}b", r"\\u{41}", r"\u{27} or 1=1"]:
        doc = '{ f(x: "%s") }' % text
        core = core_parse(doc).definitions[0].selection_set.selections[0].arguments[0].value.value  # type: ignore[attr-defined]
        assert graphql_arguments(doc) == [("f.x", core)]


# --- finding: bodies the guard did not read but the upstream does ------------------------------


def send(gw: RunningGateway, method: str, body: bytes, content_type: str = "application/json") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    conn.request(method, "/fetch", body=body, headers={"content-type": content_type})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


@pytest.mark.parametrize(
    "extra",
    [b'"n": NaN', b'"n": -Infinity', b'"n": "\\ud800"', b'"n": [Infinity, 1]'],
    ids=["nan", "infinity", "lone-surrogate", "infinity-in-array"],
)
def test_json_that_only_python_reads_is_still_checked(gateway: RunningGateway, sink: Sink, extra: bytes) -> None:
    """orjson refuses these bodies, Python's json (the fetcher's, Flask's) reads them."""
    body = b'{"url": "http://127.0.0.1:%d/py-json", %s}' % (sink.port, extra)
    before = len(sink.hits)
    status, data = send(gateway, "POST", body)
    assert len(sink.hits) == before, data
    assert status == 400 and b"ssrf-blocked" in data, data


@pytest.mark.parametrize("method", ["GET", "OPTIONS", "DELETE"])
def test_a_body_on_any_method_is_checked(gateway: RunningGateway, sink: Sink, method: str) -> None:
    """A GET (or OPTIONS) with a body is forwarded with it, and the upstream reads it."""
    body = json.dumps({"url": f"http://127.0.0.1:{sink.port}/{method}"}).encode()
    before = len(sink.hits)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
    conn.request(method, "/fetch", body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert len(sink.hits) == before, data
    assert resp.status == 400 and b"ssrf-blocked" in data, data


def test_variables_text_only_python_reads_is_still_checked(gateway: RunningGateway, sink: Sink) -> None:
    """`variables` as a JSON text with NaN: graphene-django json.loads it, orjson does not."""
    doc = {"query": IMPORT % ("h", "h", sink.port), "variables": '{"h": "127.0.0.1", "n": NaN}'}
    assert_refused(gateway, sink, "/graphql", doc)


# --- WAF: the GraphQL reading of arguments ----------------------------------------------------

SQLI = "x' union select password,1,1,1,1,1,1,1,1 from users--"
PASTES = "query($f: String) { pastes(filter: $f) { id title content } }"


@pytest.fixture(scope="module")
def waf_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with ThreadedUvicorn(pastes_app) as gql:
        config = {
            "upstreams": {"gql": {"urls": [gql.url]}},
            "policies": {"waf": {}},
            "routes": [{"path": "/graphql", "upstream": "gql"}],
        }
        with run_gateway(config, tmp_path_factory.mktemp("waf")) as gw:
            yield gw


def raw_post(gw: RunningGateway, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    conn.request("POST", "/graphql", body=body, headers={"content-type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


@pytest.mark.parametrize(
    "body",
    [
        json.dumps({"query": '{ pastes(filter: "\\ud800") { id } }'}).encode(),
        b'{"query": "%s", "variables": {"f": "\\ud800"}}' % PASTES.encode(),
        b'{"query": "%s", "variables": {"f": "\\udc00 x"}, "operationName": "\\ud800"}' % PASTES.encode(),
    ],
    ids=["literal", "variable", "operation-name"],
)
def test_a_lone_surrogate_is_no_500(waf_gateway: RunningGateway, body: bytes) -> None:
    status, data = raw_post(waf_gateway, body)
    assert status < 500, data


def test_variables_text_with_nan_is_inspected(waf_gateway: RunningGateway) -> None:
    """Every character escaped, in a variables text orjson refuses (NaN) and Python reads."""
    escaped = "".join(f"\\u{ord(c):04x}" for c in SQLI)
    body = json.dumps({"query": PASTES, "variables": '{"f": "%s", "n": NaN}' % escaped}).encode()
    status, data = raw_post(waf_gateway, body)
    assert status == 403, data


# --- finding: GraphQL over WebSocket was not checked at all -----------------------------------


def _ws_app() -> Any:
    """graphql-transport-ws over graphql-core: `subscription { feed(url: ...) }` fetches the URL."""
    import asyncio

    from graphql import GraphQLArgument, GraphQLField, GraphQLNonNull, GraphQLObjectType, GraphQLSchema, subscribe
    from graphql import GraphQLString as Str
    from graphql import parse as core_parse
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def feed(_root: Any, _info: Any, url: str) -> Any:
        def get() -> str:
            try:
                return urllib.request.urlopen(url, timeout=3).read().decode()  # noqa: S310
            except Exception as exc:
                return f"error: {exc!r}"

        yield await asyncio.to_thread(get)

    schema = GraphQLSchema(
        query=GraphQLObjectType("Query", {"ok": GraphQLField(Str, resolve=lambda *_: "ok")}),
        subscription=GraphQLObjectType(
            "Subscription",
            {
                "feed": GraphQLField(
                    Str,
                    args={"url": GraphQLArgument(GraphQLNonNull(Str))},
                    subscribe=feed,
                    resolve=lambda v, _i, **_: v,
                )
            },
        ),
    )

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept(subprotocol="graphql-transport-ws")
        try:
            while True:
                msg = await ws.receive_json()
                if msg.get("type") == "connection_init":
                    await ws.send_json({"type": "connection_ack"})
                elif msg.get("type") == "subscribe":
                    p = msg["payload"]
                    result: Any = subscribe(schema, core_parse(p["query"]), variable_values=p.get("variables"))
                    if hasattr(result, "__await__"):
                        result = await result
                    if hasattr(result, "__aiter__"):
                        async for item in result:
                            await ws.send_json({"id": msg["id"], "type": "next", "payload": item.formatted})
                    await ws.send_json({"id": msg["id"], "type": "complete"})
        except WebSocketDisconnect:
            pass

    return Starlette(routes=[WebSocketRoute("/graphql", endpoint)])


@pytest.mark.parametrize(
    "payload",
    [
        {"query": 'subscription { feed(url: "http://127.0.0.1:{p}/ws-literal") }'},
        {"query": "subscription($u: String!) { feed(url: $u) }", "variables": {"u": "http://127.0.0.1:{p}/ws-var"}},
    ],
    ids=["literal", "variable"],
)
def test_graphql_over_websocket_is_checked(
    sink: Sink, tmp_path_factory: pytest.TempPathFactory, payload: dict[str, Any]
) -> None:
    import asyncio

    from websockets.asyncio.client import connect

    payload = json.loads(json.dumps(payload).replace("{p}", str(sink.port)))

    async def talk(port: int) -> list[dict[str, Any]]:
        async with connect(f"ws://127.0.0.1:{port}/graphql", subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(await ws.recv())["type"] == "connection_ack"
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            out = []
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
                out.append(msg)
                if msg.get("type") in ("complete", "error"):
                    return out

    with ThreadedUvicorn(_ws_app()) as up:
        config = {"upstreams": {"ws": {"urls": [up.url]}}, "routes": [{"path": "/graphql", "upstream": "ws"}]}
        config["policies"] = {"ssrf": {}}
        with run_gateway(config, tmp_path_factory.mktemp("ws")) as gw:
            before = len(sink.hits)
            messages = asyncio.run(talk(gw.port))
    assert len(sink.hits) == before, messages
    assert messages[-1]["type"] == "error", messages


# --- finding: a qs-style array name (`url[0]`) hid a target from the name rule ----------------


@pytest.mark.parametrize("name", ["url[0]", "url[]", "url[0][1]"])
def test_bracketed_array_names_are_targets(gateway: RunningGateway, sink: Sink, name: str) -> None:
    before = len(sink.hits)
    conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=20)
    target = quote(f"http://127.0.0.1:{sink.port}/qs", safe="")
    conn.request("GET", f"/fetch?{quote(name)}={target}")
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert len(sink.hits) == before, data
    assert resp.status == 400 and b"ssrf-blocked" in data, data


# --- finding (fixed in session 5): JSON declared as a binary type was not read --------------------
# (multipart text fields and more types: tests/integration/test_ssrf_uploads.py)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/octet-stream", b'{"url": "http://127.0.0.1:%d/octet"}'),
        ("image/png", b'{"url": "http://127.0.0.1:%d/png"}'),
    ],
)
def test_json_declared_as_a_binary_type(gateway: RunningGateway, sink: Sink, content_type: str, body: bytes) -> None:
    """The fetcher reads the body as JSON whatever its type (Flask's get_json(force=True))."""
    before = len(sink.hits)
    status, data = send(gateway, "POST", body % sink.port, content_type)
    assert len(sink.hits) == before, data


# --- finding: a bare service name in a `host` argument passed as "a guess" ---------------------


@pytest.mark.parametrize("host", ["redis", "internal-db", "payments.svc.cluster"])
def test_a_host_argument_that_does_not_resolve_is_refused(gateway: RunningGateway, host: str) -> None:
    """`importPaste(host: "redis")` is `http://redis:6379/`, which docs/ssrf.md refuses because the
    upstream's resolver (Docker, Kubernetes, split DNS) may know the name the gateway does not;
    as a `host` argument it was read as a mere guess (maybe a relative path) and let through."""
    query = 'mutation { importPaste(host: "%s", port: 6379, path: "/") }' % host
    status, data = post(gateway, "/graphql", {"query": query})
    assert status == 400 and data.get("reason") == "unresolvable", data


# --- finding: an integral float is the integer for JavaScript (`String(2130706433.0)`) ---------


@pytest.mark.parametrize("number", [b"2130706433.0", b"2.130706433e9", b"2130706433.000", b"167772161e0"])
def test_integral_floats_are_checked_as_integers(gateway: RunningGateway, sink: Sink, number: bytes) -> None:
    body = b'{"host": %s, "port": %d}' % (number, sink.port)
    before = len(sink.hits)
    status, data = send(gateway, "POST", body)
    assert len(sink.hits) == before, data
    assert status == 400 and b"ssrf-blocked" in data, data


# --- finding: a control character in a string made the document unreadable to the gateway ----
# (graphql-core 3.3 accepts any character in a string but `"`, `\` and line ends; JSON does not)


def test_a_tab_in_a_string_does_not_hide_a_bound_variable(gateway: RunningGateway, sink: Sink) -> None:
    query = 'mutation($h: String!) { importPaste(host: $h, port: %d, path: "/\tx") }' % sink.port
    assert_refused(gateway, sink, "/graphql", {"query": query, "variables": {"h": "127.0.0.1"}})


def test_a_variable_in_an_unreadable_document_is_bound_by_its_argument(gateway: RunningGateway, sink: Sink) -> None:
    """A document the gateway's parser refuses (here a type-system definition beside it) still
    binds `host: $h`, by name."""
    query = 'mutation($h: String!) { importPaste(host: $h, port: %d, path: "/u") } scalar X' % sink.port
    status, data = post(gateway, "/graphql", {"query": query, "variables": {"h": "127.0.0.1"}})
    assert status == 400 and data.get("argument") == "host", data


def test_control_characters_in_strings_read_as_graphql_core_reads_them() -> None:
    from graphql import parse as core_parse

    from bastion.graphql.arguments import graphql_arguments

    for text in ["a\tb", "a\x00b", "a\x1fb", "a\x7fb"]:
        doc = '{ f(x: "%s") }' % text
        core = core_parse(doc).definitions[0].selection_set.selections[0].arguments[0].value.value  # type: ignore[attr-defined]
        assert graphql_arguments(doc) == [("f.x", core)]
