"""Point-in-time correct train / validation / test sets computed from the raw event log with DuckDB (handbook ch. 3.4).

Features come from the declared aggregations (``feature_repo.aggregations``, whose docstring is
the definition) evaluated on the raw, validated events of the offline log, never from feature
rows materialized at processing time: the same definition the streaming engine folds into tiles
and the transformer merges at request time. Per aggregation, in SQL:

1. events de-duplicated by (id, event time); on-time positive labels, one per event;
2. tiles by ``GROUP BY`` (entity, floor(time / tile)): count, sums, minima, maxima, labels;
3. running sums of the tiles per entity (a window function);
4. per query and window, the two window bounds (tile indices) as rows, each ``ASOF`` joined to
   the last tile before it: count / sum / labels = running sum at the end - at the start;
5. minima and maxima, only when declared, by a range join of the queries' windows on the tiles.

Rows depend only on the set of events: not on arrival order, duplicates or restarts.

The split follows the handbook: a training window, a delay window (labels of recent
transactions are not known yet when a model is trained) and a test window. Known-compromised
cards are removed from each test day as the handbook does, so the test measures the
detection of *new* compromised cards.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import duckdb
import numpy as np
import pandas as pd

from feature_repo.aggregations import AGGREGATIONS, EntityAggregation, _us
from feature_repo.model_inputs import FEATURE_SERVICE, MODEL_INPUTS, calendar_features
from feature_repo.offline_log import FRAUD_LABELS, TRANSACTIONS, log_files, read_table
from rtml_common.errors import InvalidInputError

LABEL = "tx_fraud"
ID_COLUMNS = ["transaction_id", "customer_id", "terminal_id", "event_timestamp"]
DAY = pd.Timedelta(days=1)
TIME_COLUMN = "event_timestamp"  # the log's time column: the event time for events, the known time for labels


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


def history_horizon(aggregations: Sequence[EntityAggregation] = AGGREGATIONS) -> pd.Timedelta:
    """How far before a query its windows reach: the log is read from (first query - this)."""
    return pd.Timedelta(max(a.horizon for a in aggregations))


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


def epoch_seconds(ts: pd.Series) -> np.ndarray:
    """Seconds since the epoch of a UTC timestamp column, whatever its resolution."""
    return ((ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


# -- the DuckDB builder ------------------------------------------------------------------------

def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection in UTC with ``rtml_fdiv`` (floor division; DuckDB's ``//`` truncates)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("CREATE OR REPLACE MACRO rtml_fdiv(a, b) AS (a - (((a % b) + b) % b)) // b")
    return con


def attach_frames(con: duckdb.DuckDBPyConnection, tables: Mapping[str, pd.DataFrame]) -> None:
    """Raw event tables given as frames (columns as in the log), as views ``raw_<table>``."""
    for table, frame in tables.items():
        con.register(f"raw_{table}", frame)


def attach_log(con: duckdb.DuckDBPyConnection, offline_dir: Path, tables: Sequence[str],
               start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> None:
    """The log's tables as views ``raw_<table>`` over their parquet files with event dates in [start, end)."""
    for table in tables:
        files = [str(f) for f in log_files(Path(offline_dir), table, start, end)]
        if files:
            con.execute(f"CREATE OR REPLACE VIEW {_q('raw_' + table)} AS SELECT * FROM read_parquet({files!r}, union_by_name = true)")
        else:  # no rows: a view without columns, which the readers below treat as empty
            con.execute(f"CREATE OR REPLACE VIEW {_q('raw_' + table)} AS SELECT NULL AS {TIME_COLUMN} WHERE false")


def _columns(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, tuple[str, str]]:
    """lower-case name -> (name, DuckDB type) of a relation's columns."""
    return {r[0].lower(): (r[0], str(r[1])) for r in con.execute(f"DESCRIBE SELECT * FROM {_q(relation)}").fetchall()}


def _time_us(col: str, dtype: str) -> str:
    """SQL for a timestamp column as integer microseconds since the epoch (floored, like the numpy reference)."""
    if "TIMESTAMP" in dtype.upper() or dtype.upper() == "DATE":
        return f"rtml_fdiv(epoch_ns({col}), 1000)"
    if "NULL" in dtype.upper():  # a column that is null in every file
        return "NULL::BIGINT"
    raise InvalidInputError(f"column {col} has type {dtype}, expected a timestamp")


def _key_sql(col: str, agg: EntityAggregation) -> str:
    return f"CAST({col} AS {'BIGINT' if agg.key_type == 'int' else 'VARCHAR'})"


def _event_fields(aggs: Sequence[EntityAggregation]) -> tuple[list[EntityAggregation], list[str]]:
    """The first aggregation of each join key (declaration order) and the aggregated fields (name order)."""
    by_key: dict[str, EntityAggregation] = {}
    for a in aggs:
        by_key.setdefault(a.join_key, a)
    return list(by_key.values()), sorted({f.field for a in aggs for f in a.features if f.field})


def _normalized_events(con: duckdb.DuckDBPyConnection, relation: str, aggs: Sequence[EntityAggregation], target: str) -> None:
    """``target``: the events of ``relation`` once per (id, event time), with t_us, join keys and fields.

    Should copies of an event differ, the one with the smallest join keys, then fields, is kept
    (``feature_repo.batch_features.unique_events`` keeps the same copy).
    """
    cols = _columns(con, relation)
    inp = aggs[0].event_input
    keyed, fields = _event_fields(aggs)
    need = [inp.id_field] + [a.join_key for a in keyed] + fields
    missing = [c for c in need if c.lower() not in cols]
    if missing:
        raise InvalidInputError(f"events of '{inp.source}' lack columns {missing}; they have {[c for c, _ in cols.values()]}")
    time_col = cols.get(inp.time_field.lower()) or cols.get(TIME_COLUMN)
    if time_col is None:
        raise InvalidInputError(f"events of '{inp.source}' have neither {inp.time_field} nor {TIME_COLUMN}")
    select = [f"{_q(cols[inp.id_field.lower()][0])} AS {_q(inp.id_field)}", f"{_time_us(_q(time_col[0]), time_col[1])} AS t_us"]
    select += [f"{_key_sql(_q(cols[a.join_key.lower()][0]), a)} AS {_q(a.join_key)}" for a in keyed]
    select += [f"CAST({_q(cols[f.lower()][0])} AS DOUBLE) AS {_q(f)}" for f in fields]
    order = ", ".join(_q(c) for c in [a.join_key for a in keyed] + fields) or "t_us"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {_q(target)} AS
        SELECT {', '.join(select)} FROM {_q(relation)}
        QUALIFY row_number() OVER (PARTITION BY {_q(inp.id_field)}, t_us ORDER BY {order}) = 1""")


def _positives(con: duckdb.DuckDBPyConnection, agg: EntityAggregation, events: str) -> str:
    """SQL of the (k, t_us) of events marked by an on-time positive label, each event once.

    A label counts in the tile of its event time for its own entity (the engine folds it there
    without looking the event up); it counts iff its value is 1 and it became known no later than
    ``label_delay`` after its event (known time null or absent: at its event time). A label without
    event time or join key takes them from its event (by id).
    """
    parts = []
    for inp in agg.inputs:
        if inp.role != "label":
            continue
        cols = _columns(con, f"raw_{inp.source}")
        if inp.id_field.lower() not in cols or inp.value_field.lower() not in cols:
            continue  # an empty table (or a log without this source): no labels
        col = lambda name: f"l.{_q(cols[name.lower()][0])}"  # noqa: E731
        joins, on = "", []
        t = _time_us(col(inp.time_field), cols[inp.time_field.lower()][1]) if inp.time_field.lower() in cols else None
        k = _key_sql(col(agg.join_key), agg) if agg.join_key.lower() in cols else None
        if t is None or k is None:
            on = [f"e.{_q(inp.id_field)} = {col(inp.id_field)}"] + ([f"e.t_us = {t}"] if t else []) + (
                [f"e.{_q(agg.join_key)} = {k}"] if k else [])
            joins = f"JOIN {_q(events)} e ON {' AND '.join(on)}"
            t, k = t or "e.t_us", k or f"e.{_q(agg.join_key)}"
        known = cols.get((inp.known_field or "").lower())
        known_us = _time_us(col(known[0]), known[1]) if known else "NULL::BIGINT"
        parts.append(f"""SELECT DISTINCT {k} AS k, {col(inp.id_field)} AS id, {t} AS t_us
            FROM {_q('raw_' + inp.source)} l {joins}
            WHERE {col(inp.value_field)} = 1 AND coalesce({known_us}, {t}) <= {t} + {_us(agg.label_delay)}""")
    empty = f"SELECT {_key_sql('NULL', agg)} AS k, NULL::BIGINT AS id, NULL::BIGINT AS t_us WHERE false"
    return f"SELECT DISTINCT k, id, t_us FROM ({' UNION ALL '.join(parts) or empty})"


def _ir_columns(agg: EntityAggregation) -> list[tuple[str, str]]:
    """The (kind, field) intermediate values the features need besides count and labels."""
    out: list[tuple[str, str]] = []
    for f in agg.features:
        kind = {"sum": "sum", "mean": "sum", "min": "min", "max": "max"}.get(f.function)
        if kind and (kind, f.field) not in out:
            out.append((kind, f.field))
    return out


def _aggregation_sql(con: duckdb.DuckDBPyConnection, i: int, agg: EntityAggregation, events: str, current: bool) -> str:
    """Creates tiles_i / win_i (/ ext_i) and returns the SELECT of agg's features per query of ``q``."""
    tile = _us(agg.tile)
    irs = _ir_columns(agg)
    key = _q(agg.join_key)
    ir_name = {c: f"{c[0]}_{j}" for j, c in enumerate(irs)}
    ev_vals = ", ".join([f"{_q(f)} AS {ir_name[(k, f)]}" for k, f in irs])
    lab_vals = ", ".join([f"NULL::DOUBLE AS {ir_name[c]}" for c in irs])
    agg_vals = ", ".join([f"coalesce(sum({n}), 0) AS {n}" if k == "sum" else f"{k}({n}) AS {n}" for (k, _), n in ir_name.items()])
    sums = [n for (k, _), n in ir_name.items() if k == "sum"]
    running = ", ".join(f"sum({c}) OVER w AS c_{c}" for c in ["n", "lab"] + sums)
    lab_source = _positives(con, agg, events) if agg.uses_labels else f"SELECT {key} AS k, t_us FROM {_q(events)} WHERE false"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE tiles_{i} AS
        SELECT *, {running} FROM (
            SELECT k, rtml_fdiv(t_us, {tile}) AS tile, sum(n)::DOUBLE AS n, sum(lab)::DOUBLE AS lab{', ' + agg_vals if agg_vals else ''}
            FROM (SELECT {key} AS k, t_us, 1 AS n, 0 AS lab{', ' + ev_vals if ev_vals else ''} FROM {_q(events)}
                  UNION ALL
                  SELECT k, t_us, 0, 1{', ' + lab_vals if lab_vals else ''} FROM ({lab_source}))
            GROUP BY ALL)
        WINDOW w AS (PARTITION BY k ORDER BY tile ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)""")
    ends = " UNION ALL ".join(
        f"SELECT qid, {key} AS k, {wi} AS w, rtml_fdiv(t_us - {_us(w.delay)}, {tile}) AS e, "
        f"rtml_fdiv(t_us - {_us(w.delay)}, {tile}) - {_us(w.length) // tile} AS s FROM q" for wi, w in enumerate(agg.windows))
    diffs = ", ".join(f"sum(b.sgn * coalesce(p.c_{c}, 0)) AS {c}" for c in ["n", "lab"] + sums)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE win_{i} AS
        SELECT b.qid, b.w, {diffs}
        FROM (SELECT qid, k, w, 1 AS sgn, e AS b FROM ({ends}) UNION ALL SELECT qid, k, w, -1, s FROM ({ends})) b
        ASOF LEFT JOIN tiles_{i} p ON b.k = p.k AND b.b > p.tile
        GROUP BY b.qid, b.w""")
    extremes = [(c, n) for c, n in ir_name.items() if c[0] in ("min", "max")]
    if extremes:  # the only range join: minima and maxima have no running form
        con.execute(f"""CREATE OR REPLACE TEMP TABLE ext_{i} AS
            SELECT r.qid, r.w, {', '.join(f'{c[0]}(p.{n}) AS {n}' for c, n in extremes)}
            FROM ({ends}) r JOIN tiles_{i} p ON p.k = r.k AND p.tile >= r.s AND p.tile < r.e
            GROUP BY r.qid, r.w""")
    cols, joins = [], []
    for wi, w in enumerate(agg.windows):
        add = current and w.delay.total_seconds() == 0  # the query's own event, counted once by delay-0 windows
        joins.append(f"LEFT JOIN win_{i} w{wi} ON w{wi}.qid = q.qid AND w{wi}.w = {wi}")
        if extremes:
            joins.append(f"LEFT JOIN ext_{i} x{wi} ON x{wi}.qid = q.qid AND x{wi}.w = {wi}")
        n = f"(coalesce(w{wi}.n, 0){' + 1' if add else ''})"
        for f in agg.features:
            if f.function == "count":
                v = n
            elif f.function == "ratio":
                v = f"coalesce(w{wi}.lab, 0) / {n}"
            elif f.function in ("sum", "mean"):
                v = f"(coalesce(w{wi}.{ir_name[('sum', f.field)]}, 0){' + q.' + _q(f.field) if add else ''})"
                v = f"{v} / {n}" if f.function == "mean" else v
            else:
                fn = "least" if f.function == "min" else "greatest"
                v = f"{fn}(x{wi}.{ir_name[(f.function, f.field)]}{', q.' + _q(f.field) if add else ''})"
            cols.append(f"CASE WHEN {n} > 0 THEN {v} ELSE 0 END::DOUBLE AS {_q(f.name.format(window=w.suffix))}")
    return f"SELECT q.qid, {', '.join(cols)} FROM q {' '.join(joins)}"


def prepare_events(con: duckdb.DuckDBPyConnection, aggregations: Sequence[EntityAggregation] = AGGREGATIONS) -> None:
    """Tables ``ev_<source>``: each event source's raw events (views ``raw_<source>``) once per (id, event time)."""
    for src in dict.fromkeys(a.event_input.source for a in aggregations):
        _normalized_events(con, f"raw_{src}", [a for a in aggregations if a.event_input.source == src], f"ev_{src}")


def window_features(con: duckdb.DuckDBPyConnection, aggregations: Sequence[EntityAggregation] = AGGREGATIONS,
                    current: bool = True) -> pd.DataFrame:
    """Every feature of ``aggregations`` for each query of table ``q`` (qid, t_us, join keys, fields), by qid.

    The events are the tables made by ``prepare_events``; labels are read from the views
    ``raw_<source>`` (``attach_log`` / ``attach_frames``). ``current``: each query is an event
    itself, counted once by the delay-0 windows (a training row's own transaction); otherwise the
    features are the entity's state at t_us.
    """
    selects = [_aggregation_sql(con, i, a, f"ev_{a.event_input.source}", current) for i, a in enumerate(aggregations)]
    joined = f"({selects[0]}) a0" + "".join(f" JOIN ({s}) a{i + 1} USING (qid)" for i, s in enumerate(selects[1:]))
    return con.sql(f"SELECT * FROM {joined} ORDER BY qid").df()


def _event_queries(con: duckdb.DuckDBPyConnection, events: str, id_field: str, where: str = "TRUE") -> None:
    """Table ``q``: the (de-duplicated) events of ``events`` matching ``where``, numbered by (time, id)."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE q AS
        SELECT row_number() OVER (ORDER BY t_us, {_q(id_field)}) AS qid, * FROM {_q(events)} WHERE {where}""")


def event_features(tables: Mapping[str, pd.DataFrame], aggregations: Sequence[EntityAggregation] = AGGREGATIONS) -> pd.DataFrame:
    """Features of every (de-duplicated) event of the first aggregation's source, at its own time, from raw frames.

    ``tables``: raw event frames by source name, columns as in the offline log. Rows are ordered by
    (event time, id) and carry the id, ``t_us``, the join keys and the fields of each event.
    """
    con = connect()
    attach_frames(con, tables)
    prepare_events(con, aggregations)
    _event_queries(con, f"ev_{aggregations[0].event_input.source}", aggregations[0].event_input.id_field)
    feats = window_features(con, aggregations)
    return con.sql("SELECT * FROM q ORDER BY qid").df().merge(feats, on="qid").drop(columns="qid")


def features_at(tables: Mapping[str, pd.DataFrame], queries: pd.DataFrame,
                aggregations: Sequence[EntityAggregation] = AGGREGATIONS, current: bool = False) -> pd.DataFrame:
    """Features of each row of ``queries`` (join keys, ``t_us``; the fields too when ``current``), in its order.

    ``tables``: raw event frames by source name. Without ``current`` a row is an entity's state at
    ``t_us`` (what the online tiles give at a request time before the request's own event).
    """
    con = connect()
    attach_frames(con, tables)
    con.register("query_frame", queries.assign(qid=np.arange(len(queries), dtype=np.int64)))
    con.execute("CREATE OR REPLACE TEMP TABLE q AS SELECT * FROM query_frame")
    prepare_events(con, aggregations)
    return window_features(con, aggregations, current).drop(columns="qid")


def _finish(rows: pd.DataFrame) -> pd.DataFrame:
    """Builder output -> the dataset's rows: ids, event_timestamp, MODEL_INPUTS as float32, sorted by (time, id)."""
    rows["event_timestamp"] = pd.to_datetime(rows["t_us"].to_numpy(np.int64) * 1000, utc=True)
    weekend, night = calendar_features(np.floor_divide(rows["t_us"].to_numpy(np.int64), 1_000_000))
    rows["tx_during_weekend"], rows["tx_during_night"] = weekend, night
    absent = [c for c in MODEL_INPUTS if c not in rows.columns]
    if absent:  # a model input no aggregation declares is a repo bug, not bad data
        raise InvalidInputError(f"the aggregations produce no columns {absent} of MODEL_INPUTS")
    out = rows[[c for c in ID_COLUMNS if c in rows.columns] + [c for c in MODEL_INPUTS if c not in ID_COLUMNS]].copy()
    out[MODEL_INPUTS] = out[MODEL_INPUTS].astype(np.float32)
    return out.sort_values(["event_timestamp", "transaction_id"], kind="stable").reset_index(drop=True)


def point_in_time_features(offline_dir: Path, entities: pd.DataFrame) -> pd.DataFrame:
    """Features of each transaction of ``entities`` as of its own time, from the raw log under ``offline_dir``.

    ``entities``: transactions (transaction_id, customer_id, terminal_id, tx_amount, and tx_datetime
    or event_timestamp), de-duplicated here by (id, time). The log is read from the first one's time
    minus the windows' horizon. Returns ids, ``event_timestamp`` and ``MODEL_INPUTS`` (float32),
    sorted by (event_timestamp, transaction_id); an entity without history has empty windows.
    """
    con = connect()
    src = AGGREGATIONS[0].event_input.source
    con.register("raw_query", entities)
    _normalized_events(con, "raw_query", [a for a in AGGREGATIONS if a.event_input.source == src], "ev_query")
    _event_queries(con, "ev_query", AGGREGATIONS[0].event_input.id_field)
    lo, hi = con.execute("SELECT min(t_us), max(t_us) FROM q").fetchall()[0]
    if lo is None:
        raise InvalidInputError("no transactions to compute features for")
    start = pd.Timestamp(lo * 1000, tz="UTC") - history_horizon()
    tables = dict.fromkeys(i.source for a in AGGREGATIONS for i in a.inputs)
    attach_log(con, Path(offline_dir), [t for t in tables if t == src], start, pd.Timestamp(hi * 1000, tz="UTC") + DAY)
    attach_log(con, Path(offline_dir), [t for t in tables if t != src], start)  # labels arrive late: no end
    prepare_events(con)
    feats = window_features(con)
    return _finish(con.sql("SELECT * FROM q ORDER BY qid").df().merge(feats, on="qid"))


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


def _us_of(ts: pd.Timestamp) -> int:
    return int(ts.value // 1000)


def _target_labels(con: duckdb.DuckDBPyConnection, since: pd.Timestamp) -> pd.DataFrame:
    """One row per labelled transaction made since ``since``: tx_fraud = 1 if any label says so, whenever known."""
    cols = _columns(con, f"raw_{FRAUD_LABELS}")
    needed = ["transaction_id", "customer_id", LABEL, "tx_datetime"]
    if not cols or list(cols) == [TIME_COLUMN]:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in needed[:3]} | {"tx_datetime": pd.Series(dtype="datetime64[ns, UTC]")})
    missing = [c for c in needed if c not in cols]
    if missing:
        raise InvalidInputError(f"offline log table '{FRAUD_LABELS}' lacks columns {missing}")
    t = _time_us(_q(cols["tx_datetime"][0]), cols["tx_datetime"][1])
    labels = con.sql(f"""SELECT transaction_id, min(customer_id) AS customer_id, max({LABEL})::BIGINT AS {LABEL},
                                min({t}) AS t_us
                         FROM {_q('raw_' + FRAUD_LABELS)} WHERE {t} >= {_us_of(since)}
                         GROUP BY transaction_id ORDER BY transaction_id""").df()
    labels["tx_datetime"] = pd.to_datetime(labels.pop("t_us").to_numpy(np.int64) * 1000, utc=True)
    return labels


def build_training_sets(store, offline_dir: Path, train_start: str, train_days: int = 7, delay_days: int = 7,
                        test_days: int = 7, validation_fraction: float = 0.2, seed: int = 0) -> TrainingSets:
    """Train / validation / test sets with labels, point-in-time features, and known cards removed from test.

    Features are computed from the raw event log under ``offline_dir`` (read from train_start minus
    the windows' horizon); ``store`` is accepted for the pipeline's signature and not used.
    """
    del store  # features come from the raw log, not from Feast's offline store
    offline_dir = Path(offline_dir)
    w = split_windows(train_start, train_days, delay_days, test_days)
    history = w.train_start - history_horizon()
    con = connect()
    attach_log(con, offline_dir, [TRANSACTIONS], history, w.test_end)
    attach_log(con, offline_dir, [FRAUD_LABELS], history)  # labels arrive after their transaction: no end bound
    if not _columns(con, f"raw_{TRANSACTIONS}").keys() - {TIME_COLUMN}:
        raise InvalidInputError(f"no transactions in offline log table '{TRANSACTIONS}' under {offline_dir} between "
                                f"{history:%Y-%m-%d} and {w.test_end:%Y-%m-%d} (exclusive): empty date range")
    src = AGGREGATIONS[0].event_input
    prepare_events(con)
    in_sets = (f"(t_us >= {_us_of(w.train_start)} AND t_us < {_us_of(w.train_end)}) OR "
               f"(t_us >= {_us_of(w.test_start)} AND t_us < {_us_of(w.test_end)})")
    _event_queries(con, f"ev_{TRANSACTIONS}", src.id_field, in_sets)
    for start, end, what in ((w.train_start, w.train_end, "training"), (w.test_start, w.test_end, "test")):
        if not con.execute(f"SELECT count(*) FROM q WHERE t_us >= {_us_of(start)} AND t_us < {_us_of(end)}").fetchall()[0][0]:
            raise InvalidInputError(f"no transactions in offline log table '{TRANSACTIONS}' under {offline_dir} between "
                                    f"{start:%Y-%m-%d} and {end:%Y-%m-%d} (exclusive): empty {what} window")
    rows = _finish(con.sql("SELECT * FROM q ORDER BY qid").df().merge(window_features(con), on="qid"))
    labels = _target_labels(con, w.train_start)
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
        "features_from": {"log": "raw events", "history_start": history.isoformat()},
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
