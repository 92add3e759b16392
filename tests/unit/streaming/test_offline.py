"""The engine's offline buffer: epoch seconds become UTC timestamps, rows land in per-date files."""

from __future__ import annotations

import pandas as pd

from feature_repo.offline_log import read_table
from streaming.engine import FeatureEngine
from streaming.offline import EpochOfflineLog, epoch_to_utc


def test_epoch_to_utc_rounds_to_microseconds_and_keeps_missing():
    out = epoch_to_utc([1522541276.0, 1522541276.1234567, None])
    assert out[0] == pd.Timestamp("2018-04-01T00:07:56Z")
    assert out[1] == pd.Timestamp("2018-04-01T00:07:56.123457Z")
    assert pd.isna(out[2]) and str(out.dtype) == "datetime64[ns, UTC]"


def test_rows_are_split_by_event_date_with_timestamps_converted(tmp_path):
    engine = FeatureEngine()
    log = EpochOfflineLog(tmp_path, engine.timestamp_columns)
    day1, day2 = 1522541276.0, 1522541276.0 + 86400
    for i, ts in enumerate((day1, day2, day2 + 5)):
        engine.apply("fraud_labels", {"transaction_id": i, "tx_datetime": ts - 7 * 86400, "customer_id": 1, "terminal_id": 2,
                                      "tx_fraud": 1, "label_datetime": ts if i else None}, log.rows)
    assert log.flush() == 3 and log.pending == 0
    assert sorted(p.name for p in (tmp_path / "fraud_labels").iterdir()) == ["2018-03-25", "2018-04-02"]
    df = read_table(tmp_path, "fraud_labels").sort_values("transaction_id")
    # the first label has no label_datetime: it is logged at its transaction time
    assert df["event_timestamp"].tolist() == [pd.Timestamp(day1 - 7 * 86400, unit="s", tz="UTC"),
                                              pd.Timestamp(day2, unit="s", tz="UTC"), pd.Timestamp(day2 + 5, unit="s", tz="UTC")]
    assert df["label_datetime"].isna().tolist() == [True, False, False]
    assert str(df["tx_datetime"].dtype) == "datetime64[ns, UTC]"


def test_only_raw_events_are_logged_with_their_columns(tmp_path):
    engine = FeatureEngine()
    log = EpochOfflineLog(tmp_path, engine.timestamp_columns)
    t = 1522541276.25
    for i, amount in enumerate((10.0, 30.0)):
        engine.apply("transactions", {"transaction_id": i, "tx_datetime": t + i, "customer_id": 1, "terminal_id": 2,
                                      "tx_amount": amount}, log.rows)
    assert log.flush() == 2  # the two raw rows; tiles go online only
    assert sorted(p.name for p in tmp_path.iterdir()) == ["transactions"]
    raw = read_table(tmp_path, "transactions").sort_values("transaction_id")
    assert str(raw["tx_datetime"].dtype) == "datetime64[ns, UTC]" and raw["tx_amount"].tolist() == [10.0, 30.0]
    assert raw["customer_id"].tolist() == [1, 1] and str(raw["customer_id"].dtype) == "int64"
    assert raw["event_timestamp"].tolist() == [pd.Timestamp(t, unit="s", tz="UTC"), pd.Timestamp(t + 1, unit="s", tz="UTC")]
