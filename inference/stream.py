"""Scores pushed as they are made: an in-process fan-out and its server-sent-events endpoint.

``GET /v2/models/<name>/scores/stream`` answers ``text/event-stream``; every row the
transformer scores becomes one ``event: score`` whose data is the JSON prediction record
(request id, customer, terminal, amount, probability, decision, model version; no feature
vector). The transformer publishes where it feeds the prediction log.

Scoring never waits for a reader: each subscriber has a bounded queue, and a reader that
falls behind loses the events that do not fit (``rtml_score_stream_dropped_total``).
Events are not replayed: a subscriber sees what is scored after it connected.
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading

import orjson

from inference import metrics
from inference.prediction_log import prediction_records
from rtml_common.errors import NotReadyError

STREAM_PATH = re.compile(r"^/v2/models/([^/]+)/scores/stream$")
HEARTBEAT_S = 15.0
"""A comment line this often keeps proxies from closing an idle stream."""
_CHUNK_EVENTS = 256


def sse_frame(record: dict) -> bytes:
    """One server-sent event carrying ``record`` as JSON."""
    return b"event: score\ndata: " + orjson.dumps(record) + b"\n\n"


class Subscription:
    """One reader's bounded queue of encoded events; ``None`` in the queue ends the stream."""

    def __init__(self, capacity: int):
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=capacity)
        self.dropped = 0
        self.closed = False

    def offer(self, frame: bytes) -> bool:
        """Queue ``frame`` unless full (then it is dropped and counted)."""
        try:
            self.queue.put_nowait(frame)
            return True
        except asyncio.QueueFull:
            self.dropped += 1
            return False

    def close(self) -> None:
        """End the stream now: pending events are discarded to make room for the end marker."""
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class ScoreFanout:
    """Publishes scored rows to every subscriber; all calls happen on the server's event loop."""

    def __init__(self, model_name: str, capacity: int = 1000, max_subscribers: int = 64, end_on_signals: bool = False):
        self.model_name = model_name
        self.capacity = capacity
        self.max_subscribers = max_subscribers
        self.end_on_signals = end_on_signals
        self._subscribers: set[Subscription] = set()
        self._gauge = metrics.SCORE_STREAM_SUBSCRIBERS.labels(model_name)
        self._dropped = metrics.SCORE_STREAM_DROPPED.labels(model_name)

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        """A new subscription; NotReadyError (503) when ``max_subscribers`` are already open."""
        if len(self._subscribers) >= self.max_subscribers:
            raise NotReadyError(
                f"{len(self._subscribers)} score streams are open, the limit (RTML_SCORE_STREAM_MAX_SUBSCRIBERS); retry later"
            )
        if self.end_on_signals:
            self.end_on_signals = False
            _chain_shutdown_signals(self.close)
        sub = Subscription(self.capacity)
        self._subscribers.add(sub)
        self._gauge.set(len(self._subscribers))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Forget ``sub`` (idempotent)."""
        self._subscribers.discard(sub)
        self._gauge.set(len(self._subscribers))

    def publish(self, *item) -> None:
        """Push the rows of one scored request (the arguments of ``prediction_records``) to every subscriber."""
        if not self._subscribers:
            return
        frames = [sse_frame(r) for r in prediction_records(*item, with_features=False)]
        lost = 0
        for sub in self._subscribers:
            for frame in frames:
                lost += not sub.offer(frame)
        if lost:
            self._dropped.inc(lost)

    def close(self) -> None:
        """End every open stream (server shutdown), so that no connection holds the server up."""
        for sub in list(self._subscribers):
            sub.close()
        self._subscribers.clear()
        self._gauge.set(0)


def _chain_shutdown_signals(callback) -> None:
    """Run ``callback`` on the running loop at SIGTERM/SIGINT, then the handler that was there (uvicorn's).

    uvicorn holds the signals while it serves and waits for open responses before the app (and
    kserve's model.stop) hears of a shutdown: an endless stream would hold every SIGTERM for the
    whole grace period and then be cut mid-chunk. Called from a request, hence after uvicorn
    installed its handlers; uvicorn restores the originals when it exits.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            loop.call_soon_threadsafe(callback)
            if callable(previous):
                previous(signum, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(signum, signal.SIG_DFL)
                signal.raise_signal(signum)

        signal.signal(sig, handler)


async def _wait_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def serve_stream(fanout: ScoreFanout, receive, send, heartbeat_s: float = HEARTBEAT_S) -> None:
    """Answer one ASGI request with the fan-out's events until the client leaves or the server stops."""
    sub = fanout.subscribe()
    # The client's disconnect ends the stream at once, not at the next failed write.
    watcher = asyncio.ensure_future(_wait_disconnect(receive))
    watcher.add_done_callback(lambda _: sub.close())
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),  # nginx-style proxies must not buffer the stream
    ]
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # A first line at once: the client knows it is subscribed before anything is scored.
        await send({"type": "http.response.body", "body": b": subscribed\n\n", "more_body": True})
        while True:
            try:
                async with asyncio.timeout(heartbeat_s):
                    frame = await sub.queue.get()
            except TimeoutError:
                await send({"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True})
                continue
            chunks = [frame]
            # Whatever else is queued goes out in the same write: fewer syscalls when scoring is busy.
            while frame is not None and not sub.queue.empty() and len(chunks) < _CHUNK_EVENTS:
                frame = sub.queue.get_nowait()
                chunks.append(frame)
            if chunks[-1] is None:
                chunks.pop()
                await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": False})
                return
            await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
    except OSError:  # the client went away mid-write
        return
    finally:
        watcher.cancel()
        fanout.unsubscribe(sub)
