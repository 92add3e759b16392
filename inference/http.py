"""The REST edge around kserve's FastAPI app: body limits, content-type repair, metrics, error mapping.

kserve's V2 REST route reads a body without a JSON ``Content-Type`` as binary-extension data
and rejects it for lacking ``inference-header-content-length``; tritonclient's HTTP client
sends its JSON with no Content-Type at all (curl -d says form-urlencoded). A V2 body without
that header can only be JSON, so the middleware declares it so; binary-extension requests
(which carry the header) pass untouched.
"""

from __future__ import annotations

import time
from typing import Callable

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from inference import metrics
from rtml_common.errors import RtmlError

INFER_PREFIX = "/v2/models/"
_JSON = (b"content-type", b"application/json")


def _is_infer(scope: dict) -> bool:
    path = scope["path"]
    return scope["method"] == "POST" and path.startswith(INFER_PREFIX) and path.endswith("/infer")


async def _respond(send, status: int, body: bytes, content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class V2HttpMiddleware:
    """ASGI middleware for the inference routes and /metrics.

    ``model_version`` maps a model name to its served version, or None for an unknown model
    (counted under model="unknown" so that arbitrary paths cannot grow the label set).
    """

    def __init__(self, app, max_request_bytes: int, model_version: Callable[[str], str | None]):
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.model_version = model_version

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/metrics" and scope["method"] == "GET":
            return await _respond(send, 200, metrics.exposition(), b"text/plain; version=0.0.4; charset=utf-8")
        if not _is_infer(scope):
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_observed(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self._infer(scope, receive, send_observed)
        finally:
            name = scope["path"][len(INFER_PREFIX):].split("/", 1)[0]
            version = self.model_version(name)
            labels = (name, version, str(status[0])) if version is not None else ("unknown", "", str(status[0]))
            metrics.REQUESTS.labels(*labels).inc()
            metrics.REQUEST_DURATION.labels(*labels).observe(time.perf_counter() - start)

    async def _infer(self, scope, receive, send):
        headers = scope["headers"]
        declared = None
        has_binary = False
        for key, value in headers:
            if key == b"content-length":
                declared = int(value) if value.isdigit() else None
            elif key == b"inference-header-content-length":
                has_binary = True
        if declared is not None and declared > self.max_request_bytes:
            return await self._too_large(send, declared)
        # Read the whole body here: a chunked body has no length to check up front.
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                return await self._too_large(send, size, at_least=True)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not has_binary:
            scope = dict(scope, headers=[h for h in headers if h[0] != b"content-type"] + [_JSON])
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send, size: int, at_least: bool = False) -> None:
        what = f"more than {self.max_request_bytes}" if at_least else str(size)
        msg = f"request body of {what} bytes exceeds the limit of {self.max_request_bytes} bytes (RTML_MAX_REQUEST_BYTES)"
        await _respond(send, 413, orjson.dumps({"error": msg}))


async def rtml_error_handler(_, exc: RtmlError) -> JSONResponse:
    """An RtmlError answers its own status with ``{"error": message}`` (V2 error format)."""
    return JSONResponse(status_code=exc.http_status, content={"error": exc.message})


async def validation_error_handler(_, exc: RequestValidationError) -> JSONResponse:
    """A body that is not a V2 inference request is the caller's fault: 400 naming the fields."""
    problems = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        problems.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return JSONResponse(status_code=400, content={"error": "invalid inference request: " + "; ".join(problems)})


def install(app: FastAPI, max_request_bytes: int, model_version: Callable[[str], str | None]) -> None:
    """Add the middleware and handlers to kserve's app (before the server starts)."""
    app.add_middleware(V2HttpMiddleware, max_request_bytes=max_request_bytes, model_version=model_version)
    app.add_exception_handler(RtmlError, rtml_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
