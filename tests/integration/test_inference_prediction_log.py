"""The prediction log (issue 5): every scored transaction reaches Kafka; a dead broker never fails a request."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from feature_repo.store import FeatureStoreSettings, apply_definitions
from rtml_common.kafka import make_consumer
from tests.integration.inference_fixtures import Server, free_port, make_model_dir

pytestmark = pytest.mark.integration

BODY = {
    "id": "log-1",
    "inputs": [
        {"name": "customer_id", "shape": [3], "datatype": "INT64", "data": [5, 6, 7]},
        {"name": "terminal_id", "shape": [3], "datatype": "INT64", "data": [50, 60, 70]},
        {"name": "tx_amount", "shape": [3], "datatype": "FP32", "data": [1.0, 20.0, 300.0]},
        {"name": "tx_datetime", "shape": [3], "datatype": "INT64", "data": [1714791600] * 3},
    ],
}


@pytest.fixture
def home(tmp_path):
    apply_definitions(FeatureStoreSettings(home=tmp_path))
    make_model_dir(tmp_path / "registry" / "fraud-detector" / "3")
    return tmp_path


def infer(server: Server) -> dict:
    r = httpx.post(f"http://{server.url}/v2/models/fraud-detector/infer", json=BODY, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def test_every_prediction_is_produced_to_kafka(home, kafka_settings, unique):
    topic = f"predictions-{unique}"
    env = {"RTML_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap, "RTML_PREDICTION_LOG_TOPIC": topic}
    server = Server(home, home / "server.log", "--role", "all", env=env).wait_ready()
    try:
        answer = infer(server)
        probs = next(o["data"] for o in answer["outputs"] if o["name"] == "fraud_probability")
        consumer = make_consumer(kafka_settings, [topic], group_id=f"t-{unique}")
        records, deadline = [], time.monotonic() + 60
        while len(records) < 3 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records += [json.loads(m.value) for m in batch]
        consumer.close()
    finally:
        server.stop()
    records.sort(key=lambda r: r["customer_id"])  # keyed by customer: partitions may interleave
    assert [r["customer_id"] for r in records] == [5, 6, 7]
    assert all(r["request_id"] == "log-1" and r["model_version"] == "3" for r in records)
    assert [r["fraud_probability"] for r in records] == pytest.approx(probs)
    assert records[2]["features"]["tx_amount"] == 300.0 and len(records[2]["features"]) == 15


def test_a_dead_broker_does_not_fail_or_slow_requests(home):
    # Also covers reading the online store on the event loop (no read thread).
    env = {"RTML_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}", "RTML_FEATURE_FETCH_THREADS": "0"}
    server = Server(home, home / "server.log", "--role", "all", env=env).wait_ready()
    try:
        start = time.monotonic()
        for _ in range(20):
            assert infer(server)["id"] == "log-1"
        assert time.monotonic() - start < 10
        dropped, deadline = 0.0, time.monotonic() + 30
        while dropped < 60 and time.monotonic() < deadline:  # 20 requests x 3 rows, dropped at the next failed connect
            time.sleep(0.5)
            lines = httpx.get(f"http://{server.url}/metrics").text.splitlines()
            dropped = sum(float(x.split()[-1]) for x in lines if x.startswith("rtml_prediction_log_dropped_total "))
        assert dropped == 60
    finally:
        server.stop()
