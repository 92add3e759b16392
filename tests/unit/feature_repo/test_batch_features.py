"""Batch reference features: window math against a brute-force loop, the handbook's pandas recipe, entity snapshots."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import feature_repo.batch_features as bf
from feature_repo.aggregations import AGGREGATIONS, CUSTOMER_SPENDING, TERMINAL_RISK, EntityAggregation, Window
from feature_repo.batch_features import entity_features_at, transaction_features
from feature_repo.model_inputs import MODEL_INPUTS
from rtml.simulator import generate_transactions
from rtml_common.errors import InvalidInputError

START = pd.Timestamp("2018-04-01", tz="UTC")


def _frame(seconds, customers, terminals, amounts, frauds) -> pd.DataFrame:
    return pd.DataFrame({
        "TRANSACTION_ID": np.arange(len(seconds)) + 100,
        "TX_DATETIME": START + pd.to_timedelta(np.asarray(seconds, dtype=np.int64), unit="s"),
        "CUSTOMER_ID": customers,
        "TERMINAL_ID": terminals,
        "TX_AMOUNT": np.asarray(amounts, dtype=float),
        "TX_FRAUD": frauds,
    })


def _brute(agg: EntityAggregation, tx: pd.DataFrame, fraud: np.ndarray, entity: int, t: pd.Timestamp) -> dict[str, float]:
    """The window definition, read literally: entity's rows stamped in (t - L - D, t - D]."""
    out = {}
    names = agg.feature_names()
    ids = tx[agg.join_key.upper()].to_numpy()
    for i, w in enumerate(agg.windows):
        upper, lower = t - w.delay, t - w.delay - w.length
        inside = [j for j in range(len(tx)) if ids[j] == entity and lower < tx["TX_DATETIME"].iloc[j] <= upper]
        n = len(inside)
        if agg.kind == "count_avg":
            second = sum(tx["TX_AMOUNT"].iloc[j] for j in inside) / n if n else 0.0
        else:
            second = sum(fraud[j] for j in inside) / n if n else 0.0
        out[names[2 * i]], out[names[2 * i + 1]] = n, second
    return out


# Mostly half-day-granular seconds over ~45 days: many ties, and many rows exactly on a window edge
# (every length and delay is a multiple of 12 h), plus arbitrary seconds.
seconds = st.integers(0, 90).map(lambda s: s * 43200) | st.integers(0, 45 * 86400)
rows = st.lists(
    st.tuples(seconds, st.integers(0, 3), st.integers(0, 3), st.integers(1, 50_000), st.booleans()),
    min_size=1, max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=rows, use_labels=st.booleans())
def test_transaction_features_match_brute_force(rows, use_labels):
    secs, custs, terms, cents, frauds = zip(*sorted(rows))
    tx = _frame(np.array(secs), custs, terms, np.array(cents) / 100, np.array(frauds, dtype=int))
    labels = None
    fraud = tx["TX_FRAUD"].to_numpy()
    if use_labels:
        # Labels name a different fraud set than TX_FRAUD (every other transaction); it must win.
        labels = pd.DataFrame({"transaction_id": tx["TRANSACTION_ID"], "tx_fraud": np.arange(len(tx)) % 2})
        fraud = (np.arange(len(tx)) % 2).astype(float)
    got = transaction_features(tx, labels)
    assert list(got.columns) == ["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_DATETIME"] + MODEL_INPUTS
    for j in range(len(tx)):
        t = tx["TX_DATETIME"].iloc[j]
        for agg in AGGREGATIONS:
            want = _brute(agg, tx, fraud, tx[agg.join_key.upper()].iloc[j], t)
            for name, value in want.items():
                assert got[name].iloc[j] == pytest.approx(value, rel=1e-9, abs=1e-9), (name, j)


def test_matches_the_handbook_pandas_recipe():
    # The handbook: customer = right-closed time rolling; terminal = rolling(n + d) minus rolling(d).
    tx = generate_transactions(60, 150, 45, radius=14.0, seed=4)
    tx = tx.drop_duplicates(["CUSTOMER_ID", "TX_DATETIME"]).drop_duplicates(["TERMINAL_ID", "TX_DATETIME"])  # pandas splits ties
    got = transaction_features(tx).set_index("TRANSACTION_ID")
    delay = f"{TERMINAL_RISK.windows[0].delay.days}d"
    for _, g in tx.groupby("CUSTOMER_ID"):
        s = g.set_index("TX_DATETIME")["TX_AMOUNT"]
        for w in CUSTOMER_SPENDING.windows:
            n = s.rolling(f"{w.length.days}d").count().to_numpy()
            avg = s.rolling(f"{w.length.days}d").sum().to_numpy() / n
            assert np.array_equal(got.loc[g["TRANSACTION_ID"], f"customer_id_nb_tx_{w.suffix}"].to_numpy(), n)
            assert np.allclose(got.loc[g["TRANSACTION_ID"], f"customer_id_avg_amount_{w.suffix}"].to_numpy(), avg)
    for _, g in tx.groupby("TERMINAL_ID"):
        f = g.set_index("TX_DATETIME")["TX_FRAUD"]
        n_d, f_d = f.rolling(delay).count(), f.rolling(delay).sum()
        for w in TERMINAL_RISK.windows:
            span = f"{(w.length + w.delay).days}d"
            n = (f.rolling(span).count() - n_d).to_numpy()
            with np.errstate(invalid="ignore"):
                risk = np.nan_to_num((f.rolling(span).sum() - f_d).to_numpy() / n)
            assert np.array_equal(got.loc[g["TRANSACTION_ID"], f"terminal_id_nb_tx_{w.suffix}"].to_numpy(), n)
            assert np.allclose(got.loc[g["TRANSACTION_ID"], f"terminal_id_risk_{w.suffix}"].to_numpy(), risk)


@pytest.fixture(scope="module")
def sim_features():
    tx = generate_transactions(300, 600, 50, radius=10.0, seed=2)
    return tx, transaction_features(tx)


def test_handbook_invariants(sim_features):
    tx, f = sim_features
    assert len(f) == len(tx) and (f["TRANSACTION_ID"].to_numpy() == tx["TRANSACTION_ID"].to_numpy()).all()
    suffixes = [w.suffix for w in CUSTOMER_SPENDING.windows]
    for s in suffixes:
        assert (f[f"customer_id_nb_tx_{s}"] >= 1).all()  # the current transaction is always inside
        assert (f[f"customer_id_avg_amount_{s}"] > 0).all()
    for a, b in zip(suffixes, suffixes[1:]):
        assert (f[f"customer_id_nb_tx_{a}"] <= f[f"customer_id_nb_tx_{b}"]).all()
    for w in TERMINAL_RISK.windows:
        risk, n = f[f"terminal_id_risk_{w.suffix}"], f[f"terminal_id_nb_tx_{w.suffix}"]
        assert risk.between(0, 1).all() and (risk[n == 0] == 0).all()
    early = f["TX_DATETIME"] < START + TERMINAL_RISK.windows[0].delay
    assert (f.loc[early, "terminal_id_nb_tx_30day_window"] == 0).all()  # nothing is old enough yet
    assert f["terminal_id_risk_7day_window"].max() > 0
    assert f["tx_during_weekend"].isin([0, 1]).all() and f["tx_during_night"].isin([0, 1]).all()
    saturday = f["TX_DATETIME"].dt.weekday == 5
    assert (f.loc[saturday, "tx_during_weekend"] == 1).all()
    assert (f.loc[f["TX_DATETIME"].dt.hour == 6, "tx_during_night"] == 1).all()


def test_entity_snapshot_equals_features_at_last_transaction(sim_features):
    tx, f = sim_features
    customers, terminals = entity_features_at(tx)
    assert customers.index.name == "customer_id" and terminals.index.name == "terminal_id"
    assert set(customers.index) == set(tx["CUSTOMER_ID"]) and set(terminals.index) == set(tx["TERMINAL_ID"])
    for frame, agg in ((customers, CUSTOMER_SPENDING), (terminals, TERMINAL_RISK)):
        last = f.sort_values("TX_DATETIME", kind="stable").groupby(agg.join_key.upper()).tail(1).set_index(agg.join_key.upper())
        names = agg.feature_names()
        assert list(frame.columns) == names + ["event_timestamp"]
        assert (frame.loc[last.index, "event_timestamp"] == last["TX_DATETIME"]).all()
        assert np.allclose(frame.loc[last.index, names].to_numpy(float), last[names].to_numpy(float))


def test_entity_snapshot_as_of_and_unknown_entities(sim_features):
    tx, _ = sim_features
    terminal = int(tx["TERMINAL_ID"].iloc[0])
    later = tx["TX_DATETIME"].max() + timedelta(days=3)
    customers, terminals = entity_features_at(tx, as_of={"terminal_id": {terminal: later, 10_000_000: later}})
    want = _brute(TERMINAL_RISK, tx, tx["TX_FRAUD"].to_numpy(), terminal, later)
    for name, value in want.items():
        assert terminals.loc[terminal, name] == pytest.approx(value)
    assert (terminals.loc[10_000_000, TERMINAL_RISK.feature_names()] == 0).all()
    assert terminals.loc[terminal, "event_timestamp"] == later
    assert len(customers) == tx["CUSTOMER_ID"].nunique()


def test_windows_come_from_the_declaration(monkeypatch):
    # A different declaration (2-day window, 1-day delay) changes the answer without touching the code.
    agg = EntityAggregation("terminal", "terminal_id", "terminal_risk", "terminal_id", "count_risk", (Window(timedelta(days=2), timedelta(days=1)),))
    monkeypatch.setattr(bf, "AGGREGATIONS", (CUSTOMER_SPENDING, agg))
    hours = [0, 10, 30, 50, 60, 75]
    tx = _frame(np.array(hours) * 3600, [1] * 6, [7] * 6, [10.0] * 6, [1, 0, 1, 0, 0, 0])
    _, terminals = entity_features_at(tx)
    # At t = 75 h the window is (75 - 72, 75 - 24] = (3 h, 51 h]: the rows at 10, 30 and 50 h, one fraud.
    assert terminals.loc[7, "terminal_id_nb_tx_2day_window"] == 3
    assert terminals.loc[7, "terminal_id_risk_2day_window"] == pytest.approx(1 / 3)


def test_labels_without_required_columns_are_rejected(sim_features):
    tx, _ = sim_features
    with pytest.raises(InvalidInputError, match="transaction_id"):
        transaction_features(tx.iloc[:10], pd.DataFrame({"id": [1]}))
