"""A FastAPI app protected by bastion's policies in-process (no proxy):

    uvicorn examples.fastapi_app:app
"""

from pathlib import Path

from fastapi import FastAPI, Request

from bastion.middleware import BastionMiddleware

app = FastAPI(title="orders")


@app.get("/public/hello")
async def hello() -> dict:
    return {"hello": "world"}


@app.get("/users/{user_id}/orders")
async def orders(user_id: str, request: Request) -> dict:
    # the principal arrives as headers, as it would behind the gateway
    return {"user": user_id, "seen_subject": request.headers.get("x-bastion-subject"),
            "orders": [{"id": 1, "password_hash": "never-shown"}]}


@app.post("/graphql")
async def graphql_endpoint(request: Request) -> dict:
    return {"data": {"hello": "world"}, "received": await request.json()}


@app.get("/boom")
async def boom() -> dict:
    raise RuntimeError("stack trace with secrets")


app.add_middleware(BastionMiddleware, config=Path(__file__).with_name("fastapi_bastion.yaml"))
