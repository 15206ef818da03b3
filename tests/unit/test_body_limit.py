"""The guard's cap on a request's body, whatever its framing: a chunked body (no Content-Length)
is counted as it arrives and refused once past the cap, without being read whole. The real
GuardMiddleware on a FastAPI app, driven by httpx streaming the body through the ASGI transport
(which hands the app each chunk only when the app asks for it, as a server does)."""

import asyncio

import httpx
from fastapi import FastAPI, Request

from serve._private.ai.protocol import EmbeddingBody
from serve._private.auth.middleware import MAX_BODY_BYTES, GuardMiddleware, ai_rule
from serve._private.http_errors import install_error_handlers

CHUNK = 64 * 1024


def guarded_app() -> FastAPI:
    app = FastAPI()
    app.add_middleware(GuardMiddleware, rule=ai_rule, service="unit-body")  # auth off: no key table
    install_error_handlers(app)

    @app.post("/v1/completions")
    async def raw(request: Request) -> dict:
        return {"read": len(await request.body())}

    @app.post("/v1/embeddings")
    async def parsed(body: EmbeddingBody) -> dict:  # FastAPI reads and parses the body itself
        return {"read": len(body.input)}

    return app


def send_chunked(path: str, total: int) -> tuple[httpx.Response, int]:
    """POSTs `total` bytes as a chunked body; returns the answer and how many bytes the client
    was asked for before it came."""
    produced = 0

    async def body():
        nonlocal produced
        while produced < total:
            produced += CHUNK
            yield b" " * CHUNK

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=guarded_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            return await client.post(path, content=body(), headers={"content-type": "application/json"})

    response = asyncio.run(run())
    return response, produced


def test_a_chunked_body_over_the_cap_is_refused_as_it_arrives_without_being_read_whole():
    for path in ("/v1/completions", "/v1/embeddings"):
        response, produced = send_chunked(path, 2 * MAX_BODY_BYTES)
        assert response.status_code == 413, (path, response.status_code)
        error = response.json()["error"]
        assert (error["code"], error["param"], error["type"]) == (
            "request_too_large",
            "body",
            "invalid_request_error",
        )
        assert produced <= MAX_BODY_BYTES + CHUNK  # read up to the cap, not the rest


def test_a_chunked_body_under_the_cap_is_read_whole():
    response, produced = send_chunked("/v1/completions", 4 * CHUNK)
    assert response.status_code == 200 and response.json() == {"read": produced}
