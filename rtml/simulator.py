"""Card-fraud transaction simulator (fraud handbook ch. 3.2), dataset I/O and the Kafka replay.

The generator follows the handbook's recipe (customer and terminal profiles on a 100x100 grid,
terminals linked by radius, Poisson daily counts, noon-centred times, normal amounts, three fraud
scenarios) but is vectorised over one seeded numpy ``Generator``: it reproduces the statistics of
the book's dataset, not its exact rows, and runs the book-size dataset in seconds instead of minutes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pandas as pd

from feature_repo.sources import FRAUD_LABELS, TRANSACTIONS
from rtml_common.errors import InvalidInputError, NotFoundError
from rtml_common.kafka import entity_key, json_bytes, make_producer
from rtml_common.settings import KafkaSettings

TRANSACTIONS_TOPIC = TRANSACTIONS.topic
LABELS_TOPIC = FRAUD_LABELS.topic
DEFAULT_LABEL_DELAY = timedelta(days=7)

COLUMNS = [
    "TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT",
    "TX_TIME_SECONDS", "TX_TIME_DAYS", "TX_FRAUD", "TX_FRAUD_SCENARIO",
]
GRID = 100.0
DAY_S = 86400
FRAUD_AMOUNT = 220.0
TERMINALS_PER_DAY, TERMINAL_COMPROMISE_DAYS = 2, 28
CUSTOMERS_PER_DAY, CUSTOMER_COMPROMISE_DAYS, CUSTOMER_FRAUD_FACTOR = 3, 14, 5.0


@dataclass(frozen=True)
class Simulation:
    """A generated dataset with the profiles and compromise draws behind it (tests check the rules on these)."""

    transactions: pd.DataFrame
    customers: pd.DataFrame
    terminals: pd.DataFrame
    compromised_terminals: np.ndarray
    """Shape (days, 2): terminals compromised from day d for 28 days."""
    compromised_customers: np.ndarray
    """Shape (days, 3): customers compromised from day d for 14 days."""


def _link_terminals(cx: np.ndarray, cy: np.ndarray, tx: np.ndarray, ty: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """CSR adjacency (offsets, terminal ids) of terminals strictly closer than ``radius`` to each customer."""
    r2 = radius * radius
    chunk = max(1, 4_000_000 // max(1, len(tx)))  # bounds the distance matrix to ~32 MB
    cols, counts = [], []
    for s in range(0, len(cx), chunk):
        d2 = (cx[s:s + chunk, None] - tx[None, :]) ** 2 + (cy[s:s + chunk, None] - ty[None, :]) ** 2
        rows, c = np.nonzero(d2 < r2)
        cols.append(c)
        counts.append(np.bincount(rows, minlength=d2.shape[0]))
    offsets = np.zeros(len(cx) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts) if counts else np.zeros(0, np.int64), out=offsets[1:])
    return offsets, (np.concatenate(cols) if cols else np.zeros(0, np.int64)).astype(np.int64)


def _apply_scenarios(df: pd.DataFrame, n_customers: int, n_terminals: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scenarios 1, 2, 3 in the handbook's order; the last scenario that marks a transaction wins."""
    amount = df["TX_AMOUNT"].to_numpy().copy()
    day = df["TX_TIME_DAYS"].to_numpy()
    terminal = df["TERMINAL_ID"].to_numpy()
    customer = df["CUSTOMER_ID"].to_numpy()
    fraud = np.zeros(len(df), dtype=np.int64)
    scenario = np.zeros(len(df), dtype=np.int64)
    n_start_days = int(day.max()) if len(df) else 0

    hit = amount > FRAUD_AMOUNT
    fraud[hit], scenario[hit] = 1, 1

    comp_t = np.array([rng.choice(n_terminals, TERMINALS_PER_DAY, replace=False) for _ in range(n_start_days)], dtype=np.int64).reshape(-1, TERMINALS_PER_DAY)
    if len(comp_t):
        # For each transaction find its terminal's latest compromise start <= its day.
        starts = np.repeat(np.arange(n_start_days, dtype=np.int64), TERMINALS_PER_DAY)
        big = n_start_days + 1
        keys = np.sort(comp_t.ravel() * big + starts)
        pos = np.searchsorted(keys, terminal * big + day, side="right") - 1
        ok = pos >= 0
        k = keys[np.clip(pos, 0, None)]
        hit = ok & (k // big == terminal) & (day - k % big < TERMINAL_COMPROMISE_DAYS)
        fraud[hit], scenario[hit] = 1, 2

    comp_c = np.array([rng.choice(n_customers, CUSTOMERS_PER_DAY, replace=False) for _ in range(n_start_days)], dtype=np.int64).reshape(-1, CUSTOMERS_PER_DAY)
    by_customer = np.argsort(customer, kind="stable")  # rows are time-sorted, so each customer's slice is too
    bounds = np.searchsorted(customer[by_customer], np.arange(n_customers + 1))
    for d, custs in enumerate(comp_c):
        picked = []
        for c in custs:
            rows = by_customer[bounds[c]:bounds[c + 1]]
            lo, hi = np.searchsorted(day[rows], [d, d + CUSTOMER_COMPROMISE_DAYS])
            picked.append(rows[lo:hi])
        rows = np.concatenate(picked)
        chosen = rng.choice(rows, len(rows) // 3, replace=False)
        # Repeated compromises compound, as in the handbook; the >220 rule is not re-run.
        amount[chosen] = np.round(amount[chosen] * CUSTOMER_FRAUD_FACTOR, 2)
        fraud[chosen], scenario[chosen] = 1, 3

    df["TX_AMOUNT"], df["TX_FRAUD"], df["TX_FRAUD_SCENARIO"] = amount, fraud, scenario
    return comp_t, comp_c


def simulate(n_customers: int = 5000, n_terminals: int = 10000, n_days: int = 183, start_date: str | datetime = "2018-04-01",
             radius: float = 5.0, seed: int = 0) -> Simulation:
    """Generate a dataset and keep the profiles and compromise draws (see ``generate_transactions``)."""
    if n_customers < 1 or n_terminals < 1 or n_days < 1:
        raise InvalidInputError(f"n_customers, n_terminals and n_days must be >= 1, got {n_customers}, {n_terminals}, {n_days}")
    if radius <= 0:
        raise InvalidInputError(f"radius must be > 0, got {radius}")
    rng = np.random.default_rng(seed)
    cx, cy = rng.uniform(0, GRID, n_customers), rng.uniform(0, GRID, n_customers)
    mean_amount = rng.uniform(5, 100, n_customers)
    std_amount = mean_amount / 2
    mean_nb = rng.uniform(0, 4, n_customers)
    tx_, ty_ = rng.uniform(0, GRID, n_terminals), rng.uniform(0, GRID, n_terminals)
    offsets, adjacency = _link_terminals(cx, cy, tx_, ty_, radius)
    degree = np.diff(offsets)

    counts = rng.poisson(mean_nb[:, None], size=(n_customers, n_days))
    counts[degree == 0] = 0  # a customer with no terminal in reach cannot pay
    flat = counts.ravel()
    cust = np.repeat(np.repeat(np.arange(n_customers, dtype=np.int64), n_days), flat)
    day = np.repeat(np.tile(np.arange(n_days, dtype=np.int64), n_customers), flat)
    tod = np.trunc(rng.normal(DAY_S / 2, 20000, len(cust))).astype(np.int64)
    keep = (tod > 0) & (tod < DAY_S)  # out-of-day draws are dropped, not redrawn
    cust, day, tod = cust[keep], day[keep], tod[keep]

    mu = mean_amount[cust]
    amount = rng.normal(mu, std_amount[cust])
    neg = amount < 0
    amount[neg] = rng.uniform(0, 2 * mu[neg])
    amount = np.round(amount, 2)
    terminal = adjacency[offsets[cust] + (rng.random(len(cust)) * degree[cust]).astype(np.int64)]

    seconds = day * DAY_S + tod
    order = np.lexsort((cust, seconds))
    seconds, cust, terminal, amount, day = seconds[order], cust[order], terminal[order], amount[order], day[order]
    start = _utc(start_date).normalize()
    df = pd.DataFrame({
        "TRANSACTION_ID": np.arange(len(seconds), dtype=np.int64),
        "TX_DATETIME": start + pd.to_timedelta(seconds, unit="s"),
        "CUSTOMER_ID": cust,
        "TERMINAL_ID": terminal,
        "TX_AMOUNT": amount,
        "TX_TIME_SECONDS": seconds,
        "TX_TIME_DAYS": day,
    })
    comp_t, comp_c = _apply_scenarios(df, n_customers, n_terminals, rng)
    customers = pd.DataFrame({"CUSTOMER_ID": np.arange(n_customers), "x_customer_id": cx, "y_customer_id": cy, "mean_amount": mean_amount,
                              "std_amount": std_amount, "mean_nb_tx_per_day": mean_nb, "nb_terminals": degree})
    terminals = pd.DataFrame({"TERMINAL_ID": np.arange(n_terminals), "x_terminal_id": tx_, "y_terminal_id": ty_})
    return Simulation(df[COLUMNS], customers, terminals, comp_t, comp_c)


def generate_transactions(n_customers: int = 5000, n_terminals: int = 10000, n_days: int = 183, start_date: str | datetime = "2018-04-01",
                          radius: float = 5.0, seed: int = 0) -> pd.DataFrame:
    """The handbook's simulated transactions with fraud labels, sorted by time, ids 0..N-1.

    Defaults are the book's run (about 1.75M transactions, ~0.8 % fraud). ``TX_DATETIME`` is
    tz-aware UTC; the same ``seed`` gives the same rows.
    """
    return simulate(n_customers, n_terminals, n_days, start_date, radius, seed).transactions


def _utc(ts: Any) -> pd.Timestamp:
    """A timestamp in UTC; naive values are taken as UTC."""
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def normalize(df: pd.DataFrame) -> pd.DataFrame:
    """Bring a stored dataset to ``COLUMNS``: UTC timestamps, time-sorted, helpers filled in when absent."""
    missing = [c for c in ("TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD") if c not in df.columns]
    if missing:
        raise InvalidInputError(f"dataset lacks required columns {missing}; it has {list(df.columns)}")
    df = df.copy()
    ts = pd.to_datetime(df["TX_DATETIME"])
    df["TX_DATETIME"] = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    df = df.sort_values("TX_DATETIME", kind="stable").reset_index(drop=True)
    if "TRANSACTION_ID" not in df.columns:
        df["TRANSACTION_ID"] = np.arange(len(df), dtype=np.int64)
    if len(df) and ("TX_TIME_SECONDS" not in df.columns or "TX_TIME_DAYS" not in df.columns):
        secs = (df["TX_DATETIME"] - df["TX_DATETIME"].iloc[0].normalize()).dt.total_seconds().astype(np.int64)
        df["TX_TIME_SECONDS"], df["TX_TIME_DAYS"] = secs, secs // DAY_S
    if "TX_FRAUD_SCENARIO" not in df.columns:
        df["TX_FRAUD_SCENARIO"] = 0
    for c in ("TRANSACTION_ID", "CUSTOMER_ID", "TERMINAL_ID", "TX_TIME_SECONDS", "TX_TIME_DAYS", "TX_FRAUD", "TX_FRAUD_SCENARIO"):
        df[c] = df[c].astype(np.int64)
    df["TX_AMOUNT"] = df["TX_AMOUNT"].astype(np.float64)
    return df[COLUMNS]


def _read_one(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return pd.read_parquet(path)
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".pkl", ".pickle"):
        return pd.read_pickle(path)  # only for trusted files: the handbook publishes its data as pickles
    raise InvalidInputError(f"unsupported dataset file {path}: expected .parquet, .csv or .pkl")


def load_dataset(path: str | Path) -> pd.DataFrame:
    """Read a dataset for replay: a parquet/csv/pkl file, or a directory of them (the handbook's daily .pkl files)."""
    p = Path(path)
    if not p.exists():
        raise NotFoundError(f"dataset {p} does not exist")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".parquet", ".csv", ".pkl", ".pickle"))
        if not files:
            raise InvalidInputError(f"dataset directory {p} holds no .parquet, .csv or .pkl files")
        frames = [_read_one(f) for f in files]
        return normalize(pd.concat(frames, ignore_index=True))
    return normalize(_read_one(p))


def save_dataset(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a dataset as parquet (creating parent directories); ``load_dataset`` reads it back unchanged."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(p, index=False)
    return p


def shift_to(df: pd.DataFrame, start: str | datetime | pd.Timestamp) -> pd.DataFrame:
    """Shift every timestamp so the dataset's first day (its first midnight, UTC) becomes ``start``.

    Give a midnight ``start`` to keep weekdays and night hours meaningful; the relative helpers
    TX_TIME_SECONDS / TX_TIME_DAYS are unchanged.
    """
    out = df.copy()
    if len(out) == 0:
        return out
    first = out["TX_DATETIME"].min().normalize()
    out["TX_DATETIME"] = out["TX_DATETIME"] + (_utc(start) - first)
    return out


@dataclass(frozen=True)
class Event:
    """One Kafka record to produce: ``value`` is JSON-encoded on send; ``event_time`` orders the replay."""

    topic: str
    key: bytes
    value: dict
    event_time: datetime


def _iso(ts: np.ndarray) -> np.ndarray:
    """ISO 8601 UTC strings at seconds precision ('2018-04-01T00:07:56Z') from datetime64 values."""
    return np.char.add(np.datetime_as_string(ts.astype("datetime64[s]"), unit="s"), "Z")


def to_events(df: pd.DataFrame, label_delay: timedelta = DEFAULT_LABEL_DELAY, all_labels: bool = False, chunk: int = 20_000) -> Iterator[Event]:
    """Transactions and their fraud labels (``label_delay`` later) merged in event-time order.

    Only frauds get a label unless ``all_labels``. At equal event time a label comes before a
    transaction, so a consumer sees every label that is due when it scores. Encoding is done in
    chunks, so a partial replay (``limit``) does not pay for the whole dataset.
    """
    ts = df["TX_DATETIME"]
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    t_ns = ts.dt.tz_localize(None).to_numpy().astype("datetime64[ns]")
    fraud = df["TX_FRAUD"].to_numpy().astype(np.int64)
    n = len(df)
    lab = np.arange(n) if all_labels else np.flatnonzero(fraud == 1)
    times = np.concatenate([t_ns[lab] + np.timedelta64(pd.Timedelta(label_delay)), t_ns])
    kind = np.concatenate([np.zeros(len(lab), np.int8), np.ones(n, np.int8)])  # 0 = label sorts first at ties
    row = np.concatenate([lab, np.arange(n)])
    order = np.lexsort((row, kind, times))
    tid = df["TRANSACTION_ID"].to_numpy().astype(np.int64)
    cust = df["CUSTOMER_ID"].to_numpy().astype(np.int64)
    term = df["TERMINAL_ID"].to_numpy().astype(np.int64)
    amount = df["TX_AMOUNT"].to_numpy().astype(np.float64)
    for s in range(0, len(order), chunk):
        sel = order[s:s + chunk]
        r, k, et = row[sel], kind[sel], times[sel]
        tx_iso, ev_iso = _iso(t_ns[r]), _iso(et)
        ev_py = pd.DatetimeIndex(et, tz="UTC").to_pydatetime()
        for i in range(len(sel)):
            j = int(r[i])
            if k[i]:
                value = {"transaction_id": int(tid[j]), "tx_datetime": str(tx_iso[i]), "customer_id": int(cust[j]),
                         "terminal_id": int(term[j]), "tx_amount": float(amount[j])}
                yield Event(TRANSACTIONS_TOPIC, entity_key(int(cust[j])), value, ev_py[i])
            else:
                value = {"transaction_id": int(tid[j]), "tx_datetime": str(tx_iso[i]), "customer_id": int(cust[j]),
                         "terminal_id": int(term[j]), "tx_fraud": int(fraud[j]), "label_datetime": str(ev_iso[i])}
                yield Event(LABELS_TOPIC, entity_key(int(term[j])), value, ev_py[i])


class TokenBucket:
    """Rate limiter: ``rate`` tokens per second, bursts up to ``capacity``; sleeps in batches, not per event."""

    MIN_SLEEP_S = 0.005

    def __init__(self, rate: float, capacity: float | None = None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate <= 0:
            raise InvalidInputError(f"rate must be > 0 events/s, got {rate}")
        self.rate = float(rate)
        # Holding 100 ms of events lets a MIN_SLEEP_S nap refill many tokens at high rates.
        self.capacity = float(capacity) if capacity is not None else max(1.0, self.rate * 0.1)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.capacity
        self._last = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now

    def acquire(self) -> None:
        """Take one token, sleeping until one is available."""
        self._refill()
        while self._tokens < 1.0:
            self._sleep(max((1.0 - self._tokens) / self.rate, self.MIN_SLEEP_S))
            self._refill()
        self._tokens -= 1.0


def produce_events(settings: KafkaSettings, events: Iterable[Event], rate: float | None = None, limit: int | None = None,
                   producer: Any = None) -> int:
    """Send ``events`` (JSON values) to Kafka, at most ``rate`` per second and ``limit`` in all; returns how many.

    Record timestamps are left to the broker: replayed 2018 event times would make old segments
    eligible for deletion at once. Event time travels in the JSON value.
    """
    if limit is not None and limit < 0:
        raise InvalidInputError(f"limit must be >= 0, got {limit}")
    own = producer is None
    if own:
        producer = make_producer(settings)
    bucket = TokenBucket(rate) if rate else None
    sent = 0
    try:
        for ev in events:
            if limit is not None and sent >= limit:
                break
            if bucket is not None:
                bucket.acquire()
            producer.send(settings.topic(ev.topic), key=ev.key, value=json_bytes(ev.value))
            sent += 1
        producer.flush()
    finally:
        if own:
            producer.close()
    return sent
