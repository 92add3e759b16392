"""The REST edge around kserve's FastAPI app: body limits, content-type repair, metrics, error mapping.

kserve's V2 REST route reads a body without a JSON ``Content-Type`` as binary-extension data
and rejects it for lacking ``inference-header-content-length``; tritonclient's HTTP client
sends its JSON with no Content-Type at all (curl -d says form-urlencoded). A V2 body without
that header can only be JSON, so the middleware declares it so; binary-extension requests
(which carry the header) pass untouched.

JSON infer requests are decoded here (``inference.v2json``) and handed to kserve's DataPlane,
the same handler kserve's route calls: the route's pydantic validation and FastAPI's generic
response encoder cost more than the whole fraud model, twice over.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

import orjson
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve.errors import ModelNotReady

from inference import metrics
from inference.stream import STREAM_PATH, ScoreFanout, serve_stream
from inference.v2json import error_status, parse_infer_request
from rtml_common.errors import RtmlError

log = logging.getLogger(__name__)

INFER_PREFIX = "/v2/models/"
_JSON = (b"content-type", b"application/json")


def _is_infer(scope: dict) -> bool:
    path = scope["path"]
    return scope["method"] == "POST" and path.startswith(INFER_PREFIX) and path.endswith("/infer")


async def _respond(send, status: int, body: bytes, content_type: bytes = b"application/json", extra: list | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class V2HttpMiddleware:
    """ASGI middleware for the inference routes and /metrics.

    ``model_version`` maps a model name to its served version, or None for an unknown model
    (counted under model="unknown" so that arbitrary paths cannot grow the label set).
    With a kserve ``dataplane``, JSON infer requests take the fast path: decoded here and
    handed to the same dataplane kserve's route calls, skipping FastAPI's pydantic round trips.
    ``score_stream`` maps a model name to its score fan-out (None: the model has none) for
    ``GET /v2/models/<name>/scores/stream``.
    """

    def __init__(
        self,
        app,
        max_request_bytes: int,
        model_version: Callable[[str], str | None],
        dataplane=None,
        score_stream: Callable[[str], ScoreFanout | None] | None = None,
    ):
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.model_version = model_version
        self.dataplane = dataplane
        self.score_stream = score_stream or (lambda name: None)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["path"] == "/metrics" and scope["method"] == "GET":
            return await _respond(send, 200, metrics.exposition(), b"text/plain; version=0.0.4; charset=utf-8")
        if scope["method"] == "GET" and (stream := STREAM_PATH.match(scope["path"])):
            return await self._stream(stream.group(1), receive, send)
        if not _is_infer(scope):
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = [500]

        async def send_observed(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        served, token = metrics.open_version_slot()
        try:
            await self._infer(scope, receive, send_observed)
        finally:
            metrics.close_version_slot(token)
            name = scope["path"][len(INFER_PREFIX):].split("/", 1)[0]
            version = self.model_version(name)
            if version is not None and served:  # a canary split: the version that actually answered
                version = served[-1]
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
        model_name, _, rest = scope["path"][len(INFER_PREFIX):].partition("/")
        if not has_binary and self.dataplane is not None and rest == "infer":
            return await self._fast_infer(model_name, headers, body, send)
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

    async def _fast_infer(self, model_name: str, raw_headers, body: bytes, send) -> None:
        dp = self.dataplane
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}
        try:
            if not await dp.model_ready(model_name, True):
                raise ModelNotReady(model_name)
            request = parse_infer_request(body, model_name)
            response, _ = await dp.infer(model_name=model_name, request=request, headers=headers)
            response, res_headers = dp.encode(model_name=model_name, response=response, headers=headers, req_attributes={})
        except Exception as e:
            status = error_status(e)
            if status >= 500:
                log.exception("inference failed for model %s", model_name)
            return await _respond(send, status, orjson.dumps({"error": str(e)}))
        if isinstance(response, bytes):  # binary-extension outputs: JSON header then raw tensors
            extra = [(b"inference-header-content-length", res_headers["inference-header-content-length"].encode())]
            return await _respond(send, 200, response, b"application/octet-stream", extra)
        await _respond(send, 200, orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY))

    async def _stream(self, model_name: str, receive, send) -> None:
        fanout = self.score_stream(model_name)
        if fanout is None:
            return await _respond(send, 404, orjson.dumps({"error": f"model {model_name!r} has no score stream on this server"}))
        try:
            await serve_stream(fanout, receive, send)
        except RtmlError as e:  # raised before the response started (too many subscribers)
            await _respond(send, e.http_status, orjson.dumps({"error": e.message}))

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


def install(
    app: FastAPI,
    max_request_bytes: int,
    model_version: Callable[[str], str | None],
    dataplane=None,
    score_stream: Callable[[str], ScoreFanout | None] | None = None,
) -> None:
    """Add the middleware and handlers to kserve's app (before the server starts)."""
    app.add_middleware(
        V2HttpMiddleware, max_request_bytes=max_request_bytes, model_version=model_version, dataplane=dataplane, score_stream=score_stream
    )
    app.add_exception_handler(RtmlError, rtml_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
