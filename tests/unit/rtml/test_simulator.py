"""Simulator: the handbook's generation and fraud rules, determinism, event encoding/ordering, replay pacing, dataset I/O."""

from __future__ import annotations

import json
import re
import time
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from rtml.simulator import (
    COLUMNS,
    LABELS_TOPIC,
    TRANSACTIONS_TOPIC,
    TokenBucket,
    generate_transactions,
    load_dataset,
    produce_events,
    save_dataset,
    shift_to,
    simulate,
    to_events,
)
from rtml_common.errors import InvalidInputError, NotFoundError
from rtml_common.kafka import json_bytes
from rtml_common.settings import KafkaSettings

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def sim():
    # 600 terminals with r = 10 gives ~19 terminals per customer, like a sparse book run.
    return simulate(n_customers=300, n_terminals=600, n_days=60, start_date="2018-04-01", radius=10.0, seed=1)


@pytest.fixture(scope="module")
def tx(sim):
    return sim.transactions


def test_columns_ids_and_time_helpers(tx):
    assert list(tx.columns) == COLUMNS
    assert str(tx["TX_DATETIME"].dt.tz) == "UTC"
    assert (tx["TRANSACTION_ID"].to_numpy() == np.arange(len(tx))).all()
    assert tx["TX_DATETIME"].is_monotonic_increasing
    start = pd.Timestamp("2018-04-01", tz="UTC")
    secs = (tx["TX_DATETIME"] - start).dt.total_seconds().astype(np.int64)
    assert (secs == tx["TX_TIME_SECONDS"]).all()
    assert (tx["TX_TIME_DAYS"] == tx["TX_TIME_SECONDS"] // 86400).all()
    tod = tx["TX_TIME_SECONDS"] % 86400
    assert tod.min() > 0 and tod.max() < 86400
    assert tx["TX_TIME_DAYS"].between(0, 59).all()


def test_amounts_are_positive_and_rounded(tx):
    a = tx["TX_AMOUNT"].to_numpy()
    assert (a >= 0).all()
    assert np.allclose(np.round(a * 100), a * 100, atol=1e-6)


def test_terminals_are_within_radius_of_their_customer(sim):
    t = sim.transactions.merge(sim.customers, on="CUSTOMER_ID").merge(sim.terminals, on="TERMINAL_ID")
    dist = np.hypot(t["x_customer_id"] - t["x_terminal_id"], t["y_customer_id"] - t["y_terminal_id"])
    assert (dist < 10.0).all()
    isolated = set(sim.customers.loc[sim.customers["nb_terminals"] == 0, "CUSTOMER_ID"])
    assert not isolated & set(sim.transactions["CUSTOMER_ID"])


def test_scenario_1_every_amount_over_220_is_fraud(tx):
    assert (tx.loc[tx["TX_AMOUNT"] > 220, "TX_FRAUD"] == 1).all()
    assert (tx.loc[tx["TX_FRAUD_SCENARIO"] == 1, "TX_AMOUNT"] > 220).all()
    assert ((tx["TX_FRAUD"] == 1) == (tx["TX_FRAUD_SCENARIO"] > 0)).all()


def test_scenario_2_compromised_terminals_are_fraud_for_28_days(sim, tx):
    assert sim.compromised_terminals.shape == (59, 2)
    covered = np.zeros(len(tx), bool)
    for d, terms in enumerate(sim.compromised_terminals):
        window = tx["TERMINAL_ID"].isin(terms) & (tx["TX_TIME_DAYS"] >= d) & (tx["TX_TIME_DAYS"] < d + 28)
        assert (tx.loc[window, "TX_FRAUD"] == 1).all()
        assert tx.loc[window, "TX_FRAUD_SCENARIO"].isin([2, 3]).all()  # scenario 3 may overwrite later
        covered |= window.to_numpy()
    assert covered[(tx["TX_FRAUD_SCENARIO"] == 2).to_numpy()].all()
    assert covered.sum() > 0


def test_scenario_3_a_third_of_compromised_customer_transactions(sim, tx):
    assert sim.compromised_customers.shape == (59, 3)
    covered = np.zeros(len(tx), bool)
    for d, custs in enumerate(sim.compromised_customers):
        window = (tx["CUSTOMER_ID"].isin(custs) & (tx["TX_TIME_DAYS"] >= d) & (tx["TX_TIME_DAYS"] < d + 14)).to_numpy()
        assert (tx.loc[window, "TX_FRAUD"] == 1).sum() >= window.sum() // 3
        covered |= window
    s3 = (tx["TX_FRAUD_SCENARIO"] == 3).to_numpy()
    assert covered[s3].all() and s3.sum() > 0


def test_scenario_3_multiplies_amounts_by_five():
    # Same seed, so the same legitimate draws; the fraud amounts are 5^k times their customer's usual spend.
    sim = simulate(n_customers=200, n_terminals=400, n_days=40, radius=10.0, seed=3)
    t = sim.transactions.merge(sim.customers[["CUSTOMER_ID", "mean_amount"]], on="CUSTOMER_ID")
    s3 = t[t["TX_FRAUD_SCENARIO"] == 3]
    legit = t[t["TX_FRAUD"] == 0]
    assert (s3["TX_AMOUNT"] / s3["mean_amount"]).median() > 3 * (legit["TX_AMOUNT"] / legit["mean_amount"]).median()


def test_same_seed_same_rows_other_seed_other_rows():
    a = generate_transactions(100, 200, 10, radius=10.0, seed=7)
    b = generate_transactions(100, 200, 10, radius=10.0, seed=7)
    c = generate_transactions(100, 200, 10, radius=10.0, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) != len(c) or not a["TX_AMOUNT"].equals(c["TX_AMOUNT"])


def test_book_density_statistics():
    # Book density (5000 customers, 10000 terminals, r = 5) over 30 days.
    sim = simulate(5000, 10000, 30, radius=5.0, seed=0)
    per_day = len(sim.transactions) / 30
    assert 9200 < per_day < 10200  # 5000 * E[U(0,4)] * P(0 < N(43200, 20000) < 86400) ~ 9690
    assert 70 < sim.customers["nb_terminals"].mean() < 86  # pi * 25 * 1 terminal per unit area ~ 78
    tod = sim.transactions["TX_TIME_SECONDS"] % 86400
    assert abs(tod.mean() - 43200) < 300


def test_invalid_sizes_are_rejected():
    with pytest.raises(InvalidInputError, match="n_days"):
        generate_transactions(10, 10, 0)
    with pytest.raises(InvalidInputError, match="radius"):
        generate_transactions(10, 10, 5, radius=0)


def _frame(rows):
    df = pd.DataFrame(rows, columns=["TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD"])
    df["TX_DATETIME"] = pd.to_datetime(df["TX_DATETIME"], utc=True)
    df.insert(0, "TRANSACTION_ID", np.arange(len(df)))
    return df


def test_events_encode_transactions_and_labels(tx):
    small = tx.iloc[:3000]
    events = list(to_events(small, chunk=700))
    txs = [e for e in events if e.topic == TRANSACTIONS_TOPIC]
    labels = [e for e in events if e.topic == LABELS_TOPIC]
    assert len(txs) == len(small) and len(labels) == int(small["TX_FRAUD"].sum()) > 0
    by_id = small.set_index("TRANSACTION_ID")
    for e in txs[:200] + txs[-5:]:
        row = by_id.loc[e.value["transaction_id"]]
        assert set(e.value) == {"transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_amount"}
        assert e.key == str(row["CUSTOMER_ID"]).encode()
        assert ISO.match(e.value["tx_datetime"])
        assert pd.Timestamp(e.value["tx_datetime"]) == row["TX_DATETIME"]
        assert e.value["tx_amount"] == row["TX_AMOUNT"] and e.value["terminal_id"] == row["TERMINAL_ID"]
        assert json.loads(json_bytes(e.value)) == e.value  # JSON round trip keeps every field and type
    for e in labels:
        row = by_id.loc[e.value["transaction_id"]]
        assert e.key == str(row["TERMINAL_ID"]).encode()
        assert e.value["tx_fraud"] == 1 and e.value["customer_id"] == row["CUSTOMER_ID"]
        assert pd.Timestamp(e.value["label_datetime"]) == row["TX_DATETIME"] + timedelta(days=7)
        assert e.event_time == pd.Timestamp(e.value["label_datetime"])
    times = [e.event_time for e in events]
    assert times == sorted(times)


def test_all_labels_and_custom_delay(tx):
    small = tx.iloc[:500]
    events = list(to_events(small, label_delay=timedelta(hours=1), all_labels=True))
    labels = [e for e in events if e.topic == LABELS_TOPIC]
    assert len(labels) == len(small)
    assert {e.value["tx_fraud"] for e in labels} == set(small["TX_FRAUD"].unique())
    first = labels[0]
    assert pd.Timestamp(first.value["label_datetime"]) - pd.Timestamp(first.value["tx_datetime"]) == timedelta(hours=1)


def test_labels_precede_transactions_at_equal_event_time():
    df = _frame([("2018-04-01 10:00:00", 1, 5, 10.0, 1), ("2018-04-08 10:00:00", 2, 5, 20.0, 0), ("2018-04-08 10:00:00", 3, 6, 30.0, 0)])
    events = list(to_events(df))
    assert [(e.topic, e.value["transaction_id"]) for e in events] == [
        (TRANSACTIONS_TOPIC, 0), (LABELS_TOPIC, 0), (TRANSACTIONS_TOPIC, 1), (TRANSACTIONS_TOPIC, 2)]


def test_shift_to_moves_first_day_and_keeps_gaps(tx):
    shifted = shift_to(tx, "2026-01-05")
    assert shifted["TX_DATETIME"].min().normalize() == pd.Timestamp("2026-01-05", tz="UTC")
    assert (shifted["TX_DATETIME"].diff() == tx["TX_DATETIME"].diff()).iloc[1:].all()
    assert shifted["TX_DATETIME"].iloc[0].time() == tx["TX_DATETIME"].iloc[0].time()
    assert tx["TX_DATETIME"].min().year == 2018  # the input is untouched


def test_dataset_round_trips(tmp_path, tx):
    small = tx.iloc[:400]
    p = save_dataset(small, tmp_path / "d" / "tx.parquet")
    pd.testing.assert_frame_equal(load_dataset(p), small.reset_index(drop=True))
    small.to_csv(tmp_path / "tx.csv", index=False)
    pd.testing.assert_frame_equal(load_dataset(tmp_path / "tx.csv"), small.reset_index(drop=True))


def test_load_handbook_daily_pickles(tmp_path, tx):
    # The handbook stores one naive-datetime pickle per day, named YYYY-MM-DD.pkl.
    raw = tmp_path / "raw"
    raw.mkdir()
    small = tx.iloc[:1000].copy()
    small["TX_DATETIME"] = small["TX_DATETIME"].dt.tz_localize(None)
    for day, part in small.groupby(small["TX_DATETIME"].dt.date):
        part.to_pickle(raw / f"{day}.pkl")
    loaded = load_dataset(raw)
    assert str(loaded["TX_DATETIME"].dt.tz) == "UTC"
    pd.testing.assert_frame_equal(loaded, tx.iloc[:1000].reset_index(drop=True))


def test_load_fills_helpers_and_names_missing_columns(tmp_path):
    df = _frame([("2018-04-02 10:00:00", 1, 5, 10.0, 0), ("2018-04-01 09:00:00", 2, 6, 20.0, 1)]).drop(columns="TRANSACTION_ID")
    df.to_parquet(tmp_path / "a.parquet")
    loaded = load_dataset(tmp_path / "a.parquet")
    assert list(loaded.columns) == COLUMNS
    assert loaded["TX_TIME_SECONDS"].tolist() == [9 * 3600, 86400 + 10 * 3600]
    assert loaded["TX_TIME_DAYS"].tolist() == [0, 1] and loaded["TRANSACTION_ID"].tolist() == [0, 1]
    df.drop(columns="TX_FRAUD").to_parquet(tmp_path / "b.parquet")
    with pytest.raises(InvalidInputError, match="TX_FRAUD"):
        load_dataset(tmp_path / "b.parquet")
    with pytest.raises(NotFoundError):
        load_dataset(tmp_path / "nope.parquet")
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(InvalidInputError, match="x.txt"):
        load_dataset(tmp_path / "x.txt")


class _FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps = 0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps += 1
        self.now += s


@pytest.mark.parametrize("rate", [5.0, 1000.0, 50_000.0])
def test_token_bucket_paces_to_rate_without_sleeping_per_event(rate):
    clock = _FakeClock()
    bucket = TokenBucket(rate, clock=clock, sleep=clock.sleep)
    n = int(rate * 3)
    for _ in range(n):
        bucket.acquire()
    expected = (n - bucket.capacity) / rate
    assert expected - 1e-9 <= clock.now <= expected + TokenBucket.MIN_SLEEP_S + 1.0 / rate
    assert clock.sleeps <= 3 / TokenBucket.MIN_SLEEP_S + 3  # batched naps, never one per event at high rates
    with pytest.raises(InvalidInputError):
        TokenBucket(0)


class _FakeProducer:
    """Stands in for a KafkaProducer in the pacing test only; it records what it is given."""

    def __init__(self):
        self.sent: list[tuple[str, bytes, bytes, float]] = []
        self.flushed = False

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value, time.monotonic()))

    def flush(self):
        self.flushed = True


def test_produce_events_rate_limit_and_limit(tx):
    producer = _FakeProducer()
    events = to_events(tx)
    start = time.monotonic()
    n = produce_events(KafkaSettings(), events, rate=1000.0, limit=300, producer=producer)
    elapsed = time.monotonic() - start
    assert n == 300 and len(producer.sent) == 300 and producer.flushed
    assert elapsed >= (300 - 100) / 1000.0 - 0.01  # the first 100 ms of events may burst
    topic, key, value, _ = producer.sent[0]
    assert topic == TRANSACTIONS_TOPIC and key == str(tx["CUSTOMER_ID"].iloc[0]).encode()
    assert json.loads(value)["transaction_id"] == 0
    fast = _FakeProducer()
    assert produce_events(KafkaSettings(), to_events(tx.iloc[:50]), producer=fast) == 50 + int(tx["TX_FRAUD"].iloc[:50].sum())
    with pytest.raises(InvalidInputError, match="limit"):
        produce_events(KafkaSettings(), [], limit=-1, producer=fast)


def test_events_pass_the_declared_source_schemas(tx):
    # Contract with the streaming engine: what the simulator writes, the engine's decoder accepts unchanged.
    from feature_repo.sources import SOURCES
    from streaming.validation import decode_event

    by_topic = {s.topic: s for s in SOURCES}
    seen = set()
    for e in to_events(tx.iloc[:2000], all_labels=True):
        decoded = decode_event(by_topic[e.topic], json_bytes(e.value))
        assert decoded["transaction_id"] == e.value["transaction_id"]
        assert decoded["tx_datetime"] == pd.Timestamp(e.value["tx_datetime"]).timestamp()
        assert e.key == str(e.value[by_topic[e.topic].key_field]).encode()
        seen.add(e.topic)
    assert seen == {TRANSACTIONS_TOPIC, LABELS_TOPIC}
