"""One definition, three executions: the numpy reference, the DuckDB builder and the online tile merge agree.

A naive loop written here straight from the semantics in ``feature_repo.aggregations`` is the
judge: hypothesis draws small event sets (duplicates, labels on time, late, without known time,
several per event, for events never logged, events exactly on tile boundaries, string keys) and
every feature of ``feature_repo.batch_features`` and ``components.dataset`` must equal it.
"""

from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import components.dataset as duck
import feature_repo.batch_features as bf
from feature_repo.aggregations import (
    AGGREGATIONS, CUSTOMER_SPENDING, TERMINAL_RISK, AggregationInput, EntityAggregation, Feature, Window, _us,
)
from feature_repo.model_inputs import MODEL_INPUTS
from feature_repo.tiles import TileLayout
from rtml.simulator import generate_transactions
from rtml_common.errors import InvalidInputError

H = timedelta(hours=1)
H_US, DAY_US = 3_600_000_000, 86_400_000_000
T0 = int(pd.Timestamp("2018-04-01", tz="UTC").value // 1000)
EVENTS = AggregationInput("transactions", "event")
LABELS = AggregationInput("fraud_labels", "label", value_field="tx_fraud", known_field="label_datetime")
# Every function, windows with and without delay, a string key; times in hours.
SMALL = (
    EntityAggregation("customer", "customer_id", "c", (Window(H), Window(3 * H), Window(2 * H, H)),
                      tuple(Feature(f"c_{fn}_{{window}}", fn, None if fn == "count" else "tx_amount")
                            for fn in ("count", "sum", "mean", "min", "max")), (EVENTS,), key_type="str"),
    EntityAggregation("terminal", "terminal_id", "t", (Window(H, H), Window(3 * H, 2 * H)),
                      (Feature("t_n_{window}", "count"), Feature("t_risk_{window}", "ratio"),
                       Feature("t_max_{window}", "max", "tx_amount")),
                      (EVENTS, LABELS), label_delay=H),
)


def us(ts) -> np.ndarray:
    return bf.utc_us(ts)


def naive(agg: EntityAggregation, tx: pd.DataFrame, labels: pd.DataFrame, key, t: int, current: dict | None) -> dict[str, float]:
    """The module docstring of feature_repo.aggregations, read literally, for one query."""
    tile, delay = _us(agg.tile), _us(agg.label_delay)
    events = {}  # (id, time) -> the event: a duplicate counts once
    for r in tx.itertuples(index=False):
        events[(r.transaction_id, int(us([r.tx_datetime])[0]))] = r
    positive = set()  # labels of one event count once
    for r in labels.itertuples(index=False):
        e = int(us([r.tx_datetime])[0])
        known = e if pd.isna(r.label_datetime) else int(us([r.label_datetime])[0])
        if r.tx_fraud == 1 and known <= e + delay:
            positive.add((getattr(r, agg.join_key), r.transaction_id, e))
    out = {}
    for w in agg.windows:
        end = math.floor((t - _us(w.delay)) / tile) * tile
        start = end - _us(w.length)
        inside = [r for (i, e), r in events.items() if getattr(r, agg.join_key) == key and start <= e < end]
        values = [float(r.tx_amount) for r in inside]
        if current is not None and w.delay == timedelta(0):
            values.append(float(current["tx_amount"]))
        n = len(values)
        labelled = sum(1 for (k, _, e) in positive if k == key and start <= e < end)
        for f in agg.features:
            v = {"count": n, "sum": sum(values), "mean": sum(values) / n if n else 0, "min": min(values, default=0),
                 "max": max(values, default=0), "ratio": labelled / n if n else 0}[f.function]
            out[f.name.format(window=w.suffix)] = float(v) if n else 0.0
    return out


def raw_frames(rows, label_rows, str_keys: bool, scale_us: int, label_delay_us: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Transactions and labels as the offline log holds them, from drawn tuples (duplicates repeat rows)."""
    tx = pd.DataFrame([{"transaction_id": 100 + i, "tx_datetime": pd.Timestamp((T0 + t * scale_us // 4 + jitter) * 1000, tz="UTC"),
                        "customer_id": f"c{c}" if str_keys else c, "terminal_id": k, "tx_amount": cents / 100}
                       for i, (t, jitter, c, k, cents, _) in enumerate(rows)])
    tx = pd.concat([tx] + [tx.iloc[[i]] for i, r in enumerate(rows) if r[5]], ignore_index=True)  # replays
    tx["event_timestamp"] = tx["tx_datetime"]
    labs = []
    for target, orphan, copies, terminal in label_rows:
        if not orphan:
            ev = tx.iloc[target % len(rows)]
            when, term, tid = ev["tx_datetime"], int(ev["terminal_id"]), int(ev["transaction_id"])
        else:  # a label of an event that never reached the log
            when, term, tid = pd.Timestamp((T0 + target * scale_us // 4) * 1000, tz="UTC"), terminal, 10_000 + target
        for value, known in copies:  # several labels of one event: replays, corrections, late ones
            delay = {"none": None, "at_once": 0, "on_time": label_delay_us, "late": label_delay_us + 1}[known]
            labs.append({"transaction_id": tid, "tx_datetime": when, "customer_id": "c0" if str_keys else 0, "terminal_id": term,
                         "tx_fraud": value, "label_datetime": None if delay is None else when + pd.Timedelta(microseconds=delay)})
    labels = pd.DataFrame(labs, columns=["transaction_id", "tx_datetime", "customer_id", "terminal_id", "tx_fraud", "label_datetime"])
    labels["label_datetime"] = pd.to_datetime(labels["label_datetime"], utc=True)
    labels["tx_datetime"] = pd.to_datetime(labels["tx_datetime"], utc=True)
    labels["event_timestamp"] = labels["label_datetime"].fillna(labels["tx_datetime"])
    return tx, labels


def events_strategy(n_quarters: int):
    """Times in quarter tiles (many exactly on a tile boundary), a jitter in microseconds, keys, cents, replayed?"""
    quarter = st.integers(0, n_quarters)
    return st.lists(st.tuples(quarter, st.sampled_from([0, 0, 0, 1, 17]), st.integers(0, 3), st.integers(0, 2),
                              st.integers(1, 50_000), st.booleans()), min_size=1, max_size=30)


label_copies = st.lists(st.tuples(st.sampled_from([0, 1, 1]), st.sampled_from(["none", "at_once", "on_time", "on_time", "late"])),
                        min_size=1, max_size=3)
# (target event, orphan: a label of an event never logged (1 in 10), its copies, the orphan's terminal)
labels_strategy = st.lists(st.tuples(st.integers(0, 40), st.sampled_from([False] * 9 + [True]), label_copies, st.integers(0, 2)),
                           max_size=20)


def check_three_ways(aggs, tx: pd.DataFrame, labels: pd.DataFrame) -> None:
    got_np = pd.DataFrame(bf.event_features(tx, labels, aggs))
    got_np["t_us"], got_np["transaction_id"] = us(tx["tx_datetime"]), tx["transaction_id"].to_numpy()
    got_np = got_np.drop_duplicates(["transaction_id", "t_us"]).set_index(["transaction_id", "t_us"]).sort_index()
    got_db = duck.event_features({"transactions": tx, "fraud_labels": labels}, aggs).set_index(["transaction_id", "t_us"]).sort_index()
    assert list(got_db.index) == list(got_np.index)  # one row per (id, time)
    first = tx.drop_duplicates(["transaction_id", "tx_datetime"]).set_index("transaction_id")
    for (tid, t), row in got_np.iterrows():
        ev = first.loc[tid]
        for agg in aggs:
            want = naive(agg, tx, labels, ev[agg.join_key], int(t), {"tx_amount": ev["tx_amount"]})
            for name, value in want.items():
                assert row[name] == pytest.approx(value, rel=1e-9, abs=1e-12), ("numpy", name, tid)
                assert got_db.loc[(tid, t), name] == pytest.approx(value, rel=1e-9, abs=1e-12), ("duckdb", name, tid)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=events_strategy(4 * 12), label_rows=labels_strategy, str_keys=st.booleans())
def test_small_windows_every_function_three_ways(rows, label_rows, str_keys):
    aggs = SMALL if str_keys else (SMALL[1],)  # the string-keyed customer aggregation needs string keys
    tx, labels = raw_frames(rows, label_rows, str_keys, H_US, _us(SMALL[1].label_delay))
    check_three_ways(aggs, tx, labels)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=events_strategy(4 * 24 * 45), label_rows=labels_strategy)
def test_declared_aggregations_three_ways(rows, label_rows):
    # Quarter days over 45 days: every window length and the 7-day delay are whole multiples of it.
    tx, labels = raw_frames(rows, label_rows, False, DAY_US, _us(TERMINAL_RISK.label_delay))
    check_three_ways(AGGREGATIONS, tx, labels)


def online_tiles(layout: TileLayout, tx: pd.DataFrame, labels: pd.DataFrame) -> dict:
    """What the engine folds: per entity, tile -> IRs, each event once, each on-time positive label once."""
    agg, tiles, seen, marked = layout.agg, {}, set(), set()
    for r in tx.itertuples(index=False):
        t = int(us([r.tx_datetime])[0])
        if (r.transaction_id, t) in seen:
            continue
        seen.add((r.transaction_id, t))
        ir = tiles.setdefault(getattr(r, agg.join_key), {}).setdefault(layout.tile_of(t), layout.empty())
        layout.add_event(ir, {"tx_amount": r.tx_amount})
    if layout.labels_index is not None:
        for r in labels.itertuples(index=False):
            t = int(us([r.tx_datetime])[0])
            known = None if pd.isna(r.label_datetime) else int(us([r.label_datetime])[0])
            key = getattr(r, agg.join_key)
            if r.tx_fraud == 1 and layout.label_counts(t, known) and (key, r.transaction_id, t) not in marked:
                marked.add((key, r.transaction_id, t))
                ir = tiles.setdefault(key, {}).setdefault(layout.tile_of(t), layout.empty())
                ir[layout.labels_index] += 1.0
    return tiles


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=events_strategy(4 * 24 * 45), label_rows=labels_strategy,
       offsets=st.lists(st.integers(-2 * DAY_US, 40 * DAY_US), min_size=1, max_size=6))
def test_duckdb_builder_equals_the_online_tile_merge(rows, label_rows, offsets):
    """The same-definition guarantee: training features = the transformer's merge of the engine's tiles."""
    tx, labels = raw_frames(rows, label_rows, False, DAY_US, _us(TERMINAL_RISK.label_delay))
    tables = {"transactions": tx, "fraud_labels": labels}
    t = us(tx["tx_datetime"])
    # Requests: each transaction at its own time (it is the current event), then entity states at later times.
    scored = tx.assign(t_us=t)
    states = pd.concat([tx.assign(t_us=t + o) for o in offsets], ignore_index=True)
    for queries, current in ((scored, True), (states, False)):
        db = duck.features_at(tables, queries, AGGREGATIONS, current=current)
        for agg in AGGREGATIONS:
            layout = TileLayout(agg)
            tiles = online_tiles(layout, tx, labels)
            blobs = [layout.encode(tiles.get(k, {})) for k in queries[agg.join_key]]
            cur = {"tx_amount": queries["tx_amount"].to_numpy(np.float64)} if current else None
            online = layout.features(blobs, queries["t_us"].to_numpy(np.int64), cur)
            np.testing.assert_allclose(db[list(layout.names)].to_numpy(np.float64), online, rtol=1e-9, atol=1e-12)


def test_copies_that_differ_keep_the_same_copy_in_both_builders():
    # Transaction 1 logged twice with different contents: the copy with the smaller join keys (customer 4) is kept.
    at = pd.to_datetime([T0 * 1000] * 3 + [(T0 + 2 * H_US) * 1000], utc=True)
    tx = pd.DataFrame({"transaction_id": [1, 1, 2, 3], "tx_datetime": at, "customer_id": [5, 4, 4, 4], "terminal_id": 1,
                       "tx_amount": [10.0, 30.0, 20.0, 20.0]}).assign(event_timestamp=at)
    no_labels = pd.DataFrame({"transaction_id": [], "tx_fraud": []})
    for frame in (tx, tx.iloc[::-1]):
        query = frame[frame["transaction_id"] == 3].assign(t_us=T0 + 2 * H_US)
        db = duck.features_at({"transactions": frame, "fraud_labels": no_labels}, query, current=True)
        ref = bf.transaction_features(frame, no_labels).set_index("TRANSACTION_ID")
        for got in (db.iloc[0], ref.loc[3]):
            assert got["customer_id_nb_tx_1day_window"] == 3  # transactions 1 and 2, and 3 itself
            assert got["customer_id_avg_amount_1day_window"] == pytest.approx(70 / 3)


@pytest.fixture(scope="module")
def sim_features():
    tx = generate_transactions(300, 600, 50, radius=10.0, seed=2)
    return tx, bf.transaction_features(tx)


def test_handbook_invariants(sim_features):
    tx, f = sim_features
    assert list(f.columns) == bf.ID_COLUMNS + MODEL_INPUTS
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
    early = f["TX_DATETIME"] < pd.Timestamp("2018-04-01", tz="UTC") + TERMINAL_RISK.windows[0].delay
    assert (f.loc[early, "terminal_id_nb_tx_30day_window"] == 0).all()  # nothing is old enough yet
    assert f["terminal_id_risk_7day_window"].max() > 0
    saturday = f["TX_DATETIME"].dt.weekday == 5
    assert (f.loc[saturday, "tx_during_weekend"] == 1).all()
    assert (f.loc[f["TX_DATETIME"].dt.hour == 6, "tx_during_night"] == 1).all()


def test_hopped_windows_leave_the_open_tile_out(sim_features):
    tx, f = sim_features
    # A customer's 1-day count is 1 + its transactions in the 24 whole tiles before the current one.
    t = us(tx["TX_DATETIME"])
    c = tx["CUSTOMER_ID"].to_numpy()
    for j in range(0, len(tx), 997):
        end = t[j] // H_US * H_US
        want = 1 + int(((c == c[j]) & (t >= end - DAY_US) & (t < end)).sum())
        assert f["customer_id_nb_tx_1day_window"].iloc[j] == want


def test_entity_snapshot_has_no_current_event_and_honours_as_of(sim_features):
    tx, f = sim_features
    customers, terminals = bf.entity_features_at(tx)
    assert set(customers.index) == set(tx["CUSTOMER_ID"])
    assert list(customers.columns) == CUSTOMER_SPENDING.feature_names() + ["event_timestamp"]
    last = f.sort_values("TX_DATETIME", kind="stable").groupby("CUSTOMER_ID").tail(1).set_index("CUSTOMER_ID")
    assert (customers.loc[last.index, "event_timestamp"] == last["TX_DATETIME"]).all()
    # Same time, same tiles: the snapshot is the last transaction's row less that transaction.
    assert (customers.loc[last.index, "customer_id_nb_tx_30day_window"] == last["customer_id_nb_tx_30day_window"] - 1).all()
    terminal = int(tx["TERMINAL_ID"].iloc[0])
    later = tx["TX_DATETIME"].max() + timedelta(days=3)
    _, terminals = bf.entity_features_at(tx, as_of={"terminal_id": {terminal: later, 10_000_000: later}})
    frame = tx.rename(columns=str.lower).assign(tx_fraud=tx["TX_FRAUD"])
    want = naive(TERMINAL_RISK, frame, frame[frame["tx_fraud"] == 1].assign(label_datetime=pd.NaT), terminal,
                 int(us([later])[0]), None)
    for name, value in want.items():
        assert terminals.loc[terminal, name] == pytest.approx(value)
    assert (terminals.loc[10_000_000, TERMINAL_RISK.feature_names()] == 0).all()


def test_windows_come_from_the_declaration():
    # A different declaration (2-day window, 1-day delay) changes the answer without touching the code.
    agg = EntityAggregation("terminal", "terminal_id", "terminal_risk", (Window(timedelta(days=2), timedelta(days=1)),),
                            (Feature("n_{window}", "count"), Feature("risk_{window}", "ratio")), (EVENTS, LABELS),
                            label_delay=timedelta(days=1))
    hours = [0, 10, 30, 50, 60, 75]
    tx = pd.DataFrame({"TRANSACTION_ID": range(6), "TX_DATETIME": pd.Timestamp("2018-04-01", tz="UTC") + pd.to_timedelta(hours, unit="h"),
                       "CUSTOMER_ID": 1, "TERMINAL_ID": 7, "TX_AMOUNT": 10.0, "TX_FRAUD": [1, 0, 1, 0, 0, 0]})
    (terminals,) = bf.entity_features_at(tx, aggregations=(agg,))
    # At t = 75 h the window is the tiles [75 - 24 - 48, 75 - 24) h = [3 h, 51 h): the rows at 10, 30 and 50 h, one fraud.
    assert terminals.loc[7, "n_2day_window"] == 3
    assert terminals.loc[7, "risk_2day_window"] == pytest.approx(1 / 3)


def test_labels_without_required_columns_are_rejected(sim_features):
    tx, _ = sim_features
    with pytest.raises(InvalidInputError, match="transaction_id"):
        bf.transaction_features(tx.iloc[:10], pd.DataFrame({"id": [1]}))
