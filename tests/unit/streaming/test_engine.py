"""The engine's per-event feature rows equal the batch (pandas) recomputation exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from feature_repo.batch_features import entity_features_at, transaction_features
from feature_repo.model_inputs import CUSTOMER_FEATURES, TERMINAL_FEATURES
from feature_repo.sources import SOURCES
from rtml.simulator import generate_transactions, to_events
from streaming.engine import FeatureEngine
from streaming.validation import decode_event

SOURCE_BY_TOPIC = {s.topic: s for s in SOURCES}


@pytest.fixture(scope="module")
def small():
    return generate_transactions(n_customers=60, n_terminals=120, n_days=50, start_date="2018-04-01", radius=15.0, seed=3)


def run_engine(df, engine=None, events=None):
    engine = engine or FeatureEngine()
    offline: dict = {}
    for ev in events if events is not None else to_events(df):
        source = SOURCE_BY_TOPIC[ev.topic]
        engine.apply(source.name, decode_event(source, json.dumps(ev.value).encode()), offline)
    return engine, offline


def test_offline_rows_equal_batch_features(small, windows):
    engine, offline = run_engine(small, FeatureEngine(windows=windows))
    batch = transaction_features(small).set_index("TRANSACTION_ID")
    cust = engine.offline_frame(offline["customer_spending"])
    assert len(cust) == len(small)
    tx_ids = engine.offline_frame(offline["transactions"])["transaction_id"].to_numpy()
    cust.index = tx_ids
    np.testing.assert_allclose(cust[CUSTOMER_FEATURES].to_numpy(float), batch.loc[tx_ids, CUSTOMER_FEATURES].to_numpy(float), rtol=1e-9)
    term = engine.offline_frame(offline["terminal_risk"])
    term.index = tx_ids
    np.testing.assert_allclose(term[TERMINAL_FEATURES].to_numpy(float), batch.loc[tx_ids, TERMINAL_FEATURES].to_numpy(float), rtol=1e-9)


def test_online_rows_equal_batch_final_state_and_replay_is_idempotent(small, windows):
    events = list(to_events(small))
    engine, _ = run_engine(small, FeatureEngine(windows=windows), events=events)
    run_engine(small, engine=engine, events=events[: len(events) // 2])  # at-least-once replay
    online = engine.drain_online()
    cust_batch, term_batch = entity_features_at(small)
    cust = pd.DataFrame(online["customer_spending"]).set_index("customer_id").sort_index()
    np.testing.assert_allclose(cust[CUSTOMER_FEATURES].to_numpy(float), cust_batch.loc[cust.index, CUSTOMER_FEATURES].to_numpy(float), rtol=1e-9)
    term = pd.DataFrame(online["terminal_risk"]).set_index("terminal_id").sort_index()
    assert set(term.index) == set(term_batch.index)
    np.testing.assert_allclose(term[TERMINAL_FEATURES].to_numpy(float), term_batch.loc[term.index, TERMINAL_FEATURES].to_numpy(float), rtol=1e-9)


def test_online_values_reuse_the_newest_row_only_while_nothing_else_changed(windows):
    from feature_repo.aggregations import AGGREGATIONS

    def tx(i, t, amount, customer=1, terminal=2):
        return {"transaction_id": i, "tx_datetime": t, "customer_id": customer, "terminal_id": terminal, "tx_amount": amount}

    day = 86400.0
    engine = FeatureEngine(windows=windows)
    engine.apply("transactions", tx(3, 2 * day, 50.0, customer=3))
    engine.apply("transactions", tx(2, 10 * day - 60, 30.0))
    engine.apply("transactions", tx(1, 10 * day, 10.0))  # the newest of customer 1 and terminal 2
    engine.apply("transactions", tx(4, 10 * day - 30, 20.0, terminal=5))  # older than customer 1's newest: its row is stale
    engine.apply("fraud_labels", {**tx(3, 2 * day, 50.0, customer=3), "tx_fraud": 1, "label_datetime": 9.5 * day})
    drained = engine.drain_online()
    for agg in AGGREGATIONS:
        for row in drained[agg.feature_view]:
            st = engine.state[agg.feature_view][row[agg.join_key]]
            want = windows.features_at(st, st.last_event_time, agg)
            assert {k: row[k] for k in want} == want
    customer = {r["customer_id"]: r for r in drained["customer_spending"]}[1]
    assert customer["customer_id_nb_tx_1day_window"] == 3 and customer["customer_id_avg_amount_1day_window"] == 20.0
    terminal = {r["terminal_id"]: r for r in drained["terminal_risk"]}[2]  # its newest row predates the label
    assert terminal["terminal_id_nb_tx_7day_window"] == 1 and terminal["terminal_id_risk_7day_window"] == 1.0
