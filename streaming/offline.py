"""The engine's side of the offline log: rows with epoch-second times, written as Arrow columns.

``feature_repo.offline_log.OfflineLog`` owns the layout (table/date/part files, written under a
temporary name and renamed); this subclass only changes how a buffer becomes a file: columns
are taken straight from the engine's rows (tuples for feature views, dicts for raw events),
Arrow infers their types in C, epoch seconds become UTC timestamps in one vectorised step, and
days are split by integer arithmetic. No pandas on the way: building a DataFrame from Python
objects cost more than the windows themselves (a profile had it at a sixth of the GIL).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from feature_repo.offline_log import OfflineLog

DAY_S = 86400
EVENT_TIMESTAMP = "event_timestamp"
_UTC_NS = pa.timestamp("ns", tz="UTC")


def epoch_to_utc(values: list) -> pd.DatetimeIndex:
    """UTC timestamps (ns) from epoch seconds, ``None`` -> NaT; rounded to the microsecond like ``datetime``."""
    return pd.DatetimeIndex(_utc_array(values).to_pandas())


def _utc_array(values: list) -> pa.Array:
    """Arrow ``timestamp[ns, UTC]`` of epoch seconds (``None`` -> null), rounded to the microsecond like ``datetime``."""
    secs = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    missing = np.isnan(secs)
    ns = np.round(np.where(missing, 0.0, secs) * 1e6).astype(np.int64) * 1000
    return pa.array(ns, type=_UTC_NS, mask=missing if missing.any() else None)


class EpochOfflineLog(OfflineLog):
    """An ``OfflineLog`` whose buffered rows carry times as epoch seconds.

    ``timestamp_columns(table)`` names the columns to convert; ``row_columns(table)`` names the
    columns of a table whose rows are sequences (the engine's feature rows), ``None`` for tables
    of dict rows. ``rows`` is the live buffer the engine appends to (by table), so no per-event
    copying happens between the two.
    """

    def __init__(self, root: Path, timestamp_columns: Callable[[str], tuple[str, ...]],
                 row_columns: Callable[[str], tuple[str, ...] | None] = lambda table: None, writer_id: str | None = None):
        super().__init__(root, writer_id)
        self._timestamp_columns = timestamp_columns
        self._row_columns = row_columns
        self.rows: dict[str, list] = self._rows

    def take(self) -> dict[str, list]:
        """The buffered rows by table, leaving an empty buffer (``rows`` is the new one)."""
        tables = self._rows
        self._rows = self.rows = defaultdict(list)
        return tables

    def flush(self) -> int:
        """Write every buffered row as new files, one per (table, event date); returns the number of rows."""
        return self.write(self.take())

    def write(self, tables: dict[str, list]) -> int:
        """Write rows taken with ``take`` (on any thread, one writer at a time); returns the number of rows."""
        written = 0
        for table, rows in tables.items():
            if not rows:
                continue
            columns = self._columns(table, rows)
            day = (np.asarray(columns[EVENT_TIMESTAMP], dtype=np.float64) // DAY_S).astype(np.int64)
            stamps = set(self._timestamp_columns(table))
            arrow = pa.Table.from_arrays([_utc_array(v) if k in stamps else pa.array(v) for k, v in columns.items()],
                                         names=list(columns))
            days = np.unique(day)
            for d in days:
                part = arrow if len(days) == 1 else arrow.filter(pa.array(day == d))
                self._write_arrow(table, datetime.fromtimestamp(int(d) * DAY_S, tz=timezone.utc).strftime("%Y-%m-%d"), part)
            written += len(rows)
        return written

    def _columns(self, table: str, rows: list) -> dict[str, list]:
        names = self._row_columns(table)
        if names is not None:
            return dict(zip(names, map(list, zip(*rows))))
        keys = list(rows[0])
        if all(len(r) == len(keys) for r in rows):
            try:
                return {k: [r[k] for r in rows] for k in keys}
            except KeyError:
                pass
        keys = list(dict.fromkeys(k for r in rows for k in r))  # rows with different fields: missing ones are null
        return {k: [r.get(k) for r in rows] for k in keys}
