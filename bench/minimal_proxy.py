"""The baseline (c): a minimal reverse proxy on the same stack as bastion (about 50 lines).

Usage: python bench/minimal_proxy.py UPSTREAM_URL PORT [aiohttp|httpx] [uvicorn|granian]
"""

import sys

UPSTREAM, PORT = sys.argv[1].rstrip("/"), int(sys.argv[2])
CLIENT = sys.argv[3] if len(sys.argv) > 3 else "aiohttp"
SERVER = sys.argv[4] if len(sys.argv) > 4 else "uvicorn"
HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"host", b"content-length"}
state = {}


async def read_body(receive):
    body = b""
    while True:
        m = await receive()
        body += m.get("body", b"")
        if not m.get("more_body"):
            return body


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    headers = [(k.decode(), v.decode()) for k, v in scope["headers"] if k not in HOP]
    url = UPSTREAM + scope["path"] + ("?" + scope["query_string"].decode() if scope["query_string"] else "")
    if CLIENT == "aiohttp":
        import aiohttp

        if "s" not in state:
            state["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200), auto_decompress=False)
        async with state["s"].request(scope["method"], url, headers=headers, data=body or None) as r:
            out = [(k.lower(), v) for k, v in r.raw_headers if k.lower() not in HOP]
            await send({"type": "http.response.start", "status": r.status, "headers": out})
            async for chunk in r.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    else:
        import httpx

        if "c" not in state:
            state["c"] = httpx.AsyncClient(limits=httpx.Limits(max_connections=200))
        req = state["c"].build_request(scope["method"], url, headers=headers, content=body or None)
        r = await state["c"].send(req, stream=True)
        out = [(k.lower(), v) for k, v in r.headers.raw if k.lower() not in HOP]
        await send({"type": "http.response.start", "status": r.status_code, "headers": out})
        async for chunk in r.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await r.aclose()
    await send({"type": "http.response.body", "body": b""})


if __name__ == "__main__":
    if SERVER == "granian":
        from granian import Granian

        Granian(
            "minimal_proxy:app",
            address="127.0.0.1",
            port=PORT,
            interface="asgi",
            workers=1,
            loop="uvloop",
            log_enabled=False,
        ).serve()
    else:
        import uvicorn

        uvicorn.run(
            app,
            host="127.0.0.1",
            port=PORT,
            log_level="warning",
            access_log=False,
            http="httptools",
            loop="uvloop",
            server_header=False,
        )
