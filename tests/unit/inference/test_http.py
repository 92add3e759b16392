"""The REST middleware: body limit (413), JSON declared for bodies without the binary header, /metrics."""

from __future__ import annotations

import asyncio
import json

from inference.http import V2HttpMiddleware


class EchoApp:
    """Downstream ASGI app: answers 200 with the headers and body it received."""

    async def __call__(self, scope, receive, send):
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        payload = json.dumps({"headers": headers, "body": body.decode()}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": payload})


def call(path, headers, chunks, method="POST", limit=100):
    mw = V2HttpMiddleware(EchoApp(), max_request_bytes=limit, model_version=lambda name: "3" if name == "m" else None)
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    asyncio.run(mw(scope, receive, send))
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, body


def test_json_without_content_type_is_declared_json():
    status, body = call("/v2/models/m/infer", [(b"content-length", b"2")], [b"{}"])
    echoed = json.loads(body)
    assert status == 200 and echoed["headers"]["content-type"] == "application/json" and echoed["body"] == "{}"


def test_form_content_type_from_curl_is_replaced():
    status, body = call("/v2/models/m/infer", [(b"content-type", b"application/x-www-form-urlencoded")], [b"{}"])
    assert json.loads(body)["headers"]["content-type"] == "application/json"


def test_binary_extension_requests_pass_untouched():
    headers = [(b"content-type", b"application/octet-stream"), (b"inference-header-content-length", b"2")]
    status, body = call("/v2/models/m/infer", headers, [b"{}\x00\x01"])
    assert json.loads(body)["headers"]["content-type"] == "application/octet-stream"


def test_declared_oversized_body_is_413_with_a_message():
    status, body = call("/v2/models/m/infer", [(b"content-length", b"101")], [b"x" * 101])
    assert status == 413 and "exceeds the limit of 100 bytes" in json.loads(body)["error"]


def test_chunked_oversized_body_is_413():
    status, body = call("/v2/models/m/infer", [], [b"x" * 60, b"x" * 60])
    assert status == 413 and "more than 100" in json.loads(body)["error"]


def test_other_routes_are_not_touched_and_metrics_are_served():
    status, body = call("/v2/models/m", [], [b""], method="GET")
    assert status == 200 and "content-type" not in json.loads(body)["headers"]
    call("/v2/models/m/infer", [], [b"{}"])
    status, body = call("/metrics", [], [b""], method="GET")
    text = body.decode()
    assert status == 200 and 'rtml_inference_requests_total{model="m",model_version="3",status="200"}' in text
