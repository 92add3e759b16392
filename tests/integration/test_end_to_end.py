"""The walking skeleton end to end: Kafka -> streaming engine -> Feast tiles -> KServe V2 (tritonclient).

Real broker, real Feast SQLite store, real model server process; the expected inputs are
recomputed from the same simulated raw events at each scored transaction's own time
(``reference_vectors``), the expected score is the model's own forward pass on them. The scored
transactions are then streamed too and scored again: each must still count exactly once.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import tritonclient.http as httpclient

from feature_repo.model_inputs import MODEL_INPUTS
from feature_repo.offline_log import read_table
from feature_repo.store import apply_definitions
from rtml.simulator import generate_transactions, produce_events, to_events
from streaming.runner import StreamRunner
from streaming.settings import StreamingSettings
from tests.integration.inference_fixtures import Server, make_model_dir, reference_forward, reference_vectors

pytestmark = pytest.mark.integration


def raw_events(df: pd.DataFrame) -> list[dict]:
    """The simulated transactions as reference events; frauds carry the simulator's label (known 7 days later: on time)."""
    t_us = (df["TX_DATETIME"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(microseconds=1)
    return [{"customer_id": int(c), "terminal_id": int(k), "t_us": int(t), "tx_amount": float(a), "fraud": bool(f)}
            for c, k, t, a, f in zip(df["CUSTOMER_ID"], df["TERMINAL_ID"], t_us, df["TX_AMOUNT"], df["TX_FRAUD"])]


def score(client, scored: pd.DataFrame, request_id: str) -> np.ndarray:
    inputs = []
    for name, dtype, values in [
        ("customer_id", "INT64", scored["CUSTOMER_ID"].to_numpy(np.int64)),
        ("terminal_id", "INT64", scored["TERMINAL_ID"].to_numpy(np.int64)),
        ("tx_amount", "FP64", scored["TX_AMOUNT"].to_numpy(np.float64)),
        ("tx_datetime", "INT64", np.array([r[3] for r in requests_of(scored)], dtype=np.int64)),
    ]:
        inp = httpclient.InferInput(name, [len(scored)], dtype)
        inp.set_data_from_numpy(values, binary_data=False)
        inputs.append(inp)
    result = client.infer("fraud-detector", inputs, request_id=request_id)
    assert result.get_response()["id"] == request_id
    return result.as_numpy("fraud_probability")


def requests_of(scored: pd.DataFrame) -> list[tuple[int, int, float, int]]:
    """(customer_id, terminal_id, tx_amount, epoch seconds) per scored transaction."""
    epoch = (scored["TX_DATETIME"] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return [(int(c), int(k), float(a), int(e)) for c, k, a, e in zip(scored["CUSTOMER_ID"], scored["TERMINAL_ID"], scored["TX_AMOUNT"], epoch)]


def test_streamed_tiles_reach_v2_predictions(tmp_path, kafka_broker, unique):
    data = generate_transactions(n_customers=80, n_terminals=160, n_days=40, start_date="2018-04-01", radius=15.0, seed=5)
    offset = 20_000_000  # entities no other test on the shared broker uses
    for col in ("CUSTOMER_ID", "TERMINAL_ID", "TRANSACTION_ID"):
        data[col] = data[col] + offset
    history, scored = data.iloc[:-20], data.iloc[-20:]
    requests = requests_of(scored)

    settings = StreamingSettings(home=tmp_path, kafka_bootstrap=kafka_broker.bootstrap, group_id=f"e2e-{unique}", topic_prefix=f"{unique}-",
                                 metrics_port=0, offline_flush_s=0.5)
    store = apply_definitions(settings)
    produce_events(settings, to_events(history))
    StreamRunner(settings, store=store).run(idle_timeout_s=3, max_seconds=240)

    model_dir = make_model_dir(tmp_path / "registry" / "fraud-detector" / "1", version="1")
    # The server logs every prediction to Kafka; the engine lands them in the offline store.
    server = Server(tmp_path, tmp_path / "server.log", "--role", "all", "--model-name", "fraud-detector",
                    "--storage-uri", str(model_dir),
                    env={"RTML_KAFKA_BOOTSTRAP": kafka_broker.bootstrap,
                         "RTML_PREDICTION_LOG_TOPIC": settings.topic("predictions")}).wait_ready()
    try:
        client = httpclient.InferenceServerClient(server.url)
        before = score(client, scored, "e2e-1")
        # The engine now ingests the scored transactions themselves (and their labels), then they are scored again.
        produce_events(settings, to_events(scored))
        StreamRunner(settings, store=store).run(idle_timeout_s=3, max_seconds=120)
        after = score(client, scored, "e2e-2")
    finally:
        server.stop()

    want_before = reference_vectors(raw_events(history), requests)
    want_after = reference_vectors(raw_events(data), requests)  # earlier scored transactions are history to later ones
    assert (want_before[:, 3:] > 0).mean() > 0.8, "the scored entities have streamed history in their windows"
    np.testing.assert_allclose(before, reference_forward(model_dir, want_before.tolist()), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(after, reference_forward(model_dir, want_after.tolist()), rtol=1e-4, atol=1e-6)
    unchanged = (want_before == want_after).all(axis=1)  # no other scored transaction in a closed tile of theirs
    assert unchanged.sum() >= 10
    np.testing.assert_array_equal(after[unchanged], before[unchanged])  # its own tile written: still counted once

    StreamRunner(settings, store=store).run(idle_timeout_s=3, max_seconds=120)
    logged = read_table(settings.offline_path, "predictions")
    assert len(logged) == 2 * len(scored) and set(logged["request_id"]) == {"e2e-1", "e2e-2"}
    # The logged input vector is the one served, input by input.
    key = {(rid, r[0], r[3]): i for rid in ("e2e-1", "e2e-2") for i, r in enumerate(requests)}
    epochs = (pd.to_datetime(logged["tx_datetime"], utc=True) - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    for rid, cust, epoch, features, prob in zip(logged["request_id"], logged["customer_id"], epochs, logged["features"], logged["fraud_probability"]):
        i = key[(rid, int(cust), int(epoch))]
        served = json.loads(features) if isinstance(features, str) else features
        want = (want_before if rid == "e2e-1" else want_after)[i]
        np.testing.assert_allclose([served[name] for name in MODEL_INPUTS], want, rtol=1e-6)
        assert prob == pytest.approx(float((before if rid == "e2e-1" else after)[i]), rel=1e-6)
