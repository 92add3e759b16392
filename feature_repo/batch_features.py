"""Numpy reference of the declared window semantics: the ground truth the other executions are checked against.

The semantics are the ones written in ``feature_repo.aggregations`` (hourly tiles, windows hopped
on tiles, the current event counted once by delay-0 windows, on-time labels, events identified by
(id, event time)). This module computes them for every declared aggregation, generically over
``count``/``sum``/``mean``/``min``/``max``/``ratio`` features, any windows and int or str keys;
``components.dataset`` computes the same windows with DuckDB from the raw event log and the
transformer merges the engine's tiles (``feature_repo.tiles``). Tests compare all three.

Implementation: the de-duplicated events of an aggregation are folded into (entity, tile) rows
sorted by (entity, tile); a window of a query is then the half-open run of those rows between two
``searchsorted`` positions, read from prefix sums (count, sums, labels) or a ``reduceat`` (min,
max). Queries are answered in (entity, time) order, so the binary searches ascend (numpy reuses
its last bound) and the ``reduceat`` gaps between consecutive windows never overlap: 1.75M
transactions take seconds.

Times are integer microseconds since the epoch (UTC); naive timestamps are taken as UTC.
Columns are found case-insensitively (``TX_AMOUNT`` or ``tx_amount``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from feature_repo.aggregations import AGGREGATIONS, EntityAggregation, _us
from feature_repo.model_inputs import MODEL_INPUTS, calendar_features
from rtml_common.errors import ConfigurationError, InvalidInputError

ID_COLUMNS = ["TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_DATETIME"]
_NO_TIME = np.iinfo(np.int64).min


def utc_us(ts) -> np.ndarray:
    """int64 microseconds since the epoch (UTC; naive timestamps are taken as UTC), floored from nanoseconds."""
    s = pd.to_datetime(pd.Series(ts).reset_index(drop=True))
    if s.dt.tz is not None:
        s = s.dt.tz_convert("UTC").dt.tz_localize(None)
    return np.floor_divide(s.to_numpy().astype("datetime64[ns]").astype(np.int64), 1000)


def _column(df: pd.DataFrame, name: str, required: bool = True) -> str | None:
    """The column of ``df`` named ``name``, whatever its case; None (or an error when required) if absent."""
    found = {c.lower(): c for c in df.columns}.get(name.lower())
    if found is None and required:
        raise InvalidInputError(f"column {name!r} is missing; the frame has {list(df.columns)}")
    return found


def _keys(df: pd.DataFrame, agg: EntityAggregation) -> np.ndarray:
    values = df[_column(df, agg.join_key)].to_numpy()
    return values.astype(np.int64) if agg.key_type == "int" else values.astype(str).astype(object)


def unique_events(tx: pd.DataFrame, aggregations: Sequence[EntityAggregation] = AGGREGATIONS) -> np.ndarray:
    """Row positions of ``tx`` keeping one copy per (id, event time), ascending.

    Replays repeat an event unchanged; should copies differ, the one with the smallest join keys
    (declaration order), then fields (name order), is kept, so the result never depends on row order
    (``components.dataset`` keeps the same copy).
    """
    agg = aggregations[0]
    ids = tx[_column(tx, agg.event_input.id_field)].to_numpy()
    t = utc_us(tx[_column(tx, agg.event_input.time_field)])
    first = np.lexsort((t, ids))
    same = (ids[first][1:] == ids[first][:-1]) & (t[first][1:] == t[first][:-1])
    if not same.any():
        return np.arange(len(tx))
    by_key = {a.join_key: a for a in reversed(aggregations)}  # first declaration of each join key
    ties = [pd.factorize(_keys(tx, by_key[k]), sort=True)[0] for k in dict.fromkeys(a.join_key for a in aggregations)]
    fields = sorted({f.field for a in aggregations for f in a.features if f.field})
    ties += [tx[_column(tx, f)].to_numpy(np.float64) for f in fields]
    order = np.lexsort(tuple(reversed(ties)) + (t, ids))
    keep = np.concatenate([[True], (ids[order][1:] != ids[order][:-1]) | (t[order][1:] != t[order][:-1])])
    return np.sort(order[keep])


def _label_inputs(agg: EntityAggregation, labels) -> list[tuple]:
    """(input, frame) per label input of ``agg``: ``labels`` is one frame for all, or frames by source name."""
    out = []
    for inp in agg.inputs:
        if inp.role != "label":
            continue
        frame = labels.get(inp.source) if isinstance(labels, Mapping) else labels
        out.append((inp, frame))
    return out


def positive_labels(agg: EntityAggregation, tx: pd.DataFrame, t_us: np.ndarray, keys: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """(join keys, event times) of the events marked positive by an on-time label, each event once.

    A label counts iff its value is 1 and it was known (``known_field``; its event time when that
    is absent or null) no later than ``label_delay`` after its event; it counts in the tile of its
    event time for its own entity (the engine folds it there without looking the event up). A label
    frame without the event time or the join key takes them from its event in ``tx`` (by id).
    ``labels`` None: the events of ``tx`` with TX_FRAUD = 1, known at once.
    """
    if labels is None:
        hit = tx[_column(tx, "tx_fraud")].to_numpy().astype(np.int64) == 1
        return keys[hit], t_us[hit]
    delay = _us(agg.label_delay)
    found = []
    for inp, frame in _label_inputs(agg, labels):
        if frame is None or len(frame) == 0:
            continue
        lab = pd.DataFrame({"id": frame[_column(frame, inp.id_field)].to_numpy(),
                            "value": frame[_column(frame, inp.value_field)].to_numpy().astype(np.int64)})
        has_time = _column(frame, inp.time_field, required=False)
        if has_time:
            lab["t"] = utc_us(frame[has_time])
        if _column(frame, agg.join_key, required=False):
            lab["key"] = _keys(frame, agg)
        known = _column(frame, inp.known_field, required=False) if inp.known_field else None
        lab["known"] = _NO_TIME
        if known:
            stamps = pd.to_datetime(frame[known].reset_index(drop=True), utc=True)
            lab["known"] = np.where(stamps.isna().to_numpy(), _NO_TIME, utc_us(stamps.fillna(pd.Timestamp(0, tz="UTC"))))
        lab = lab[lab["value"] == 1]
        missing = [c for c in ("t", "key") if c not in lab.columns]
        if missing:  # a bare label (id and value): its event supplies time and entity
            ev = pd.DataFrame({"id": tx[_column(tx, inp.id_field)].to_numpy(), "t": t_us, "key": keys})
            lab = lab.merge(ev, on=[c for c in ("id", "t", "key") if c in lab.columns])
        # A label without a known time was known at its event's time (always on time).
        known_at = np.where(lab["known"].to_numpy() == _NO_TIME, lab["t"].to_numpy(), lab["known"].to_numpy())
        found.append(lab.loc[known_at <= lab["t"].to_numpy() + delay, ["key", "id", "t"]])
    if not found:
        return keys[:0], t_us[:0]
    pos = pd.concat(found, ignore_index=True).drop_duplicates()  # several labels of one event count once
    return pos["key"].to_numpy(), pos["t"].to_numpy(np.int64)


class WindowIndex:
    """One aggregation's events folded into (entity, tile) rows, answering its windows for any (entity, time)."""

    def __init__(self, agg: EntityAggregation, keys: np.ndarray, t_us: np.ndarray, fields: Mapping[str, np.ndarray],
                 label_keys: np.ndarray | None = None, label_t_us: np.ndarray | None = None):
        self.agg = agg
        self.tile_us = _us(agg.tile)
        n_events = len(keys)
        if label_keys is not None and len(label_keys):
            # Positive labels join as rows that count 0 events and add nothing to sums, minima or maxima.
            keys = np.concatenate([keys, label_keys])
            t_us = np.concatenate([t_us, label_t_us])
        is_event = np.arange(len(keys)) < n_events
        codes, self.entities = pd.factorize(keys)
        self.entity_index = pd.Index(self.entities)
        tile = np.floor_divide(t_us, self.tile_us)
        order = np.lexsort((tile, codes))
        codes, tile = codes[order], tile[order]
        new_tile = np.concatenate([[True], (codes[1:] != codes[:-1]) | (tile[1:] != tile[:-1])]) if len(order) else np.zeros(0, bool)
        starts = np.flatnonzero(new_tile)
        self.tmin = int(tile.min()) if len(tile) else 0
        self.stride = np.int64((int(tile.max()) - self.tmin + 4) if len(tile) else 4)
        self.keys = codes[starts].astype(np.int64) * self.stride + (tile[starts] - self.tmin + 1)

        def prefix(per_tile: np.ndarray) -> np.ndarray:
            return np.concatenate([[0.0], np.cumsum(per_tile)])

        def per_tile(values: np.ndarray, ufunc=np.add) -> np.ndarray:
            return ufunc.reduceat(values[order], starts) if len(starts) else np.zeros(0)

        def event_values(field: str, neutral: float) -> np.ndarray:
            return np.concatenate([np.asarray(fields[field], np.float64), np.full(len(keys) - n_events, neutral)])

        self.prefix = {"count": prefix(per_tile(is_event.astype(np.float64))), "labels": prefix(per_tile((~is_event).astype(np.float64)))}
        self.minmax: dict[tuple[str, str], np.ndarray] = {}
        for f in agg.features:
            if f.function in ("sum", "mean"):
                self.prefix[f"sum:{f.field}"] = prefix(per_tile(event_values(f.field, 0.0)))
            elif f.function in ("min", "max"):
                ufunc = np.minimum if f.function == "min" else np.maximum
                # A sentinel row: reduceat needs every index (hi included) inside the array.
                neutral = np.inf if f.function == "min" else -np.inf
                self.minmax[(f.function, f.field)] = np.append(per_tile(event_values(f.field, neutral), ufunc), 0.0)

    def _search_key(self, codes: np.ndarray, tile: np.ndarray) -> np.ndarray:
        # Tiles beyond the entity's data clip to just outside it: the window bounds keep their order.
        rel = np.clip(tile - self.tmin + 1, 0, self.stride - 1)
        return codes.astype(np.int64) * self.stride + rel

    def features(self, keys: np.ndarray, t_us: np.ndarray, current: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Every feature of the aggregation for each (entity, time) query; ``current`` fields join delay-0 windows."""
        codes = self.entity_index.get_indexer(keys) if len(self.entities) else np.full(len(keys), -1)
        order = np.lexsort((t_us, codes))
        codes_o, t_o = codes[order], t_us[order]
        unknown = codes_o < 0
        out: dict[str, np.ndarray] = {}
        for w in self.agg.windows:
            length, delay = _us(w.length) // self.tile_us, _us(w.delay)
            end = np.floor_divide(t_o - delay, self.tile_us)
            lo = np.searchsorted(self.keys, self._search_key(codes_o, end - length))
            hi = np.searchsorted(self.keys, self._search_key(codes_o, end))
            lo[unknown] = hi[unknown] = 0
            count = self.prefix["count"][hi] - self.prefix["count"][lo]
            add = current is not None and delay == 0
            if add:
                count = count + 1.0
            safe = np.where(count > 0, count, 1.0)
            for f in self.agg.features:
                name = f.name.format(window=w.suffix)
                if f.function == "count":
                    v = count
                elif f.function == "ratio":
                    v = (self.prefix["labels"][hi] - self.prefix["labels"][lo]) / safe
                elif f.function in ("sum", "mean"):
                    p = self.prefix[f"sum:{f.field}"]
                    v = p[hi] - p[lo] + (np.asarray(current[f.field], np.float64)[order] if add else 0.0)
                    v = v / safe if f.function == "mean" else v
                else:
                    v = self._extreme(f.function, f.field, lo, hi, np.asarray(current[f.field], np.float64)[order] if add else None)
                col = np.empty(len(order))
                col[order] = np.where(count > 0, v, 0.0)
                out[name] = col.astype(np.int64) if f.function == "count" else col
        return out

    def _extreme(self, fn: str, field: str, lo: np.ndarray, hi: np.ndarray, current) -> np.ndarray:
        """Min or max over tiles [lo, hi) per query (reduceat on interleaved bounds), folded with the current event."""
        arr = self.minmax[(fn, field)]
        ufunc = np.minimum if fn == "min" else np.maximum
        if len(lo):
            v = ufunc.reduceat(arr, np.column_stack([lo, hi]).ravel())[::2]
        else:
            v = np.zeros(0)
        v = np.where(hi > lo, v, np.inf if fn == "min" else -np.inf)
        return v if current is None else ufunc(v, np.asarray(current, np.float64))


def window_index(agg: EntityAggregation, tx: pd.DataFrame, labels=None, rows: np.ndarray | None = None) -> WindowIndex:
    """The ``WindowIndex`` of ``agg`` over the events of ``tx`` (``rows``: the de-duplicated positions, see ``unique_events``)."""
    ev = tx.iloc[unique_events(tx, (agg,)) if rows is None else rows]
    t = utc_us(ev[_column(ev, agg.event_input.time_field)])
    keys = _keys(ev, agg)
    fields = {f.field: ev[_column(ev, f.field)].to_numpy(np.float64) for f in agg.features if f.field}
    if not agg.uses_labels:
        return WindowIndex(agg, keys, t, fields)
    return WindowIndex(agg, keys, t, fields, *positive_labels(agg, ev, t, keys, labels))


def event_features(tx: pd.DataFrame, labels=None, aggregations: Sequence[EntityAggregation] = AGGREGATIONS) -> dict[str, np.ndarray]:
    """Every feature of ``aggregations`` for each row of ``tx`` (input order) at its own event time.

    The row's own event is the current event: counted once by the delay-0 windows. ``labels``:
    one frame for every label input, frames by source name, or None (TX_FRAUD, known at once).
    """
    rows = unique_events(tx, aggregations)
    out: dict[str, np.ndarray] = {}
    for agg in aggregations:
        t = utc_us(tx[_column(tx, agg.event_input.time_field)])
        current = {f.field: tx[_column(tx, f.field)].to_numpy(np.float64) for f in agg.features if f.field}
        out.update(window_index(agg, tx, labels, rows).features(_keys(tx, agg), t, current))
    return out


def transaction_features(tx: pd.DataFrame, labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per row of ``tx`` (input order): ids, TX_DATETIME and every ``MODEL_INPUTS`` column.

    ``labels``: the ``fraud_labels`` events (transaction_id, tx_fraud, and optionally tx_datetime,
    the join keys and label_datetime); None takes TX_FRAUD of ``tx`` as labels known at once.
    Count features are int64, the others float64.
    """
    t = utc_us(tx[_column(tx, "tx_datetime")])
    out = pd.DataFrame({c: tx[_column(tx, c)].to_numpy() for c in ID_COLUMNS})
    out["TX_DATETIME"] = pd.to_datetime(t * 1000, utc=True)
    out["tx_amount"] = tx[_column(tx, "tx_amount")].to_numpy().astype(np.float64)
    weekend, night = calendar_features(np.floor_divide(t, 1_000_000))
    out["tx_during_weekend"], out["tx_during_night"] = weekend.astype(np.float64), night.astype(np.float64)
    for name, col in event_features(tx, labels).items():
        out[name] = col
    missing = [c for c in MODEL_INPUTS if c not in out.columns]
    if missing:  # a model input that no aggregation declares is a repo bug, not bad data
        raise ConfigurationError(f"MODEL_INPUTS {missing} are not produced by AGGREGATIONS")
    return out[ID_COLUMNS + MODEL_INPUTS]


def entity_features_at(tx: pd.DataFrame, labels: pd.DataFrame | None = None,
                       as_of: Mapping[str, Mapping[object, datetime | pd.Timestamp]] | None = None,
                       aggregations: Sequence[EntityAggregation] = AGGREGATIONS) -> tuple[pd.DataFrame, ...]:
    """Features of every entity at a time, without a current event: one frame per aggregation (declaration order).

    Each entity is evaluated at its last event time (whose own tile is still open, so that event is
    not counted), unless ``as_of[join_key][entity]`` gives another time (entities listed there but
    absent from ``tx`` get empty windows). Frames are indexed by the join key and hold the
    aggregation's features plus ``event_timestamp``.
    """
    rows = unique_events(tx, aggregations)
    frames = []
    for agg in aggregations:
        index = window_index(agg, tx, labels, rows)
        ev = tx.iloc[rows]
        last = pd.Series(utc_us(ev[_column(ev, agg.event_input.time_field)])).groupby(_keys(ev, agg)).max()
        overrides = (as_of or {}).get(agg.join_key, {})
        if overrides:
            extra = pd.Series(utc_us(pd.Series(list(overrides.values()))), index=list(overrides), dtype=np.int64)
            last = pd.concat([last[~last.index.isin(extra.index)], extra]).sort_index()
        q_keys, q_t = last.index.to_numpy(), last.to_numpy().astype(np.int64)
        frame = pd.DataFrame(index.features(q_keys, q_t), index=pd.Index(q_keys, name=agg.join_key))
        frame["event_timestamp"] = pd.to_datetime(q_t * 1000, utc=True)
        frames.append(frame)
    return tuple(frames)
