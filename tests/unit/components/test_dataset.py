"""Training sets from the raw event log: the handbook split, and rows that depend only on the set of events."""

import numpy as np
import pandas as pd
import pytest

from components.dataset import (
    LABEL, build_training_sets, point_in_time_features, remove_known_compromised, split_validation, split_windows,
)
from feature_repo.batch_features import transaction_features
from feature_repo.model_inputs import MODEL_INPUTS
from feature_repo.offline_log import FRAUD_LABELS, TRANSACTIONS, OfflineLog
from rtml.simulator import generate_transactions
from rtml_common.errors import InvalidInputError

UTC = "UTC"
TRAIN_START, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS = "2018-05-10", 5, 3, 4  # 39 days of history before the training window


def ts(s):
    return pd.Timestamp(s, tz=UTC)


def test_handbook_split_dates():
    w = split_windows("2018-07-25", 7, 7, 7)
    assert w.as_dict() == {"train_start": "2018-07-25", "train_end": "2018-08-01",
                           "test_start": "2018-08-08", "test_end": "2018-08-15"}
    assert w.delay_days == 7


@pytest.mark.parametrize("args, message", [
    (("not-a-date",), "not a date"), (("2018-07-25", 0), "train_days"), (("2018-07-25", 7, -1), "delay_days"),
    (("2018-07-25", 7, 7, 0), "test_days"),
])
def test_bad_windows_are_named(args, message):
    with pytest.raises(InvalidInputError, match=message):
        split_windows(*args)


def test_known_compromised_cards_leave_the_test_days_as_the_handbook_does():
    w = split_windows("2018-07-25", 7, 7, 2)  # test days 08-08 and 08-09
    train = pd.DataFrame({"customer_id": [1, 2], "tx_fraud": [1, 0]})
    # Card 3 defrauded on 07-31 (the train_end - 1 day: known before test day 0);
    # card 4 on 08-01 (known before test day 1 only); card 5 on 08-05 (never in time).
    labels = pd.DataFrame({"customer_id": [3, 4, 5], "tx_fraud": [1, 1, 1],
                           "tx_datetime": [ts("2018-07-31 10:00"), ts("2018-08-01 10:00"), ts("2018-08-05 10:00")]})
    test = pd.DataFrame({"customer_id": [1, 2, 3, 4, 5, 1, 2, 3, 4, 5],
                         "event_timestamp": [ts("2018-08-08 12:00")] * 5 + [ts("2018-08-09 12:00")] * 5})
    kept = remove_known_compromised(test, train, labels, w)
    day0 = kept[kept["event_timestamp"].dt.day == 8]["customer_id"].tolist()
    day1 = kept[kept["event_timestamp"].dt.day == 9]["customer_id"].tolist()
    assert day0 == [2, 4, 5]
    assert day1 == [2, 5]


def test_validation_holds_out_whole_cards_reproducibly():
    train = pd.DataFrame({"customer_id": [i % 50 for i in range(500)], "tx_fraud": 0})
    fit, val = split_validation(train, 0.2, seed=3)
    assert set(fit["customer_id"]).isdisjoint(val["customer_id"])
    assert val["customer_id"].nunique() == 10 and len(fit) + len(val) == 500
    fit2, val2 = split_validation(train, 0.2, seed=3)
    assert val2.equals(val)
    with pytest.raises(InvalidInputError, match="validation_fraction"):
        split_validation(train, 1.5, seed=0)


# -- sets built from a raw log ------------------------------------------------------------------

@pytest.fixture(scope="module")
def simulated():
    return generate_transactions(120, 240, 60, "2018-04-01", radius=15.0, seed=11)


def raw_events(tx: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The engine's raw tables: transactions, and a fraud label per fraud known 7 days later, plus odd labels."""
    t = tx["TX_DATETIME"].reset_index(drop=True)
    base = pd.DataFrame({"transaction_id": tx["TRANSACTION_ID"].to_numpy(np.int64), "tx_datetime": t,
                         "customer_id": tx["CUSTOMER_ID"].to_numpy(np.int64), "terminal_id": tx["TERMINAL_ID"].to_numpy(np.int64)})
    transactions = base.assign(tx_amount=tx["TX_AMOUNT"].to_numpy(np.float64), event_timestamp=t)
    fraud = (tx["TX_FRAUD"] == 1).to_numpy()
    labels = base[fraud].assign(tx_fraud=1, label_datetime=t[fraud] + pd.Timedelta(days=7))
    # A negative label that a positive one corrects, and a late positive label (a target, never a feature).
    flip = labels.iloc[::5].assign(tx_fraud=0, label_datetime=lambda d: d["tx_datetime"] + pd.Timedelta(days=1))
    late = base[~fraud].iloc[::97].assign(tx_fraud=1, label_datetime=lambda d: d["tx_datetime"] + pd.Timedelta(days=9))
    labels = pd.concat([labels, flip, late], ignore_index=True)
    labels["event_timestamp"] = labels["label_datetime"]
    return transactions, labels


def write_log(root, transactions: pd.DataFrame, labels: pd.DataFrame, flushes: int = 1, writer: str = "w") -> None:
    """The tables as the engine writes them: several flushes (files) per day when asked."""
    log = OfflineLog(root, writer_id=writer)
    for part in np.array_split(np.arange(len(transactions)), flushes):
        log.extend(TRANSACTIONS, transactions.iloc[part].to_dict("records"))
        log.flush()
    for part in np.array_split(np.arange(len(labels)), flushes):
        log.extend(FRAUD_LABELS, labels.iloc[part].to_dict("records"))
        log.flush()


def all_rows(sets) -> pd.DataFrame:
    return pd.concat([sets.train, sets.validation, sets.test], ignore_index=True)


def test_sets_do_not_depend_on_arrival_order_duplicates_or_restarts(tmp_path, simulated):
    transactions, labels = raw_events(simulated)
    write_log(tmp_path / "clean", transactions, labels)
    rng = np.random.default_rng(0)
    # Shuffled, 10% of the events and labels logged twice (a replay after a restart), by two writers, many files.
    shuffled = transactions.sample(frac=1, random_state=1)
    replay = transactions.iloc[rng.choice(len(transactions), len(transactions) // 10, replace=False)]
    relabel = labels.iloc[rng.choice(len(labels), len(labels) // 10, replace=False)]
    write_log(tmp_path / "messy", shuffled, labels.sample(frac=1, random_state=2), flushes=7, writer="a")
    write_log(tmp_path / "messy", replay, relabel.iloc[::-1], flushes=3, writer="b")
    clean = build_training_sets(None, tmp_path / "clean", TRAIN_START, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS)
    messy = build_training_sets(None, tmp_path / "messy", TRAIN_START, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS)
    for name in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(getattr(messy, name), getattr(clean, name))
    assert messy.info == clean.info


def test_sets_hold_every_transaction_with_the_reference_features_and_any_positive_label(tmp_path, simulated):
    transactions, labels = raw_events(simulated)
    write_log(tmp_path, transactions, labels, flushes=2)
    sets = build_training_sets(None, tmp_path, TRAIN_START, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS)
    w = split_windows(TRAIN_START, TRAIN_DAYS, DELAY_DAYS, TEST_DAYS)
    t = transactions["tx_datetime"]
    in_train = transactions[(t >= w.train_start) & (t < w.train_end)]
    train = pd.concat([sets.train, sets.validation]).set_index("transaction_id")
    assert sorted(train.index) == sorted(in_train["transaction_id"])
    assert len(sets.test) > 0 and sets.info["rows"]["test_before_removal"] == int(((t >= w.test_start) & (t < w.test_end)).sum())
    # Features: the numpy reference on every logged event (so the builder read the 37 days before the window).
    ref = transaction_features(transactions, labels).set_index("TRANSACTION_ID")
    got = all_rows(sets).set_index("transaction_id")
    np.testing.assert_allclose(got[MODEL_INPUTS].to_numpy(np.float64), ref.loc[got.index, MODEL_INPUTS].to_numpy(np.float32),
                               rtol=0, atol=0)
    early = got["event_timestamp"] < w.train_start + pd.Timedelta(days=1)
    assert (got.loc[early, "terminal_id_nb_tx_30day_window"] > 0).any()  # history before the window is there
    # Target: any tx_fraud=1 label, whenever known (the late ones too), despite a negative label of the same fraud.
    positive = set(labels.loc[labels["tx_fraud"] == 1, "transaction_id"])
    assert (got[LABEL] == got.index.isin(positive).astype(np.int64)).all()
    assert got[LABEL].sum() > 0 and sets.info["features_from"]["history_start"].startswith("2018-04-02")


def test_point_in_time_features_of_given_transactions_read_their_history(tmp_path, simulated):
    transactions, labels = raw_events(simulated)
    write_log(tmp_path, transactions, labels)
    day = transactions[transactions["tx_datetime"].dt.strftime("%Y-%m-%d") == "2018-05-20"]
    rows = point_in_time_features(tmp_path, pd.concat([day, day.iloc[:5]]).drop(columns="tx_datetime"))
    assert len(rows) == len(day) and rows["event_timestamp"].is_monotonic_increasing
    ref = transaction_features(transactions, labels).set_index("TRANSACTION_ID")
    np.testing.assert_array_equal(rows[MODEL_INPUTS].to_numpy(np.float32),
                                  ref.loc[rows["transaction_id"], MODEL_INPUTS].to_numpy(np.float32))


def test_an_empty_window_is_named(tmp_path, simulated):
    transactions, labels = raw_events(simulated)
    write_log(tmp_path, transactions, labels)
    with pytest.raises(InvalidInputError, match="empty test window"):
        build_training_sets(None, tmp_path, "2018-05-20", 7, 7, 7)  # the test window starts after the data
    with pytest.raises(InvalidInputError, match="empty date range"):
        build_training_sets(None, tmp_path, "2019-05-20", 7, 7, 7)
