"""Offline log of the feature repo: append-only parquet files partitioned by event date.

Layout: ``<offline_dir>/<table>/<YYYY-MM-DD>/part-<writer>-<seq>.parquet``. Every flush
writes new files and never rewrites old ones (Feast's own offline push rewrites the whole
file on every push).

Tables written by the engine: the raw, validated events, ``transactions`` (transaction_id,
tx_datetime, customer_id, terminal_id, tx_amount) and ``fraud_labels`` (transaction_id,
tx_datetime, customer_id, terminal_id, tx_fraud, label_datetime), each with an
``event_timestamp`` column (UTC; for labels the time they became known). Rows may repeat after
a restart (at-least-once delivery). Training sets are computed from these events
(``components.dataset``), never from feature rows materialized at processing time.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TRANSACTIONS = "transactions"
FRAUD_LABELS = "fraud_labels"


class OfflineLog:
    """Buffers rows per table and writes them as new parquet files on ``flush``.

    Writes go to a temporary name and are renamed into place, so a reader (or a crash)
    never sees half a file. At-least-once delivery can log a row twice after a restart;
    readers de-duplicate on their natural key (see ``read_table``).
    """

    def __init__(self, root: Path, writer_id: str | None = None):
        self.root = Path(root)
        self.writer_id = writer_id or uuid.uuid4().hex[:8]
        self._rows: dict[str, list[dict]] = defaultdict(list)
        self._seq = 0

    def append(self, table: str, row: dict) -> None:
        self._rows[table].append(row)

    def extend(self, table: str, rows: list[dict]) -> None:
        self._rows[table].extend(rows)

    @property
    def pending(self) -> int:
        return sum(len(r) for r in self._rows.values())

    def flush(self) -> int:
        """Write every buffered row; returns the number of rows written."""
        written = 0
        for table, rows in self._rows.items():
            if not rows:
                continue
            df = pd.DataFrame(rows)
            df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], utc=True)
            for day, part in df.groupby(df["event_timestamp"].dt.strftime("%Y-%m-%d"), sort=False):
                self._write(table, day, part)
            written += len(rows)
        self._rows.clear()
        return written

    def _write(self, table: str, day: str, part: pd.DataFrame) -> None:
        self._write_arrow(table, day, pa.Table.from_pandas(part, preserve_index=False))

    def _write_arrow(self, table: str, day: str, part: pa.Table) -> None:
        """One new file ``<table>/<day>/part-<writer>-<seq>.parquet``, renamed into place once complete."""
        directory = self.root / table / day
        directory.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"part-{self.writer_id}-{self._seq:08d}.parquet"
        tmp = directory / f".{name}.tmp"
        pq.write_table(part, tmp)
        os.replace(tmp, directory / name)


def log_files(root: Path, table: str, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None) -> list[Path]:
    """The parquet files of one table whose event date may hold times in [start, end) (sorted; none if absent)."""
    base = Path(root) / table
    if not base.exists():
        return []
    files = []
    for day_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        day = pd.Timestamp(day_dir.name, tz="UTC")
        if start is not None and day + pd.Timedelta(days=1) <= start:
            continue
        if end is not None and day >= end:
            continue
        files += sorted(day_dir.glob("part-*.parquet"))
    return files


def read_table(root: Path, table: str, start: pd.Timestamp | None = None, end: pd.Timestamp | None = None,
               key: list[str] | None = None) -> pd.DataFrame:
    """Read one table of the log, optionally limited to event times in [start, end), de-duplicated on ``key``."""
    files = log_files(root, table, start, end)
    if not files:
        return pd.DataFrame()
    df = pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)
    if start is not None:
        df = df[df["event_timestamp"] >= start]
    if end is not None:
        df = df[df["event_timestamp"] < end]
    if key:
        df = df.drop_duplicates(subset=key, keep="last")
    return df.reset_index(drop=True)
