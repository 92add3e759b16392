"""The walking skeleton end to end: Kafka -> streaming engine -> Feast -> KServe V2 (tritonclient).

Real broker, real Feast SQLite store, real model server process; the expected score is the
model's own forward pass on features recomputed in batch from the same simulated events.
"""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient

from feature_repo.batch_features import entity_features_at
from feature_repo.offline_log import read_table
from feature_repo.model_inputs import CUSTOMER_FEATURES, TERMINAL_FEATURES, calendar_features, fold_current_transaction
from feature_repo.store import apply_definitions
from rtml.simulator import generate_transactions, produce_events, to_events
from streaming.runner import StreamRunner
from streaming.settings import StreamingSettings
from tests.integration.inference_fixtures import Server, make_model_dir, reference_forward

pytestmark = pytest.mark.integration


def test_streamed_features_reach_v2_predictions(tmp_path, kafka_broker, unique):
    data = generate_transactions(n_customers=80, n_terminals=160, n_days=40, start_date="2018-04-01", radius=15.0, seed=5)
    offset = 20_000_000  # entities no other test on the shared broker uses
    for col in ("CUSTOMER_ID", "TERMINAL_ID", "TRANSACTION_ID"):
        data[col] = data[col] + offset
    history, scored = data.iloc[:-20], data.iloc[-20:]

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
        n = len(scored)
        inputs = []
        for name, dtype, values in [
            ("customer_id", "INT64", scored["CUSTOMER_ID"].to_numpy(np.int64)),
            ("terminal_id", "INT64", scored["TERMINAL_ID"].to_numpy(np.int64)),
            ("tx_amount", "FP64", scored["TX_AMOUNT"].to_numpy(np.float64)),
            ("tx_datetime", "INT64", (scored["TX_DATETIME"].astype("int64") // 10**9).to_numpy(np.int64)),
        ]:
            inp = httpclient.InferInput(name, [n], dtype)
            inp.set_data_from_numpy(values, binary_data=False)
            inputs.append(inp)
        result = client.infer("fraud-detector", inputs, request_id="e2e-1")
        assert result.get_response()["id"] == "e2e-1"
        got = result.as_numpy("fraud_probability")
    finally:
        server.stop()

    # Expected: what the engine must have written (batch recomputation of the streamed history),
    # with the scored transaction folded into the customer windows, through the model itself.
    cust, term = entity_features_at(history)
    c = cust.reindex(scored["CUSTOMER_ID"])[CUSTOMER_FEATURES].to_numpy(float)
    t = term.reindex(scored["TERMINAL_ID"])[TERMINAL_FEATURES].to_numpy(float)
    assert not np.isnan(c).any() and not np.isnan(t).any(), "every scored entity has streamed features"
    amount = scored["TX_AMOUNT"].to_numpy(float)
    counts, avgs = fold_current_transaction(c[:, 0::2], c[:, 1::2], amount[:, None])
    c[:, 0::2], c[:, 1::2] = counts, avgs
    weekend, night = calendar_features(scored["TX_DATETIME"].astype("int64").to_numpy() // 10**9)
    rows = np.column_stack([amount, weekend, night, c, t]).astype(np.float32)
    np.testing.assert_allclose(got, reference_forward(model_dir, rows.tolist()), rtol=1e-4, atol=1e-6)

    StreamRunner(settings, store=store).run(idle_timeout_s=3, max_seconds=120)
    logged = read_table(settings.offline_path, "predictions")
    assert len(logged) == n and set(logged["request_id"]) == {"e2e-1"}
    np.testing.assert_allclose(np.sort(logged["fraud_probability"].to_numpy()), np.sort(got), rtol=1e-6)
    assert sorted(logged["customer_id"]) == sorted(scored["CUSTOMER_ID"])
