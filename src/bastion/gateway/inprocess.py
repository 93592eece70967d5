"""An ASGI app served by the gateway itself (the token service), behind the same policies as an
upstream: it looks like an upstream pool to the proxy, so routing, checks, response rewriting
and the audit log work unchanged — only the hop is a function call instead of a socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bastion.http import Headers


@dataclass
class _Conf:
    preserve_host: bool = True


class InProcessResponse:
    def __init__(self, status: int, headers: Headers, chunks: list[bytes]) -> None:
        self.status = status
        self.headers = headers
        self._chunks = chunks

    async def body(self) -> AsyncIterator[bytes]:
        for c in self._chunks:
            yield c

    def whole_body(self) -> bytes:
        """The whole answer (an in-process app's is all in memory): the relay sends it as one
        message, as `UpstreamResponse.whole_body` for an answer that arrived with its head."""
        return b"".join(self._chunks)

    def release(self) -> None:
        return None


class _Calls:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def request(
        self, method: str, target: bytes, headers: Headers, body: bytes | AsyncIterator[bytes] | None
    ) -> InProcessResponse:
        path, _, query = target.partition(b"?")
        if isinstance(body, (bytes, type(None))):
            data = body or b""
        else:
            data = b"".join([c async for c in body])
        host = next((v for k, v in headers if k == b"host"), b"localhost")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path.decode("latin-1"),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": list(headers),
            "client": None,
            "server": (host.decode("latin-1"), None),
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": data, "more_body": False}
            return {"type": "http.disconnect"}

        status = 500
        out_headers: Headers = []
        chunks: list[bytes] = []

        async def send(message: dict[str, Any]) -> None:
            nonlocal status, out_headers
            if message["type"] == "http.response.start":
                status = message["status"]
                out_headers = [(k.lower(), v) for k, v in message.get("headers", [])]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        return InProcessResponse(status, out_headers, chunks)


class InProcessPool:
    """Quacks like `UpstreamPool` for `open_upstream`."""

    def __init__(self, name: str, app: Any) -> None:
        self.name = name
        self.app = app
        self.config = _Conf()
        self._calls = _Calls(app)

    def pick(self) -> tuple[bytes, bytes, _Calls]:
        return b"", b"bastion.internal", self._calls

    async def close(self) -> None:
        return None
