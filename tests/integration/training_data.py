"""Builds a simulated offline log (transactions, fraud labels, feature views) for training tests and benchmarks.

Uses the simulator (``rtml.simulator.generate_transactions``) and the batch reference of the
window features (``feature_repo.batch_features.transaction_features``), which the streaming
engine must match; the feature views get one row per transaction at its time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo.aggregations import LABEL_DELAY
from feature_repo.batch_features import transaction_features
from feature_repo.model_inputs import CUSTOMER_FEATURES, TERMINAL_FEATURES
from feature_repo.offline_log import FRAUD_LABELS, TRANSACTIONS, OfflineLog
from rtml.simulator import generate_transactions


def write_offline_log(offline_dir: Path, n_customers: int = 300, n_terminals: int = 600, n_days: int = 40,
                      start_date: str = "2018-04-01", radius: float = 15.0, seed: int = 0,
                      log_from: str | None = None) -> pd.DataFrame:
    """Simulate, compute features and write every table of the offline log; returns the transactions.

    ``log_from`` skips writing rows before that date (features still see the full history).
    """
    tx = generate_transactions(n_customers, n_terminals, n_days, start_date, radius, seed).reset_index(drop=True)
    feats = transaction_features(tx)  # input order
    keep = np.ones(len(tx), dtype=bool) if log_from is None else (tx["TX_DATETIME"] >= pd.Timestamp(log_from, tz="UTC")).to_numpy()
    t, f = tx[keep], feats[keep]
    ts = t["TX_DATETIME"].reset_index(drop=True)
    log = OfflineLog(offline_dir, writer_id="sim")
    base = {"transaction_id": t["TRANSACTION_ID"].to_numpy(np.int64), "customer_id": t["CUSTOMER_ID"].to_numpy(np.int64),
            "terminal_id": t["TERMINAL_ID"].to_numpy(np.int64)}
    log.extend(TRANSACTIONS, pd.DataFrame({**base, "tx_amount": t["TX_AMOUNT"].to_numpy(np.float64),
                                           "event_timestamp": ts}).to_dict("records"))
    fr = t["TX_FRAUD"].to_numpy() == 1
    log.extend(FRAUD_LABELS, pd.DataFrame({k: v[fr] for k, v in base.items()} | {
        "tx_fraud": np.ones(int(fr.sum()), np.int64), "tx_datetime": ts[fr].reset_index(drop=True),
        "event_timestamp": (ts[fr] + LABEL_DELAY).reset_index(drop=True)}).to_dict("records"))
    cust = pd.DataFrame({"customer_id": base["customer_id"], "event_timestamp": ts})
    for c in CUSTOMER_FEATURES:
        cust[c] = f[c].to_numpy().astype(np.int64 if "_nb_tx_" in c else np.float32)
    term = pd.DataFrame({"terminal_id": base["terminal_id"], "event_timestamp": ts})
    for c in TERMINAL_FEATURES:
        term[c] = f[c].to_numpy().astype(np.int64 if "_nb_tx_" in c else np.float32)
    log.extend("customer_spending", cust.to_dict("records"))
    log.extend("terminal_risk", term.to_dict("records"))
    log.flush()
    return tx
