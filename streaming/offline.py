"""The engine's side of the offline log: rows with epoch-second times, converted once per flush.

``feature_repo.offline_log.OfflineLog`` owns the layout (table/date/part files, written under a
temporary name and renamed); this subclass only changes how a buffer becomes frames: columns are
built straight from the row dicts, epoch seconds become UTC timestamps in one vectorised step,
and days are split by integer arithmetic instead of formatting every timestamp.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from feature_repo.offline_log import OfflineLog

DAY_S = 86400


def epoch_to_utc(values: list) -> pd.DatetimeIndex:
    """UTC timestamps (ns) from epoch seconds, ``None`` -> NaT; rounded to the microsecond like ``datetime``."""
    secs = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return pd.to_datetime(np.round(secs * 1e6), unit="us", utc=True).as_unit("ns")


class EpochOfflineLog(OfflineLog):
    """An ``OfflineLog`` whose buffered rows carry times as epoch seconds.

    ``timestamp_columns(table)`` names the columns to convert; ``rows`` is the live buffer the
    engine appends to (by table), so no per-event copying happens between the two.
    """

    def __init__(self, root: Path, timestamp_columns: Callable[[str], tuple[str, ...]], writer_id: str | None = None):
        super().__init__(root, writer_id)
        self._timestamp_columns = timestamp_columns
        self.rows: dict[str, list[dict]] = self._rows

    def take(self) -> dict[str, list[dict]]:
        """The buffered rows by table, leaving an empty buffer (``rows`` is the new one)."""
        tables = self._rows
        self._rows = self.rows = defaultdict(list)
        return tables

    def flush(self) -> int:
        """Write every buffered row as new files, one per (table, event date); returns the number of rows."""
        return self.write(self.take())

    def write(self, tables: dict[str, list[dict]]) -> int:
        """Write rows taken with ``take`` (on any thread, one writer at a time); returns the number of rows."""
        written = 0
        for table, rows in tables.items():
            if not rows:
                continue
            frame = _frame(rows)
            day = (frame["event_timestamp"].to_numpy() // DAY_S).astype(np.int64) if len(frame) else np.zeros(0, np.int64)
            for col in self._timestamp_columns(table):
                if col in frame:
                    frame[col] = epoch_to_utc(frame[col].tolist())
            for d in np.unique(day):
                part = frame[day == d] if len(day) and (day != d).any() else frame
                self._write(table, pd.Timestamp(int(d) * DAY_S, unit="s").strftime("%Y-%m-%d"), part.reset_index(drop=True))
            written += len(rows)
        return written


def _frame(rows: list[dict]) -> pd.DataFrame:
    keys = list(rows[0])
    if all(len(r) == len(keys) for r in rows):
        try:
            return pd.DataFrame({k: [r[k] for r in rows] for k in keys}, columns=keys)
        except KeyError:
            pass  # rows of one table with different fields: let pandas align them
    return pd.DataFrame(rows)

