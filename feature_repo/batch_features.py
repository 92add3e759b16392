"""Batch reference for the windowed features: pure pandas/numpy, the ground truth the streaming engine must match.

Semantics come from ``feature_repo.aggregations.AGGREGATIONS``. A window of length L and delay D,
evaluated for an entity at time t, covers that entity's transactions with timestamp in
(t - (L + D), t - D]; every transaction stamped exactly t - D is inside (ties are never split).
With D = 0 (customer windows) this is the handbook's right-closed pandas time rolling, current
transaction included. ``count_avg`` windows give nb_tx and avg amount; ``count_risk`` windows
give nb_tx and labelled frauds / nb_tx (0 when empty).

Implementation: every (entity, time) query becomes two ``searchsorted`` calls on the events sorted
by (entity, time rank) plus prefix sums, so 1.75M transactions take seconds, not a Python loop.
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping

import numpy as np
import pandas as pd

from feature_repo.aggregations import AGGREGATIONS, EntityAggregation
from feature_repo.model_inputs import MODEL_INPUTS, calendar_features
from rtml_common.errors import ConfigurationError, InvalidInputError

ID_COLUMNS = ["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_DATETIME"]


def _utc_ns(ts: pd.Series) -> np.ndarray:
    """int64 nanoseconds since epoch, UTC (naive timestamps are taken as UTC)."""
    s = pd.to_datetime(ts)
    if s.dt.tz is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return s.to_numpy().astype("datetime64[ns]").astype(np.int64)


def fraud_flags(tx: pd.DataFrame, labels: pd.DataFrame | None) -> np.ndarray:
    """1.0 for each transaction known to be fraud: TX_FRAUD when ``labels`` is None, else labelled tx_fraud=1."""
    if labels is None:
        return tx["TX_FRAUD"].to_numpy().astype(np.float64)
    cols = {c.lower(): c for c in labels.columns}
    if "transaction_id" not in cols or "tx_fraud" not in cols:
        raise InvalidInputError(f"labels need transaction_id and tx_fraud columns, got {list(labels.columns)}")
    lab = labels[[cols["transaction_id"], cols["tx_fraud"]]]
    frauds = lab.loc[lab[cols["tx_fraud"]].astype(np.int64) == 1, cols["transaction_id"]].to_numpy()
    return np.isin(tx["TRANSACTION_ID"].to_numpy(), frauds).astype(np.float64)


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique without its hash pass: a sort is cheaper for int64 columns of this size."""
    s = np.sort(x)
    return s[np.concatenate([[True], s[1:] != s[:-1]])] if len(s) else s


class _EntityIndex:
    """One entity's events sorted by (entity, time rank), answering window sums for any (entity, time) query."""

    def __init__(self, entity: np.ndarray, t_ns: np.ndarray, values: dict[str, np.ndarray]):
        self.times = _sorted_unique(t_ns)
        self.ids = _sorted_unique(entity)
        code = np.searchsorted(self.ids, entity)
        rank = np.searchsorted(self.times, t_ns)
        # Dense time ranks keep entity * stride + rank inside int64 at any timestamp precision.
        self.stride = np.int64(len(self.times) + 2)
        keys = code.astype(np.int64) * self.stride + rank
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.prefix = {k: np.concatenate([[0.0], np.cumsum(v[order], dtype=np.float64)]) for k, v in values.items()}

    def query_order(self, entity: np.ndarray, t_ns: np.ndarray) -> np.ndarray:
        """A permutation sorting queries by (entity, time): every window's search keys then ascend,
        and numpy's binary search, which reuses its last bound for ascending needles, runs ~10x faster."""
        code = np.searchsorted(self.ids, entity).astype(np.int64)
        return np.argsort(code * self.stride + np.searchsorted(self.times, t_ns), kind="stable")

    def window(self, entity: np.ndarray, t_ns: np.ndarray, length_ns: int, delay_ns: int,
               order: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Count and per-value sums over events of ``entity`` stamped in (t - length - delay, t - delay]."""
        # Time ranks in the caller's (usually time-sorted) order, entity codes in entity order: both searches ascend.
        hi_rank = (np.searchsorted(self.times, t_ns - delay_ns, side="right") - 1)[order]  # last rank with time <= t - D
        lo_rank = np.searchsorted(self.times, t_ns - delay_ns - length_ns, side="right")[order]  # first rank with time > t - L - D
        entity = entity[order]
        code = np.searchsorted(self.ids, entity)
        known = (code < len(self.ids)) & (self.ids[np.minimum(code, len(self.ids) - 1)] == entity) if len(self.ids) else np.zeros(len(entity), bool)
        base = code.astype(np.int64) * self.stride
        hi = np.searchsorted(self.keys, base + hi_rank, side="right")
        lo = np.searchsorted(self.keys, base + lo_rank, side="left")
        hi = np.where(known, np.maximum(hi, lo), lo)
        count = np.empty(len(order), np.int64)
        count[order] = hi - lo
        sums = {}
        for k, p in self.prefix.items():
            sums[k] = np.empty(len(order), np.float64)
            sums[k][order] = p[hi] - p[lo]
        return count, sums


def _features(agg: EntityAggregation, index: _EntityIndex, entity: np.ndarray, t_ns: np.ndarray) -> dict[str, np.ndarray]:
    """The aggregation's feature columns for each (entity, time) query."""
    out: dict[str, np.ndarray] = {}
    names = agg.feature_names()
    order = index.query_order(entity, t_ns)
    for i, w in enumerate(agg.windows):
        count, sums = index.window(entity, t_ns, int(pd.Timedelta(w.length).value), int(pd.Timedelta(w.delay).value), order)
        safe = np.maximum(count, 1)
        if agg.kind == "count_avg":
            second = np.where(count > 0, sums["amount"] / safe, 0.0)
        elif agg.kind == "count_risk":
            second = np.where(count > 0, sums["fraud"] / safe, 0.0)
        else:
            raise ConfigurationError(f"unknown aggregation kind {agg.kind!r} in {agg.feature_view}")
        out[names[2 * i]] = count
        out[names[2 * i + 1]] = second
    return out


def _indexes(tx: pd.DataFrame, labels: pd.DataFrame | None) -> tuple[np.ndarray, dict[str, _EntityIndex]]:
    t_ns = _utc_ns(tx["TX_DATETIME"])
    values = {"amount": tx["TX_AMOUNT"].to_numpy().astype(np.float64), "fraud": fraud_flags(tx, labels)}
    idx = {agg.join_key: _EntityIndex(tx[agg.join_key.upper()].to_numpy().astype(np.int64), t_ns, values) for agg in AGGREGATIONS}
    return t_ns, idx


def transaction_features(tx: pd.DataFrame, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per transaction (input order): ids, TX_DATETIME and every ``MODEL_INPUTS`` column.

    nb_tx columns are int64, the others float64. Customer windows include the transaction itself;
    terminal windows see only transactions at least the window delay old.
    """
    t_ns, idx = _indexes(tx, labels)
    out = tx[ID_COLUMNS].reset_index(drop=True)
    out["tx_amount"] = tx["TX_AMOUNT"].to_numpy().astype(np.float64)
    weekend, night = calendar_features(t_ns // 1_000_000_000)
    out["tx_during_weekend"], out["tx_during_night"] = weekend.astype(np.float64), night.astype(np.float64)
    for agg in AGGREGATIONS:
        for name, col in _features(agg, idx[agg.join_key], tx[agg.join_key.upper()].to_numpy().astype(np.int64), t_ns).items():
            out[name] = col
    missing = [c for c in MODEL_INPUTS if c not in out.columns]
    if missing:  # a model input that no aggregation declares is a repo bug, not bad data
        raise ConfigurationError(f"MODEL_INPUTS {missing} are not produced by AGGREGATIONS")
    return out[ID_COLUMNS + MODEL_INPUTS]


def entity_features_at(tx: pd.DataFrame, labels: pd.DataFrame | None = None,
                       as_of: Mapping[str, Mapping[int, datetime | pd.Timestamp]] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the online store must converge to: (customer features, terminal features).

    Each entity's windows are evaluated at its last transaction time, unless ``as_of`` gives
    another time: ``as_of[join_key][entity_id]`` with join_key "customer_id" or "terminal_id"
    (entities listed there but absent from ``tx`` get empty windows). Frames are indexed by
    the join key and hold that aggregation's feature columns plus ``event_timestamp``.
    """
    t_ns, idx = _indexes(tx, labels)
    frames = {}
    for agg in AGGREGATIONS:
        ent = tx[agg.join_key.upper()].to_numpy().astype(np.int64)
        last = pd.Series(t_ns).groupby(ent).max()
        overrides = (as_of or {}).get(agg.join_key, {})
        if overrides:
            extra = pd.Series({int(k): _utc_ns(pd.Series([v]))[0] for k, v in overrides.items()}, dtype=np.int64)
            last = pd.concat([last[~last.index.isin(extra.index)], extra]).sort_index()
        q_ent, q_t = last.index.to_numpy().astype(np.int64), last.to_numpy().astype(np.int64)
        cols = _features(agg, idx[agg.join_key], q_ent, q_t)
        frame = pd.DataFrame(cols, index=pd.Index(q_ent, name=agg.join_key))
        frame["event_timestamp"] = pd.to_datetime(q_t, utc=True)
        frames[agg.join_key] = frame
    return frames["customer_id"], frames["terminal_id"]
