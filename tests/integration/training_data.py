"""Builds a simulated raw offline log (transactions and fraud labels) for training tests and benchmarks.

Uses the simulator (``rtml.simulator.generate_transactions``) and writes what the streaming engine
logs: the raw, validated events. Training sets compute their features from these events
(``components.dataset``); ``feature_repo.batch_features`` is the reference they are checked against.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo.aggregations import LABEL_DELAY
from feature_repo.offline_log import FRAUD_LABELS, TRANSACTIONS, OfflineLog
from rtml.simulator import generate_transactions


def write_offline_log(offline_dir: Path, n_customers: int = 300, n_terminals: int = 600, n_days: int = 40,
                      start_date: str = "2018-04-01", radius: float = 15.0, seed: int = 0,
                      log_from: str | None = None) -> pd.DataFrame:
    """Simulate and write the raw tables of the offline log; returns every simulated transaction.

    Each fraud gets a label known ``LABEL_DELAY`` after its transaction (on time). ``log_from``
    skips writing the events before that date: the training-set builder then sees only the
    logged history, so windows reaching before it are short of those events.
    """
    tx = generate_transactions(n_customers, n_terminals, n_days, start_date, radius, seed).reset_index(drop=True)
    keep = np.ones(len(tx), dtype=bool) if log_from is None else (tx["TX_DATETIME"] >= pd.Timestamp(log_from, tz="UTC")).to_numpy()
    t = tx[keep]
    ts = t["TX_DATETIME"].reset_index(drop=True)
    log = OfflineLog(offline_dir, writer_id="sim")
    base = {"transaction_id": t["TRANSACTION_ID"].to_numpy(np.int64), "tx_datetime": ts,
            "customer_id": t["CUSTOMER_ID"].to_numpy(np.int64), "terminal_id": t["TERMINAL_ID"].to_numpy(np.int64)}
    log.extend(TRANSACTIONS, pd.DataFrame({**base, "tx_amount": t["TX_AMOUNT"].to_numpy(np.float64),
                                           "event_timestamp": ts}).to_dict("records"))
    fr = t["TX_FRAUD"].to_numpy() == 1
    labels = pd.DataFrame(base)[fr].reset_index(drop=True)
    known = labels["tx_datetime"] + LABEL_DELAY
    log.extend(FRAUD_LABELS, labels.assign(tx_fraud=1, label_datetime=known, event_timestamp=known).to_dict("records"))
    log.flush()
    return tx
