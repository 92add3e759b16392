"""Point-in-time correct train / validation / test sets from the Feast offline store (handbook ch. 3.4).

The split follows the handbook: a training window, a delay window (labels of recent
transactions are not known yet when a model is trained) and a test window. Known-compromised
cards are removed from each test day as the handbook does, so the test measures the
detection of *new* compromised cards.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo.aggregations import AGGREGATIONS
from feature_repo.model_inputs import FEATURE_SERVICE, MODEL_INPUTS, calendar_features
from feature_repo.offline_log import FRAUD_LABELS, TRANSACTIONS, read_table
from rtml_common.errors import InvalidInputError

LABEL = "tx_fraud"
ID_COLUMNS = ["transaction_id", "customer_id", "terminal_id", "event_timestamp"]
DAY = pd.Timedelta(days=1)
# A handful of transactions may miss a feature row (e.g. a log flush lost on a crash);
# more than this share means the feature log is incomplete and training would be wrong.
MAX_MISSING_SHARE = 0.01


@dataclass(frozen=True)
class SplitWindows:
    """The handbook's train / delay / test windows, half-open [start, end) in UTC."""

    train_start: pd.Timestamp
    train_end: pd.Timestamp
    test_start: pd.Timestamp
    test_end: pd.Timestamp

    @property
    def delay_days(self) -> int:
        return int((self.test_start - self.train_end) / DAY)

    def as_dict(self) -> dict[str, str]:
        return {k: v.strftime("%Y-%m-%d") for k, v in asdict(self).items()}


def split_windows(train_start: str, train_days: int = 7, delay_days: int = 7, test_days: int = 7) -> SplitWindows:
    """Windows for a training start date (``YYYY-MM-DD``) and the three lengths in days."""
    try:
        start = pd.Timestamp(train_start)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"train_start {train_start!r} is not a date (expected YYYY-MM-DD)") from exc
    start = (start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")).normalize()
    for name, value in (("train_days", train_days), ("test_days", test_days)):
        if value < 1:
            raise InvalidInputError(f"{name} must be >= 1, got {value}")
    if delay_days < 0:
        raise InvalidInputError(f"delay_days must be >= 0, got {delay_days}")
    train_end = start + train_days * DAY
    test_start = train_end + delay_days * DAY
    return SplitWindows(start, train_end, test_start, test_start + test_days * DAY)


def load_labels(offline_dir: Path, since: pd.Timestamp) -> pd.DataFrame:
    """Fraud labels of transactions made since ``since`` (labels arrive after the transaction, so no end bound)."""
    labels = read_table(offline_dir, FRAUD_LABELS, start=since, key=["transaction_id"])
    cols = ["transaction_id", "customer_id", LABEL, "tx_datetime"]
    if labels.empty:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in cols[:3]} | {"tx_datetime": pd.Series(dtype="datetime64[ns, UTC]")})
    missing = [c for c in cols if c not in labels.columns]
    if missing:
        raise InvalidInputError(f"offline log table '{FRAUD_LABELS}' lacks columns {missing}")
    labels = labels[cols].copy()
    labels["tx_datetime"] = pd.to_datetime(labels["tx_datetime"], utc=True)
    return labels[labels["tx_datetime"] >= since]


def read_transactions(offline_dir: Path, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """Transactions logged in [start, end); fails naming the table and range when there are none."""
    tx = read_table(offline_dir, TRANSACTIONS, start=start, end=end, key=["transaction_id"])
    if tx.empty:
        raise InvalidInputError(
            f"no transactions in offline log table '{TRANSACTIONS}' under {offline_dir} between "
            f"{start:%Y-%m-%d} and {end:%Y-%m-%d} (exclusive): empty date range")
    missing = [c for c in ["transaction_id", "customer_id", "terminal_id", "tx_amount", "event_timestamp"] if c not in tx.columns]
    if missing:
        raise InvalidInputError(f"offline log table '{TRANSACTIONS}' lacks columns {missing}")
    return tx


def check_feature_logs(offline_dir: Path, start: pd.Timestamp, end: pd.Timestamp) -> None:
    """Fail early, naming the feature view, when a view's offline log has no rows for the range."""
    for agg in AGGREGATIONS:
        base = Path(offline_dir) / agg.feature_view
        days = pd.date_range(start - agg.horizon, end - DAY, freq="D").strftime("%Y-%m-%d")
        if not base.is_dir() or not any((base / d).is_dir() for d in days):
            raise InvalidInputError(
                f"missing features: offline log of feature view '{agg.feature_view}' ({base}) has no rows between "
                f"{start:%Y-%m-%d} and {end:%Y-%m-%d}; features {agg.feature_names()} cannot be joined")


def epoch_seconds(ts: pd.Series) -> np.ndarray:
    """Seconds since the epoch of a UTC timestamp column, whatever its resolution."""
    return ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def point_in_time_features(store, entities: pd.DataFrame) -> pd.DataFrame:
    """Feature values as of each transaction (Feast point-in-time join) plus the request features, in MODEL_INPUTS.

    Rows whose features are missing are dropped when they are a tiny share; otherwise the
    call fails naming the features that are missing.
    """
    entity_df = entities[["customer_id", "terminal_id", "event_timestamp", "transaction_id", "tx_amount"]]
    service = store.get_feature_service(FEATURE_SERVICE)
    joined = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    absent = [c for c in MODEL_INPUTS if c not in joined.columns and c not in ("tx_during_weekend", "tx_during_night")]
    if absent:
        raise InvalidInputError(f"missing features: the feature service '{FEATURE_SERVICE}' returned no columns {absent}")
    ts = pd.to_datetime(joined["event_timestamp"], utc=True)
    weekend, night = calendar_features(epoch_seconds(ts))
    joined["tx_during_weekend"], joined["tx_during_night"] = weekend, night
    null = joined[MODEL_INPUTS].isna()
    if null.any(axis=1).mean() > MAX_MISSING_SHARE:
        counts = null.sum()
        raise InvalidInputError(
            f"missing features: {null.any(axis=1).sum()} of {len(joined)} transactions have no value for "
            f"{ {c: int(n) for c, n in counts[counts > 0].items()} } in the offline store")
    joined = joined[~null.any(axis=1)].copy()
    joined[MODEL_INPUTS] = joined[MODEL_INPUTS].astype(np.float32)
    joined["event_timestamp"] = pd.to_datetime(joined["event_timestamp"], utc=True)
    return joined.sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)


def remove_known_compromised(test: pd.DataFrame, train: pd.DataFrame, labels: pd.DataFrame, windows: SplitWindows) -> pd.DataFrame:
    """Drop each test day's transactions of cards already known compromised (handbook ch. 3.4).

    Known at the start: every card with a fraud in the training set. Before test day k, the
    cards with a fraud on the delay-period day ``train_end - 1 + k`` become known too.
    """
    known = set(train.loc[train[LABEL] == 1, "customer_id"])
    frauds = labels[labels[LABEL] == 1]
    fraud_day = frauds["tx_datetime"].dt.floor("D")
    keep = []
    n_days = int((windows.test_end - windows.test_start) / DAY)
    test_day = test["event_timestamp"].dt.floor("D")
    for k in range(n_days):
        known |= set(frauds.loc[fraud_day == windows.train_end - DAY + k * DAY, "customer_id"])
        day = test[test_day == windows.test_start + k * DAY]
        keep.append(day[~day["customer_id"].isin(known)])
    return pd.concat(keep).reset_index(drop=True) if keep else test.iloc[:0]


def split_validation(train: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out a seeded share of the training *cards* for early stopping (no card in both sets)."""
    if not 0 < fraction < 1:
        raise InvalidInputError(f"validation_fraction must be in (0, 1), got {fraction}")
    customers = np.sort(train["customer_id"].unique())
    rng = np.random.default_rng(seed)
    held = set(rng.choice(customers, max(1, int(round(len(customers) * fraction))), replace=False).tolist())
    mask = train["customer_id"].isin(held)
    return train[~mask].reset_index(drop=True), train[mask].reset_index(drop=True)


@dataclass
class TrainingSets:
    """The three sets and a summary for lineage."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    info: dict


def build_training_sets(store, offline_dir: Path, train_start: str, train_days: int = 7, delay_days: int = 7,
                        test_days: int = 7, validation_fraction: float = 0.2, seed: int = 0) -> TrainingSets:
    """Train / validation / test sets with labels, point-in-time features, and known cards removed from test."""
    offline_dir = Path(offline_dir)
    w = split_windows(train_start, train_days, delay_days, test_days)
    train_tx = read_transactions(offline_dir, w.train_start, w.train_end)
    test_tx = read_transactions(offline_dir, w.test_start, w.test_end)
    check_feature_logs(offline_dir, w.train_start, w.test_end)
    labels = load_labels(offline_dir, w.train_start)
    rows = point_in_time_features(store, pd.concat([train_tx, test_tx], ignore_index=True))
    label_of = labels.set_index("transaction_id")[LABEL]
    rows[LABEL] = rows["transaction_id"].map(label_of).fillna(0).astype(np.int64)  # no label = legitimate
    rows = rows[ID_COLUMNS + MODEL_INPUTS + [LABEL]]
    train = rows[rows["event_timestamp"] < w.train_end].reset_index(drop=True)
    test_all = rows[rows["event_timestamp"] >= w.test_start].reset_index(drop=True)
    if train[LABEL].sum() == 0:
        raise InvalidInputError(f"no fraud labels for the training window {w.as_dict()}: table '{FRAUD_LABELS}' is empty there")
    test = remove_known_compromised(test_all, train, labels, w)
    fit, validation = split_validation(train, validation_fraction, seed)
    info = {
        "windows": w.as_dict(), "feature_service": FEATURE_SERVICE, "inputs": MODEL_INPUTS,
        "rows": {"train": len(fit), "validation": len(validation), "test": len(test), "test_before_removal": len(test_all)},
        "frauds": {"train": int(fit[LABEL].sum()), "validation": int(validation[LABEL].sum()), "test": int(test[LABEL].sum())},
    }
    return TrainingSets(fit, validation, test, info)


def write_sets(sets: TrainingSets, train_path: str, validation_path: str, test_path: str, info_path: str) -> None:
    """Write the sets as parquet and the summary as JSON (the dataset component's outputs)."""
    sets.train.to_parquet(train_path, index=False)
    sets.validation.to_parquet(validation_path, index=False)
    sets.test.to_parquet(test_path, index=False)
    Path(info_path).write_text(json.dumps(sets.info, indent=2))
