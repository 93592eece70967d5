"""API7: SSRF — URL-like parameters pointed at a canary listener the scanner runs on loopback.
Only the canary is ever used as a value: never third-party or private addresses."""

from __future__ import annotations

import asyncio
import re
import secrets

from bastion.scanner.context import sample
from bastion.scanner.model import Finding

IDS = ("api7-ssrf",)
URLISH = re.compile(
    r"(url|uri|link|href|callback|webhook|redirect|image|img|src|source|target|dest|feed|preview|"
    r"fetch|endpoint|proxy)",
    re.I,
)


class Canary:
    """A one-route HTTP listener on 127.0.0.1 that remembers which tokens were fetched."""

    def __init__(self) -> None:
        self.hits: set[str] = set()
        self.server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            parts = line.decode("latin-1").split()
            if len(parts) >= 2 and parts[1].startswith("/c/"):
                self.hits.add(parts[1][3:])
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()

    def url(self, token: str) -> str:
        return f"http://127.0.0.1:{self.port}/c/{token}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def _base(op) -> dict:
    body = sample(op.body_schema) if op.body_schema else {}
    return body if isinstance(body, dict) else {}


async def run(ctx) -> list[Finding]:
    if ctx.canary is None:
        return []
    out: list[Finding] = []
    a = ctx.a
    for op in ctx.ops:
        names = [p.get("name") for p in op.params if p.get("in") == "query" and URLISH.search(str(p.get("name")))]
        fields = [k for k in ((op.body_schema or {}).get("properties") or {}) if URLISH.search(k)]
        for name in names + fields:
            token = secrets.token_hex(8)
            if name in names:
                r = await ctx.send(op, a, params={name: ctx.canary.url(token)})
            elif op.method in ("POST", "PUT", "PATCH") and (op.path_params or ctx.allow_destructive):
                r = await ctx.send(op, a, json={**_base(op), name: ctx.canary.url(token)})
            else:
                continue
            elevated = getattr(ctx, "elevated", None)
            if r.status in (401, 403) and elevated is not None:  # an account api5 raised may reach it
                token = secrets.token_hex(8)
                r = (
                    await ctx.send(op, elevated, params={name: ctx.canary.url(token)})
                    if name in names
                    else await ctx.send(op, elevated, json={**_base(op), name: ctx.canary.url(token)})
                )
            await asyncio.sleep(0.2)
            if token in ctx.canary.hits:
                out.append(
                    Finding(
                        "api7-ssrf",
                        "The server fetches a URL the client chooses",
                        "API7",
                        918,
                        "critical",
                        "certain",
                        op.method,
                        r.url.split("?")[0],
                        f"parameter {name!r}: the scanner's "
                        f"loopback canary received the server's request (HTTP {r.status} to the client)",
                        "Fetch only from an allow-list of hosts; refuse loopback, link-local and private "
                        "addresses after DNS resolution.",
                        "routes:\n  - {openapi: spec.yaml, upstream: api}   # pattern: ^https://images\\.example\\.com/",
                        request_headers=ctx.auth(a),
                    )
                )
    return out
