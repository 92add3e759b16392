"""An independent stream and an independent batch reference for the feature-correctness tests.

Nothing here imports the engine, the feature repo's tile code or the training-set builder: the
generator has its own seeds and shapes (bursts on a hot terminal, events exactly on tile
boundaries, duplicates, labels late beyond the label delay, negative-then-positive labels), and
``reference_vectors`` computes the 12 window features straight from the documented semantics
(``feature_repo/aggregations.py``): 1-hour tiles, windows [end - L, end) with
end = floor((t - D) / 1h) * 1h, the current transaction in the customer windows (D = 0), terminal
windows delayed by 7 days, a label counting iff positive and known no later than 7 days after its
transaction, events and labels de-duplicated by (transaction id, transaction time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

H_US = 3600 * 1_000_000
DAY_US = 24 * H_US
WINDOW_DAYS = (1, 7, 30)
LABEL_DELAY_US = 7 * DAY_US
FEATURES = ([f"customer_id_{k}_{d}day_window" for d in WINDOW_DAYS for k in ("nb_tx", "avg_amount")]
            + [f"terminal_id_{k}_{d}day_window" for d in WINDOW_DAYS for k in ("nb_tx", "risk")])


def iso(us: int) -> str:
    """ISO 8601 UTC with microseconds, as a producer would write it."""
    return pd.Timestamp(int(us), unit="us", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Stream:
    """Generated transactions and labels (times in integer microseconds) plus the JSON events to send."""

    tx: pd.DataFrame  # transaction_id, tx_us, customer_id, terminal_id, tx_amount (duplicates included)
    labels: pd.DataFrame  # transaction_id, tx_us, customer_id, terminal_id, tx_fraud, known_us
    events: list[tuple[str, int, dict, int]]  # (topic name, key entity id, JSON value, send-order time in us)


def generate(seed: int, customers: int, terminals: int, days: int, start: str, id_base: int) -> Stream:
    """A stream unlike the simulator's: Poisson customers, a hot terminal, tile-edge times, duplicates, odd labels."""
    rng = np.random.default_rng(seed)
    t0 = int(pd.Timestamp(start, tz="UTC").value // 1000)
    n = int(customers * days * 1.6)
    cust = rng.integers(0, customers, n)
    home = rng.integers(0, terminals, (customers, 4))
    term = home[cust, rng.integers(0, 4, n)]
    hot = rng.random(n) < 0.08  # one busy terminal takes 8% of all transactions
    term[hot] = terminals
    us = t0 + rng.integers(0, days * DAY_US, n)
    edge = rng.random(n) < 0.05  # exactly on a tile boundary
    us[edge] = us[edge] // H_US * H_US
    amount = np.round(rng.gamma(2.0, 30.0, n), 2)
    tx = pd.DataFrame({"transaction_id": id_base + np.arange(n), "tx_us": us, "customer_id": id_base + cust,
                       "terminal_id": id_base + term, "tx_amount": amount})
    fraud = rng.random(n) < 0.06
    lab = tx[fraud].copy()
    lab["tx_fraud"] = 1
    delay = np.full(len(lab), LABEL_DELAY_US)
    late = rng.random(len(lab)) < 0.1  # known after the label delay: never counted by the features
    delay[late] += rng.integers(1, 3 * DAY_US, late.sum())
    early = rng.random(len(lab)) < 0.2  # known before the delay ends
    delay[early & ~late] = rng.integers(0, LABEL_DELAY_US, (early & ~late).sum())
    lab["known_us"] = lab["tx_us"].to_numpy() + delay
    # Negative labels of legitimate transactions, and a negative label before a positive one of the same fraud.
    neg = tx[~fraud].sample(frac=0.05, random_state=seed).assign(tx_fraud=0)
    neg["known_us"] = neg["tx_us"] + LABEL_DELAY_US
    flip = lab.sample(frac=0.2, random_state=seed + 1).assign(tx_fraud=0)
    flip["known_us"] = flip["tx_us"] + DAY_US
    labels = pd.concat([lab, neg, flip], ignore_index=True)
    dup_tx = tx.sample(frac=0.03, random_state=seed + 2)  # producer retries: the same event twice
    dup_lab = labels.sample(frac=0.05, random_state=seed + 3)
    tx = pd.concat([tx, dup_tx], ignore_index=True)
    labels = pd.concat([labels, dup_lab], ignore_index=True)

    events: list[tuple[str, int, dict, int]] = []
    for r in tx.itertuples(index=False):
        events.append(("transactions", int(r.customer_id), {
            "transaction_id": int(r.transaction_id), "tx_datetime": iso(r.tx_us), "customer_id": int(r.customer_id),
            "terminal_id": int(r.terminal_id), "tx_amount": float(r.tx_amount)}, int(r.tx_us)))
    for r in labels.itertuples(index=False):
        events.append(("fraud-labels", int(r.terminal_id), {
            "transaction_id": int(r.transaction_id), "tx_datetime": iso(r.tx_us), "customer_id": int(r.customer_id),
            "terminal_id": int(r.terminal_id), "tx_fraud": int(r.tx_fraud), "label_datetime": iso(r.known_us)}, int(r.known_us)))
    events.sort(key=lambda e: e[3])
    return Stream(tx, labels, events)


def _by_entity(df: pd.DataFrame, key: str, cols: list[str]) -> dict[int, dict[str, np.ndarray]]:
    return {int(k): {c: g[c].to_numpy() for c in cols} for k, g in df.groupby(key)}


def reference_vectors(tx: pd.DataFrame, labels: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    """The 12 window features of each query (customer_id, terminal_id, t_us, tx_amount), a plain loop per query."""
    tx = tx.drop_duplicates(["transaction_id", "tx_us"])
    on_time = labels[(labels["tx_fraud"] == 1) & (labels["known_us"] <= labels["tx_us"] + LABEL_DELAY_US)]
    positive = on_time.drop_duplicates(["transaction_id", "tx_us"])
    cust = _by_entity(tx, "customer_id", ["tx_us", "tx_amount"])
    term = _by_entity(tx, "terminal_id", ["tx_us"])
    frauds = _by_entity(positive, "terminal_id", ["tx_us"])
    empty = np.empty(0, dtype=np.int64)
    rows = []
    for q in queries.itertuples(index=False):
        t, row = int(q.t_us), []
        c = cust.get(int(q.customer_id), {"tx_us": empty, "tx_amount": np.empty(0)})
        end = t // H_US * H_US
        for d in WINDOW_DAYS:
            inside = (c["tx_us"] >= end - d * DAY_US) & (c["tx_us"] < end)
            n = int(inside.sum()) + 1  # the query's own transaction
            row += [n, (float(c["tx_amount"][inside].sum()) + float(q.tx_amount)) / n]
        k, f = term.get(int(q.terminal_id), {"tx_us": empty}), frauds.get(int(q.terminal_id), {"tx_us": empty})
        end = (t - LABEL_DELAY_US) // H_US * H_US
        for d in WINDOW_DAYS:
            n = int(((k["tx_us"] >= end - d * DAY_US) & (k["tx_us"] < end)).sum())
            bad = int(((f["tx_us"] >= end - d * DAY_US) & (f["tx_us"] < end)).sum())
            row += [n, bad / n if n else 0.0]
        rows.append(row)
    return pd.DataFrame(rows, columns=FEATURES, index=queries.index)
