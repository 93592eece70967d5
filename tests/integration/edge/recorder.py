"""A recording upstream and a lenient reader, shared by the edge fuzzers and bench/edge_corpus.py.

The recorder is hand-written on raw asyncio on purpose: every HTTP library (h11, httptools,
uvicorn) refuses or normalises exactly the malformed bytes these tests look for, so it would hide
them. It keeps each request's head as received (request line and header lines split on CRLF
only), so a bare CR, LF, NUL or a folded line that a gateway let through is visible, and an
injected CRLF shows up as an extra header line or a second request on the connection.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from urllib.parse import unquote_to_bytes

from helpers import STARTUP_SECONDS

CANARY = b"zinj"  # every injected header/request in the generators is named with this
REWRITE_HEADERS = frozenset(
    {
        b"x-original-url",
        b"x-rewrite-url",
        b"x-override-url",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
    }
)
# Beyond the list: headers other servers also route, authorize or pick the client address
# or host by, which only the edge may set: path rewrites (Envoy, Azure, IIS ARR), Next.js internal
# routing (x-middleware-subrequest is CVE-2025-29927, x-now-route-matches CVE-2024-46982), and
# client-address / host aliases that IP allowlists and URL builders trust.
REWRITE_HEADERS_EXTENDED = frozenset(
    {
        b"x-envoy-original-path",
        b"x-ms-original-url",
        b"x-original-path",
        b"x-rewrite-path",
        b"x-request-uri",
        b"x-invoke-path",
        b"x-matched-path",
        b"x-middleware-subrequest",
        b"x-now-route-matches",
        b"x-client-ip",
        b"true-client-ip",
        b"cf-connecting-ip",
        b"fastly-client-ip",
        b"x-cluster-client-ip",
        b"x-custom-ip-authorization",
        b"x-originating-ip",
        b"x-remote-ip",
        b"x-remote-addr",
        b"x-host",
        b"x-forwarded-server",
        b"x-original-host",
    }
)
_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


@dataclass
class Recorded:
    port: int
    head: bytes
    request_line: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    folded: bool = False  # a header line started with SP/HT (obs-fold forwarded)
    malformed: bool = False  # a header line without ':'

    def named(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k.lower() == name]


def parse_head(port: int, head: bytes) -> Recorded:
    lines = head.split(b"\r\n")
    line = lines[0]
    parts = line.split(b" ")
    target = parts[1] if len(parts) >= 3 else b""
    rec = Recorded(port, head, line, target)
    for raw in lines[1:]:
        if raw[:1] in (b" ", b"\t"):
            rec.folded = True
        name, sep, value = raw.partition(b":")
        if not sep:
            rec.malformed = True
        rec.headers.append((name, value.strip(b" \t")))
    return rec


def control_chars(data: bytes, htab: bool = False) -> list[int]:
    """C0 controls and DEL in a request line, header name or (OWS-stripped) value. A horizontal
    tab inside a value is field-content (RFC 9110 5.5) and passes unless `htab` is set."""
    return [b for b in data if (b < 0x20 and (b != 0x09 or htab)) or b == 0x7F]


class Recorder:
    """One asyncio server in a thread, listening on `n` ports; every request is recorded."""

    def __init__(self, n: int = 1) -> None:
        self.n = n
        self.ports: list[int] = []
        self.records: list[Recorded] = []
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Recorder:
        self.thread.start()
        if not self.ready.wait(STARTUP_SECONDS):
            raise RuntimeError("recorder did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def take(self, settle: float = 0.015) -> list[Recorded]:
        """The requests recorded since the last take (waits until none arrived for `settle`)."""
        last = -1
        while True:
            with self.lock:
                count = len(self.records)
            if count == last:
                break
            last = count
            time.sleep(settle)
        with self.lock:
            out, self.records = self.records, []
        return out

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        servers = []
        for _ in range(self.n):
            srv = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, limit=4 << 20))
            servers.append(srv)
            self.ports.append(srv.sockets[0].getsockname()[1])
        self.ready.set()
        try:
            self.loop.run_forever()
        finally:
            for srv in servers:
                srv.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = writer.get_extra_info("sockname")[1]
        try:
            while True:
                try:
                    # idle pooled connections stay (a POST on one being closed would be a 502)
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 600)
                except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                rec = parse_head(port, head[:-4])
                with self.lock:
                    self.records.append(rec)
                if not await self._skip_body(reader, rec):
                    return
                writer.write(_ANSWER)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _skip_body(reader: asyncio.StreamReader, rec: Recorded) -> bool:
        te = b",".join(rec.named(b"transfer-encoding")).lower()
        if b"chunked" in te:
            while True:
                size_line = await reader.readuntil(b"\r\n")
                try:
                    size = int(size_line.split(b";")[0].strip(), 16)
                except ValueError:
                    return False
                await reader.readexactly(size + 2) if size else None
                if not size:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    return True
        cl = rec.named(b"content-length")
        if cl:
            try:
                await reader.readexactly(int(cl[0]))
            except ValueError:
                return False
        return True


# --- the lenient reader -------------------------------------------------------------------------

_IIS_U = re.compile(rb"%u([0-9A-Fa-f]{4})")
_NTFS_STREAM = re.compile(r":{1,2}\$[a-z_]*$")


def _decode(data: bytes, extended: bool) -> bytes:
    if extended:  # IIS: %uXXXX is a UTF-16 code unit
        data = _IIS_U.sub(lambda m: chr(int(m.group(1), 16)).encode("utf-8", "surrogatepass"), data)
    return unquote_to_bytes(data.replace(b"\\", b"/")).replace(b"\\", b"/")


def _ascii_fold(text: str) -> str:
    """What ASCII-folding readers make of Unicode: compatibility decomposition, combining marks
    and invisible format characters dropped (`à` -> `a`, `ｆ` -> `f`, zero-width space gone)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if unicodedata.category(ch) not in ("Mn", "Cf"))


def lenient_path(target: bytes, extended: bool = False) -> str:
    """The path as a lenient server would read it: query cut, `\\` as `/`, percent-decoded twice,
    `;params` stripped (before and after decoding), trailing dots/spaces/tabs stripped from each
    segment, case-folded, empty segments collapsed and dot segments resolved (never above root).

    `extended` adds readings of other plausible servers, beyond the issue's list: IIS `%uXXXX`
    escapes (in both decodings), ASCII folding of Unicode (NFKD, accents and format characters
    dropped, `ß` -> `ss`), any trailing Unicode white space or C1 control stripped (`.strip()`,
    .NET `Trim()`), and an NTFS stream suffix (`::$DATA`, `::$INDEX_ALLOCATION`) dropped."""
    if target.lower().startswith((b"http://", b"https://")):
        rest = target.split(b"//", 1)[1]
        target = b"/" + rest.split(b"/", 1)[1] if b"/" in rest else b"/"
    path = target.split(b"?", 1)[0].split(b"#", 1)[0]
    path = b"/".join(seg.split(b";", 1)[0] for seg in path.split(b"/"))  # Tomcat: ; before decoding
    twice = _decode(_decode(path, extended), extended)
    text = twice.split(b"\x00", 1)[0].decode("utf-8", "replace").casefold()
    if extended:
        text = _ascii_fold(text).casefold()
    out: list[str] = []
    for seg in text.split("/"):
        seg = seg.split(";", 1)[0]
        if extended:
            seg = _NTFS_STREAM.sub("", seg)
            seg = "".join(ch for ch in seg.rstrip() if not 0x80 <= ord(ch) <= 0x9F).rstrip()
        seg = seg.rstrip(" \t")
        if seg not in (".", ".."):
            seg = seg.rstrip(". \t")
        if seg == "..":
            if out:
                out.pop()
        elif seg not in ("", "."):
            out.append(seg)
    return "/" + "/".join(out)


def lenient_route(target: bytes, prefixes: dict[str, str], extended: bool = False) -> str:
    """Which of `prefixes` (first segment -> route name, "" = the catch-all) a lenient server
    would give this target to."""
    first = lenient_path(target, extended).split("/")[1]
    return prefixes.get(first, prefixes[""])
