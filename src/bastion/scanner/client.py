"""The scanner's HTTP client: one host only, a global rate (token bucket), bounded concurrency,
a timeout per request, and a record of every response (the data-exposure check reads them)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx


class OffTarget(Exception):
    """A request to another host than the target: never sent."""


@dataclass
class Resp:
    method: str
    url: str
    status: int
    headers: httpx.Headers
    body: bytes
    request_headers: dict[str, str]
    request_body: str | None
    error: str | None = None

    def json(self) -> Any:
        import orjson

        try:
            return orjson.loads(self.body)
        except Exception:
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class ScanClient:
    def __init__(
        self,
        base_url: str,
        *,
        rate: float = 10.0,
        concurrency: int = 4,
        timeout: float = 10.0,
        on_request: Any = None,
        headers: dict[str, str] | None = None,
        verify: bool = True,
    ) -> None:
        """`headers` go on every request (credentials a target needs: they are the client's defaults,
        so no recorded exchange or report carries them); `verify=False` accepts any certificate."""
        self.base = base_url.rstrip("/") + "/"
        self.host = urlsplit(base_url).netloc
        self.rate = rate
        self.timeout = timeout
        self.sem = asyncio.Semaphore(concurrency)
        self.client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, verify=verify, headers=headers)
        self._next = time.monotonic()
        self._lock = asyncio.Lock()
        self.sent: list[float] = []  # monotonic send times (the rate is checked against these)
        self.seen: list[Resp] = []
        self.on_request = on_request

    async def _slot(self) -> None:
        async with self._lock:
            now = time.monotonic()
            wait = self._next - now
            self._next = max(now, self._next) + 1.0 / self.rate
        if wait > 0:
            await asyncio.sleep(wait)

    def url(self, path: str) -> str:
        url = urljoin(self.base, path.lstrip("/")) if not path.startswith("http") else path
        if urlsplit(url).netloc != self.host:
            raise OffTarget(url)
        return url

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        record: bool = True,
    ) -> Resp:
        url = self.url(path)
        h = dict(headers or {})
        body_text: str | None = None
        if json is not None:
            import orjson

            content = orjson.dumps(json)
            h.setdefault("Content-Type", "application/json")
        if content is not None:
            body_text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        async with self.sem:
            await self._slot()
            self.sent.append(time.monotonic())
            if self.on_request:
                self.on_request()
            for _attempt in (1, 2):
                try:
                    r = await self.client.request(method, url, headers=h, params=params, content=content)
                    resp = Resp(method, str(r.url), r.status_code, r.headers, r.content, h, body_text)
                    break
                except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
                    # a kept-alive connection the server closed (after a 500, say) before reading the
                    # request: sent once more on a fresh connection, as browsers do. A reset seen as
                    # ReadError is the same race (uvicorn closes after an unhandled exception)
                    resp = Resp(method, url, 0, httpx.Headers(), b"", h, body_text, error=type(exc).__name__)
                except httpx.HTTPError as exc:
                    resp = Resp(method, url, 0, httpx.Headers(), b"", h, body_text, error=type(exc).__name__)
                    break
        if record and resp.status:
            self.seen.append(resp)
            if len(self.seen) > 2000:
                del self.seen[:500]
        return resp

    async def close(self) -> None:
        await self.client.aclose()
