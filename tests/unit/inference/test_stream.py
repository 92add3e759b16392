"""The score fan-out and its SSE endpoint: bounded per subscriber, drops counted, ends on disconnect or close."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from inference import metrics
from inference.http import V2HttpMiddleware
from inference.stream import ScoreFanout, Subscription, serve_stream
from rtml_common.errors import NotReadyError


def scored(n: int, version: str = "1", request_id: str = "r-1") -> tuple:
    cols = {
        "customer_id": np.arange(n, dtype=np.int64),
        "terminal_id": np.arange(n, dtype=np.int64) + 100,
        "tx_amount": np.full(n, 12.5),
        "tx_datetime": np.full(n, 1714791600, dtype=np.int64),
    }
    probs = np.linspace(0.1, 0.9, n, dtype=np.float32)
    return ("fd", version, request_id, cols, np.zeros((n, 15)), probs, probs >= 0.5)


def events(body: bytes) -> list[dict]:
    """The data of every ``score`` event in an SSE body (comments skipped)."""
    out = []
    for block in body.decode().split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0] == "event: score":
            assert lines[1].startswith("data: ")
            out.append(json.loads(lines[1][len("data: "):]))
    return out


def dropped(model: str) -> float:
    return metrics.registry.get_sample_value("rtml_score_stream_dropped_total", {"model": model}) or 0.0


def test_publish_reaches_every_subscriber_as_sse_frames():
    async def run():
        fanout = ScoreFanout("fan-a", capacity=10)
        a, b = fanout.subscribe(), fanout.subscribe()
        fanout.publish(*scored(3))
        return [[a.queue.get_nowait() for _ in range(3)], [b.queue.get_nowait() for _ in range(3)]]

    for frames in asyncio.run(run()):
        got = events(b"".join(frames))
        assert [e["customer_id"] for e in got] == [0, 1, 2] and [e["terminal_id"] for e in got] == [100, 101, 102]
        assert [e["is_fraud"] for e in got] == [False, True, True] and got[0]["request_id"] == "r-1"
        assert got[0]["model_version"] == "1" and got[0]["fraud_probability"] == pytest.approx(0.1) and "features" not in got[0]


def test_a_slow_subscriber_loses_events_and_they_are_counted():
    async def run():
        fanout = ScoreFanout("fan-slow", capacity=2)
        slow = fanout.subscribe()
        fanout.publish(*scored(5))
        return slow

    before = dropped("fan-slow")
    slow = asyncio.run(run())
    assert slow.queue.qsize() == 2 and slow.dropped == 3 and dropped("fan-slow") == before + 3


def test_subscriber_limit_is_503_and_close_ends_every_stream():
    async def run():
        fanout = ScoreFanout("fan-limit", capacity=1, max_subscribers=2)
        subs = [fanout.subscribe(), fanout.subscribe()]
        with pytest.raises(NotReadyError, match="limit"):
            fanout.subscribe()
        fanout.publish(*scored(1))
        fanout.close()
        return fanout, subs

    fanout, subs = asyncio.run(run())
    assert len(fanout) == 0 and all(s.closed and s.queue.get_nowait() is None for s in subs)
    assert metrics.registry.get_sample_value("rtml_score_stream_subscribers", {"model": "fan-limit"}) == 0


def test_closing_a_full_subscription_still_ends_it():
    async def run():
        sub = Subscription(1)
        sub.offer(b"x")
        sub.close()
        sub.close()
        return sub

    sub = asyncio.run(run())
    assert sub.queue.qsize() == 1 and sub.queue.get_nowait() is None


async def _stream(app, path: str, publish, disconnect_after: float = 0.05):
    """Run one GET; ``publish`` runs once subscribed; the client disconnects ``disconnect_after`` later."""
    sent: list[dict] = []
    gone = asyncio.Event()

    async def receive():
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)
        if message.get("body") == b": subscribed\n\n":
            publish()
            asyncio.get_running_loop().call_later(disconnect_after, gone.set)

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    await asyncio.wait_for(app(scope, receive, send), 5)
    return sent


def test_sse_endpoint_streams_events_and_unsubscribes_on_disconnect():
    fanout = ScoreFanout("fan-http", capacity=100)
    mw = V2HttpMiddleware(None, 100, lambda name: "1", score_stream=lambda name: fanout if name == "fd" else None)
    sent = asyncio.run(_stream(mw, "/v2/models/fd/scores/stream", lambda: fanout.publish(*scored(4))))
    assert sent[0]["status"] == 200 and dict(sent[0]["headers"])[b"content-type"].startswith(b"text/event-stream")
    got = events(b"".join(m.get("body", b"") for m in sent[1:]))
    assert [e["customer_id"] for e in got] == [0, 1, 2, 3] and len(fanout) == 0

    missing = asyncio.run(_stream(mw, "/v2/models/nope/scores/stream", lambda: None))
    assert missing[0]["status"] == 404 and b"no score stream" in missing[1]["body"]


def test_sse_stream_ends_cleanly_when_the_server_closes_it():
    fanout = ScoreFanout("fan-close", capacity=100)

    async def app(scope, receive, send):
        await serve_stream(fanout, receive, send, heartbeat_s=0.01)

    def publish_then_close():
        fanout.publish(*scored(2))
        asyncio.get_running_loop().call_later(0.05, fanout.close)

    sent = asyncio.run(_stream(app, "/", publish_then_close, disconnect_after=10))
    bodies = b"".join(m.get("body", b"") for m in sent[1:])
    assert len(events(bodies)) == 2 and b": keepalive" in bodies and sent[-1]["more_body"] is False


def test_metrics_use_the_version_that_served_the_request():
    class CanaryApp:
        async def __call__(self, scope, receive, send):
            metrics.note_served_version("7")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

    async def run():
        mw = V2HttpMiddleware(CanaryApp(), 100, lambda name: "6")
        scope = {"type": "http", "method": "POST", "path": "/v2/models/canary-m/infer", "headers": [(b"inference-header-content-length", b"2")]}
        msgs = [{"type": "http.request", "body": b"{}", "more_body": False}]

        async def receive():
            return msgs.pop(0)

        async def send(message):
            pass

        await mw(scope, receive, send)

    asyncio.run(run())
    labels = {"model": "canary-m", "status": "200"}
    assert metrics.registry.get_sample_value("rtml_inference_requests_total", dict(labels, model_version="7")) == 1
    assert metrics.registry.get_sample_value("rtml_inference_requests_total", dict(labels, model_version="6")) is None
