"""Scores pushed as they are made (issue 5): the server-sent-events stream of a real `python -m inference`.

The server splits traffic between two versions, so each event must also name the version
that answered its request. A subscriber that never reads must not slow scoring down.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from feature_repo.store import FeatureStoreSettings, apply_definitions
from tests.integration.inference_fixtures import Server, make_model_dir
from tests.integration.test_inference_canary import champion_and_candidate

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
STREAM = f"/v2/models/{MODEL}/scores/stream"


def body(request_id: str, customers: list[int]) -> dict:
    n = len(customers)
    tensors = [
        ("customer_id", "INT64", customers),
        ("terminal_id", "INT64", [c + 1000 for c in customers]),
        ("tx_amount", "FP64", [10.0 + c for c in customers]),
        ("tx_datetime", "INT64", [1714791600] * n),
    ]
    return {"id": request_id, "inputs": [{"name": nm, "shape": [n], "datatype": dt, "data": d} for nm, dt, d in tensors]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("rtml_home")
    v1, v2 = champion_and_candidate(home)
    env = {"RTML_SCORE_STREAM_QUEUE": "50"}
    s = Server(home, tmp_path_factory.mktemp("logs") / "stream.log", "--storage-uri", v1, "--candidate-storage-uri", v2, "--canary-percent", "50", env=env)
    try:
        yield s.wait_ready(timeout_s=300)
    finally:
        s.stop()


def read_events(lines, n: int, timeout_s: float = 20.0) -> list[dict]:
    """The next ``n`` score events from an SSE line iterator (bounded by ``timeout_s`` and the read timeout)."""
    events, event_type, deadline = [], None, time.monotonic() + timeout_s
    for line in lines:
        if line.startswith("event: "):
            event_type = line[len("event: "):]
        elif line.startswith("data: ") and event_type == "score":
            events.append(json.loads(line[len("data: "):]))
            if len(events) == n:
                return events
        assert time.monotonic() < deadline, f"only {len(events)} of {n} events in {timeout_s}s"
    raise AssertionError(f"stream ended after {len(events)} of {n} events")


def outputs(response: dict) -> dict:
    return {o["name"]: o["data"] for o in response["outputs"]}


def test_stream_pushes_every_scored_row_as_it_is_scored(server):
    url = f"http://{server.url}"
    timeout = httpx.Timeout(10.0, read=20.0)
    with httpx.Client(timeout=timeout) as client, httpx.Client(timeout=timeout) as watcher:
        with watcher.stream("GET", url + STREAM) as stream:
            assert stream.status_code == 200 and stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            assert next(lines) == ": subscribed"  # subscribed before anything below is scored
            sent = {}
            for i in range(20):
                customers = [i * 10 + k for k in range(1 + i % 3)]  # batches of 1 to 3 rows
                r = client.post(f"{url}/v2/models/{MODEL}/infer", json=body(f"s-{i}", customers))
                assert r.status_code == 200, r.text
                sent[f"s-{i}"] = (customers, r.json())
            n_rows = sum(len(c) for c, _ in sent.values())
            events = read_events(lines, n_rows)

    by_request: dict[str, list[dict]] = {}
    for e in events:
        by_request.setdefault(e["request_id"], []).append(e)
    assert by_request.keys() == sent.keys()
    versions = set()
    for request_id, (customers, response) in sent.items():
        got = by_request[request_id]
        out = outputs(response)
        assert [e["customer_id"] for e in got] == customers and [e["terminal_id"] for e in got] == [c + 1000 for c in customers]
        assert [e["fraud_probability"] for e in got] == pytest.approx(out["fraud_probability"], rel=1e-6)
        assert [e["is_fraud"] for e in got] == out["is_fraud"]
        assert {e["model_version"] for e in got} == {response["model_version"]}
        versions.add(response["model_version"])
    assert versions == {"1", "2"}  # the canary split shows in the stream too


def metric(server: Server, name: str) -> float:
    text = httpx.get(f"http://{server.url}/metrics", timeout=5).text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))


def test_a_subscriber_that_never_reads_loses_events_but_never_slows_scoring(server):
    url = f"http://{server.url}"
    before = metric(server, "rtml_score_stream_dropped_total")
    rows = 2000
    with httpx.Client(timeout=httpx.Timeout(10.0, read=20.0)) as client, httpx.Client(timeout=10.0) as stalled:
        with stalled.stream("GET", url + STREAM) as stream:
            assert stream.status_code == 200
            assert metric(server, "rtml_score_stream_subscribers") >= 1
            start = time.monotonic()
            for i in range(25):  # 50,000 events: more than the socket buffers and the queue of 50 hold
                r = client.post(f"{url}/v2/models/{MODEL}/infer", json=body(f"big-{i}", list(range(i * rows, (i + 1) * rows))))
                assert r.status_code == 200, r.text
            elapsed = time.monotonic() - start
    assert metric(server, "rtml_score_stream_dropped_total") > before
    assert elapsed < 120, elapsed

    # The stalled stream is gone once its client left; other endpoints answer as before.
    deadline = time.monotonic() + 10
    while metric(server, "rtml_score_stream_subscribers") != 0:
        assert time.monotonic() < deadline, "the closed stream is still subscribed"
        time.sleep(0.1)


def test_unknown_model_and_predictor_have_no_stream(server):
    for name in ("no-such-model", f"{MODEL}-predictor"):
        r = httpx.get(f"http://{server.url}/v2/models/{name}/scores/stream", timeout=5)
        assert r.status_code == 404 and "no score stream" in r.json()["error"]


def test_sigterm_ends_open_streams_cleanly_and_promptly(tmp_path):
    apply_definitions(FeatureStoreSettings(home=tmp_path))
    make_model_dir(tmp_path / "registry" / MODEL / "1", version="1")
    s = Server(tmp_path, tmp_path / "server.log").wait_ready(timeout_s=300)
    try:
        with httpx.stream("GET", f"http://{s.url}{STREAM}", timeout=httpx.Timeout(10.0, read=30.0)) as stream:
            lines = stream.iter_lines()
            assert next(lines) == ": subscribed"
            start = time.monotonic()
            s.proc.terminate()
            rest = list(lines)  # the server ends the chunked body: no RemoteProtocolError
            ended = time.monotonic() - start
        assert s.proc.wait(10) == 0
    finally:
        s.stop()
    # Well inside the shutdown grace (5 s), which an open stream would otherwise use up.
    assert all(not line.startswith("data:") for line in rest) and ended < 4.0, ended
