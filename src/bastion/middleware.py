"""The same policies as ASGI middleware, for FastAPI/Starlette apps:

    app.add_middleware(BastionMiddleware, config="bastion.yaml")   # or a dict / GatewayConfig

Routes in the config choose the policies (no `upstream`: the wrapped app answers); requests that
no route matches still get the global policies (request id, security headers, audit, ...) and go
on to the app. As in the gateway, the normalised path is the one checked and the one the app
sees. Policies do not know which mode they run in: this module is an adapter around the same
request model and pipeline.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from bastion.config.loader import load_config, load_config_text
from bastion.config.model import GatewayConfig
from bastion.gateway.app import Gateway, Receive, Scope, Send
from bastion.gateway.proxy import client_headers, drop_with
from bastion.gateway.state import compile_state
from bastion.http import Request, Response, problem, unsafe_header
from bastion.pipeline import Context, Pipeline
from bastion.response_body import PushBody, open_gate

log = logging.getLogger("bastion.middleware")


def _load(config: str | Path | dict[str, Any] | GatewayConfig) -> tuple[GatewayConfig, str]:
    if isinstance(config, GatewayConfig):
        return config, "."
    if isinstance(config, dict):
        import yaml

        return load_config_text(yaml.safe_dump(config), "<middleware config>", proxy=False), "."
    path = str(config)
    return load_config(path, proxy=False), os.path.dirname(os.path.abspath(path))


class BastionMiddleware:
    def __init__(self, app: Any, config: str | Path | dict[str, Any] | GatewayConfig) -> None:
        self.app = app
        cfg, config_dir = _load(config)
        self.core = Gateway(compile_state(cfg, config_dir=config_dir, source="middleware"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":  # the handshake through the same lifecycle, then the guarded relay
            from bastion.gateway.websocket import serve_websocket

            await serve_websocket(self.core, scope, receive, send, app=self.app)
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def exchange(req: Request, ctx: Context, pipeline: Pipeline, send: Send) -> Response:
            started: list[bool] = []
            try:
                return await self._call_app(scope, req, ctx, pipeline, send, started)
            except Exception as exc:
                if started:
                    raise  # the answer is under way: only the server can close the connection
                log.error("request %s: the application failed", req.request_id, exc_info=exc)
                return problem(
                    500,
                    "internal-error",
                    "the service failed on this request; its log has the details under this request id",
                    request_id=req.request_id,
                    stopped_by="app",
                )

        # the same lifecycle as the proxy (gateway/app.py): only "call the upstream" differs
        await self.core.handle(scope, receive, send, exchange, unrouted_to_exchange=True)

    async def _call_app(
        self, scope: Scope, req: Request, ctx: Context, pipeline: Pipeline, send: Send, started: list[bool]
    ) -> Response:
        inner = dict(scope)
        inner["method"] = req.method  # an honoured method override is what was routed and checked
        inner["path"] = req.path  # the app sees the path the policies checked
        inner["raw_path"] = req.path.encode("latin-1")
        inner["query_string"] = req.query
        drop = self.core.state.request_drop
        if ctx.drop_request_headers:
            drop = drop_with(drop, ctx.drop_request_headers)
        # the request's headers (the scope's, unless a policy rewrote them: a withheld cookie)
        inner["headers"] = client_headers(req.headers, drop)
        inner["headers"] += ctx.upstream_headers  # the principal, as the upstream would see it
        bad = unsafe_header(inner["headers"])
        if bad is not None:
            return self.core._unsafe_header(req, ctx, bad)  # not sent: the lifecycle sends it
        replay = req.body is not None
        if replay:  # a policy read (and maybe rewrote) the body: its length is what the app gets
            inner["headers"] = [
                (k, v) for k, v in inner["headers"] if k not in (b"content-length", b"transfer-encoding")
            ]
            inner["headers"].append((b"content-length", str(len(req.body or b"")).encode()))
        body_sent = False

        async def receive_() -> dict[str, Any]:
            nonlocal body_sent
            if replay:
                if body_sent:
                    return await req.receive()  # http.disconnect when the client goes
                body_sent = True
                return {"type": "http.request", "body": req.body, "more_body": False}
            return await req.receive()

        resp = Response(500)
        body: PushBody | None = None

        async def send_head() -> None:
            await pipeline.run_response(req, resp, ctx)
            started.append(True)
            await send({"type": "http.response.start", "status": resp.status, "headers": resp.headers})

        async def send_(message: dict[str, Any]) -> None:
            nonlocal body
            if message["type"] == "http.response.start":
                resp.status = message["status"]
                resp.headers = [(k.lower(), v) for k, v in message.get("headers", [])]
                gate = open_gate(req, resp, ctx)  # the gateway's engine: decode, filter, refuse
                if gate is not None:
                    body = PushBody(gate, send_head, send)
                    await body.start()
                    return
                await send_head()
                return
            if message["type"] == "http.response.body" and body is not None:
                await body.body(message.get("body", b""), message.get("more_body", False))
                return
            await send(message)

        await self.app(inner, receive_, send_)
        return resp
