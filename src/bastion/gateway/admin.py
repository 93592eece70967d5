"""The admin listener: health, readiness, Prometheus metrics, and a token-protected admin API.
It is its own listener (loopback by default); the public listeners never serve these paths."""

from __future__ import annotations

import hmac
import os
import time
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bastion.http import problem
from bastion.live import LIVE
from bastion.observability import POLICY_COLLECTOR, REGISTRY


async def _reply(send, status: int, body: bytes, ctype: bytes = b"application/json") -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                (b"x-content-type-options", b"nosniff"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _json_body(receive, limit: int = 65536) -> Any:
    data = b""
    while True:
        m = await receive()
        data += m.get("body", b"")
        if len(data) > limit:
            raise ValueError("body too large")
        if not m.get("more_body"):
            break
    return orjson.loads(data) if data else {}


class AdminApp:
    def __init__(self, server: Any, token: str | None) -> None:
        self.server = server
        self.token = token.encode() if token else None
        POLICY_COLLECTOR.state = lambda: server.gateway.state
        POLICY_COLLECTOR.server = server

    def _authorised(self, scope: dict[str, Any]) -> bool:
        if self.token is None:
            return False  # no token configured: the admin API is off (health and metrics stay)
        for k, v in scope["headers"]:
            if k == b"authorization" and v[:7].lower() == b"bearer ":
                return hmac.compare_digest(v[7:].strip(), self.token)
        return False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            return await _reply(send, 200, b'{"status":"alive"}')
        if path == "/readyz":
            ready, checks = await self._ready()
            return await _reply(send, 200 if ready else 503, orjson.dumps({"ready": ready, "checks": checks}))
        if path == "/metrics":
            return await _reply(send, 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST.encode())
        if path in ("/dashboard", "/dashboard/", "/dashboard/app.js", "/dashboard/style.css") and method == "GET":
            return await self._asset(send, path)
        if not path.startswith("/admin/"):
            return await _reply(
                send, 404, problem(404, "not-found", "no such admin endpoint").body, b"application/problem+json"
            )
        if not self._authorised(scope):
            resp = problem(401, "unauthenticated", "the admin API needs its bearer token")
            return await _reply(send, 401, resp.body, b"application/problem+json")
        try:
            if path == "/admin/config" and method == "GET":
                return await _reply(send, 200, orjson.dumps(self._config()))
            if path == "/admin/reload" and method == "POST":
                ok = await self.server.reload("admin API")
                return await _reply(
                    send, 200 if ok else 422, orjson.dumps({"reloaded": ok, "version": self.server.version})
                )
            if path == "/admin/live" and method == "GET":
                from urllib.parse import parse_qs

                q = parse_qs(scope.get("query_string", b"").decode("latin-1"))
                seconds = min(max(int((q.get("seconds") or ["120"])[0]), 10), 300)
                return await _reply(send, 200, orjson.dumps(LIVE.snapshot(seconds)))
            if path == "/admin/events" and method == "GET":
                return await _reply(send, 200, orjson.dumps({"events": list(LIVE.events)[::-1]}))
            if path == "/admin/revoke" and method == "POST":
                doc = await _json_body(receive)
                return await self._revoke(send, doc)
            token_app = self.server.gateway.state.token_app
            if token_app is not None:
                from bastion.tokens.admin import handle

                doc = await _json_body(receive) if method == "POST" else {}
                if not isinstance(doc, dict):
                    raise ValueError("send a JSON object")
                answer = await handle(token_app, method, path, scope.get("query_string", b""), doc)
                if answer is not None:
                    status, body = answer
                    if status >= 400:
                        resp = problem(status, body["error"], body["detail"])
                        return await _reply(send, status, resp.body, b"application/problem+json")
                    return await _reply(send, status, orjson.dumps(body))
        except (ValueError, orjson.JSONDecodeError) as exc:
            resp = problem(400, "bad-request", str(exc)[:200])
            return await _reply(send, 400, resp.body, b"application/problem+json")
        resp = problem(404, "not-found", "no such admin endpoint")
        return await _reply(send, 404, resp.body, b"application/problem+json")

    async def _asset(self, send, path: str) -> None:
        """The dashboard: static files shipped in the package (no CDN); the data comes from
        /admin/live with the admin token, which the page asks for."""
        from importlib import resources

        name = {"/dashboard": "index.html", "/dashboard/": "index.html"}.get(path, path.rsplit("/", 1)[-1])
        body = (resources.files("bastion.dashboard") / name).read_bytes()
        ctype = {
            "html": b"text/html; charset=utf-8",
            "js": b"text/javascript; charset=utf-8",
            "css": b"text/css; charset=utf-8",
        }[name.rsplit(".", 1)[-1]]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", ctype),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-cache"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (
                        b"content-security-policy",
                        b"default-src 'self'; img-src 'self' data:; style-src 'self'; "
                        b"script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
                    ),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _config(self) -> dict[str, Any]:
        state = self.server.gateway.state
        return {
            "pid": os.getpid(),
            "version": state.version,
            "source": state.source,
            "reloads": self.server.reloads,
            "routes": [
                {
                    "name": r.name,
                    "path": r.pattern,
                    "methods": sorted(r.methods) if r.methods else None,
                    "host": r.host,
                    "policies": [p.name for p in r.target.pipeline.policies],
                }
                for r in state.router.routes
            ],
            "upstreams": {name: getattr(pool.config, "urls", ["in-process"]) for name, pool in state.upstreams.items()},
        }

    async def _ready(self) -> tuple[bool, dict[str, str]]:
        from bastion.ratelimit import shared_store
        from bastion.ratelimit.redis_store import RedisStore

        state = self.server.gateway.state
        checks = {"config": f"version {state.version}"}
        ready = True
        urls = {p.store_url for p in state.policies if getattr(p, "store_url", "memory") != "memory"}
        for url in urls:
            store = shared_store(url)
            if isinstance(store, RedisStore):
                try:
                    await store.client.ping()
                    checks[f"store {url.split('@')[-1]}"] = "ok"
                except Exception as exc:
                    ready = False
                    checks[f"store {url.split('@')[-1]}"] = f"unreachable ({type(exc).__name__})"
        if state.token_app is not None:
            import asyncio as _asyncio

            from bastion.tokens.app import database_ping

            try:
                ms = await _asyncio.wait_for(_asyncio.to_thread(database_ping, state.token_app), 3)
                checks["database"] = f"ok ({ms:.1f} ms)"
            except Exception as exc:
                ready = False
                checks["database"] = f"unreachable ({type(exc).__name__})"
        if not state.upstreams and state.router.routes:
            ready = False
            checks["upstreams"] = "none configured"
        return ready, checks

    async def _revoke(self, send, doc: dict[str, Any]) -> None:
        from bastion.auth.revocation import revocation_store

        urls = {p.revocation_url for p in self.server.gateway.state.policies if p.name == "auth"} or {"memory"}
        done = []
        for url in urls:
            store = revocation_store(url)
            if isinstance(doc.get("jti"), str):
                await store.revoke_jti(doc["jti"], float(doc.get("expires_at") or time.time() + 86400))
                done.append("jti")
            if isinstance(doc.get("subject"), str):
                await store.revoke_subject(doc["subject"])
                done.append("subject")
        if not done:
            raise ValueError('send {"jti": ..., "expires_at": ...} or {"subject": ...}')
        await _reply(send, 200, orjson.dumps({"revoked": sorted(set(done))}))
