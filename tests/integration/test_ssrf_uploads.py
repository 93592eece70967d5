"""The SSRF guard on upload bodies: multipart text fields and JSON sent under a binary or other
non-JSON type are read like any body, through `bastion.bodies` (the one body reader).

The upstream here reads a URL where lenient servers do — a multipart form field (Flask's
`request.form`, Express's multer), a JSON body whatever its declared type (Flask's
`get_json(force=True)`), the `operations` field of a GraphQL multipart request (Apollo uploads) —
and fetches it. Generated: the spelling of the loopback target, the field's name and place among
other fields and a file part, the declared type. Before the fix every one of these reached the
internal listener."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import urllib.request
from collections.abc import Iterator
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from helpers import RunningGateway, ThreadedUvicorn, run_gateway
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

URL_NAMES = ("url", "callback", "imageUrl", "webhook_url", "endpoint")


class Sink:
    """The internal service: records every request it gets."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                sink.hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"INTERNAL")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def fields_of(content_type: str, body: bytes) -> dict[str, Any]:
    """What a lenient server reads out of a body: multipart fields, else JSON whatever the type."""
    if content_type.startswith("multipart/"):
        msg = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        out: dict[str, Any] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name and not part.get_filename():  # Go's mime/multipart: `filename=""` is a value
                out[str(name)] = part.get_payload(decode=True).decode()
        if "operations" in out:  # a GraphQL multipart request: its variables
            out.update(json.loads(out["operations"]).get("variables", {}))
        return out
    return json.loads(body)


class Fetcher(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            fields = fields_of(self.headers.get("content-type", ""), body)
            url = next(fields[n] for n in URL_NAMES if n in fields)
            result = urllib.request.urlopen(url, timeout=3).read().decode()  # noqa: S310
        except Exception as exc:
            result = f"error: {exc!r}"
        out = json.dumps({"result": result}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.server.shutdown()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    fetcher = ThreadingHTTPServer(("127.0.0.1", 0), Fetcher)
    threading.Thread(target=fetcher.serve_forever, daemon=True).start()
    config = {
        "upstreams": {"fetcher": {"urls": [f"http://127.0.0.1:{fetcher.server_address[1]}"]}},
        "policies": {"ssrf": {}},
        "routes": [{"path": "/upload", "upstream": "fetcher"}],
    }
    with run_gateway(config, tmp_path_factory.mktemp("gw")) as gw:
        yield gw
    fetcher.shutdown()


def send(gw: RunningGateway, content_type: str, body: bytes) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    conn.request("POST", "/upload", body=body, headers={"content-type": content_type})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0undary") -> tuple[str, bytes]:
    """(name, filename or None, content) parts as multipart/form-data."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + content + b"\r\n"
    return f"multipart/form-data; boundary={boundary}", out + f"--{boundary}--\r\n".encode()


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
LOOPBACK = st.sampled_from(["127.0.0.1", "localhost", "127.1", "2130706433", "[::1]", "0x7f.0.0.1"])


def assert_refused(gw: RunningGateway, sink: Sink, content_type: str, body: bytes) -> None:
    before = len(sink.hits)
    status, data = send(gw, content_type, body)
    assert len(sink.hits) == before, f"the internal listener was reached: {data!r}"
    assert status == 400 and b"ssrf-blocked" in data, data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    host=LOOPBACK,
    name=st.sampled_from(URL_NAMES),
    before=st.lists(st.sampled_from(["title", "comment", "tags"]), unique=True, max_size=2),
    file_first=st.booleans(),
    empty_filename=st.booleans(),
)
def test_multipart_text_fields_are_read(
    gateway: RunningGateway, sink: Sink, host: str, name: str, before: list[str], file_first: bool, empty_filename: bool
) -> None:
    parts: list[tuple[str, str | None, bytes]] = [(n, None, b"hello") for n in before]
    file_part = ("picture", "cat.png", PNG)
    if file_first:
        parts.insert(0, file_part)
    # `filename=""`: a file for werkzeug and busboy, a value for Go (r.FormValue)
    parts.append((name, "" if empty_filename else None, f"http://{host}:{sink.port}/multipart".encode()))
    if not file_first:
        parts.append(file_part)
    ct, body = multipart(parts)
    assert_refused(gateway, sink, ct, body)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    host=LOOPBACK,
    name=st.sampled_from(URL_NAMES),
    content_type=st.sampled_from(
        ["application/octet-stream", "image/png", "application/pdf", "text/plain", "application/x-whatever"]
    ),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32"]),
)
def test_json_under_another_type_is_read(
    gateway: RunningGateway, sink: Sink, host: str, name: str, content_type: str, encoding: str
) -> None:
    # Python's json.loads(bytes) (Flask's get_json) reads a byte-order mark and UTF-16/32 itself
    body = json.dumps({"note": "x", name: f"http://{host}:{sink.port}/typed"}).encode(encoding)
    assert_refused(gateway, sink, content_type, body)


def test_graphql_multipart_request_operations_are_read(gateway: RunningGateway, sink: Sink) -> None:
    # the GraphQL multipart request spec (file uploads): the operation is a JSON text field
    ops = {"query": "mutation ($url: String!, $f: Upload) { fetch(url: $url, file: $f) }", "variables": {"f": None}}
    ops["variables"]["url"] = f"http://127.0.0.1:{sink.port}/operations"
    ct, body = multipart(
        [("operations", None, json.dumps(ops).encode()), ("map", None, b'{"0": ["variables.f"]}'), ("0", "a.png", PNG)]
    )
    assert_refused(gateway, sink, ct, body)


def test_uploads_without_a_target_still_pass(gateway: RunningGateway, sink: Sink) -> None:
    ct, body = multipart([("title", None, b"a cat"), ("picture", "cat.png", PNG)])
    status, data = send(gateway, ct, body)
    assert status == 200, data
    status, data = send(gateway, "image/png", PNG)
    assert status == 200, data


# ---- bodies over max_body: a binary upload passes unread (its first bytes looked at, then given
# back to the proxy intact); anything that starts like JSON or a form must be read, so it is 413
async def _length_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            break
    out = json.dumps({"length": len(body), "sha": hashlib.sha256(body).hexdigest()}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with ThreadedUvicorn(_length_echo) as up:
        config = {
            "upstreams": {"echo": {"urls": [up.url]}},
            "policies": {"ssrf": {"max_body": 1000}},
            "routes": [{"path": "/upload", "upstream": "echo"}],
        }
        with run_gateway(config, tmp_path_factory.mktemp("gw")) as gw:
            yield gw


def chunked(gw: RunningGateway, content_type: str, pieces: list[bytes]) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=20)
    conn.request("POST", "/upload", body=iter(pieces), headers={"content-type": content_type}, encode_chunked=True)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=6), lengthed=st.booleans())
def test_a_large_binary_upload_passes_unread_and_whole(small: RunningGateway, sizes: list[int], lengthed: bool) -> None:
    data = (PNG * (sum(sizes) // len(PNG) + 2))[: max(sum(sizes), 1001)]
    if lengthed:
        status, body = send(small, "image/png", data)
    else:
        cuts = [sum(sizes[:i]) for i in range(len(sizes))] + [len(data)]
        status, body = chunked(small, "image/png", [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a])
    assert status == 200, body
    assert json.loads(body) == {"length": len(data), "sha": hashlib.sha256(data).hexdigest()}


@pytest.mark.parametrize("start", [b"{", b"  [", b'"', b"url=", b"\xef\xbb\xbf{"])
def test_a_large_upload_that_starts_like_json_or_a_form_is_413(small: RunningGateway, start: bytes) -> None:
    status, body = send(small, "application/octet-stream", start + b" " * 2000)
    assert status == 413, body
