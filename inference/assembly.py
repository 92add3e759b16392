"""Turning raw transactions plus online features into the model's [N, 15] input (pure functions)."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from feature_repo.model_inputs import (
    CUSTOMER_FEATURES,
    MODEL_INPUTS,
    REQUEST_FEATURES,
    TERMINAL_FEATURES,
    calendar_features,
    fold_current_transaction,
)
from inference.tensors import BadRequest

ONLINE_FEATURES: list[str] = CUSTOMER_FEATURES + TERMINAL_FEATURES
"""Columns of the online-feature matrix, in MODEL_INPUTS order (after the request features)."""

_N_REQ = len(REQUEST_FEATURES)
_CUST = slice(0, len(CUSTOMER_FEATURES))
_TERM = slice(len(CUSTOMER_FEATURES), len(ONLINE_FEATURES))
# Customer windows come as (nb_tx, avg_amount) pairs, one pair per window.
_COUNT_COLS = [i for i, n in enumerate(CUSTOMER_FEATURES) if "_nb_tx_" in n]
_AVG_COLS = [i for i, n in enumerate(CUSTOMER_FEATURES) if "_avg_amount_" in n]
assert REQUEST_FEATURES == ["tx_amount", "tx_during_weekend", "tx_during_night"]
assert MODEL_INPUTS[_N_REQ:] == ONLINE_FEATURES and len(_COUNT_COLS) == len(_AVG_COLS)


def epoch_seconds(tx_datetime: np.ndarray) -> np.ndarray:
    """INT64 epoch seconds as they are, or BYTES ISO-8601 strings parsed (naive = UTC) to epoch seconds."""
    if tx_datetime.dtype.kind in "iu":
        return tx_datetime.astype(np.int64, copy=False)
    out = np.empty(len(tx_datetime), dtype=np.int64)
    for i, raw in enumerate(tx_datetime):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        try:
            ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"input 'tx_datetime' row {i}: {text[:64]!r} is not an ISO-8601 date-time") from None
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        out[i] = int(ts.timestamp())
    return out


def assemble(
    tx_amount: np.ndarray, epoch: np.ndarray, online: np.ndarray, defaults: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The model input rows and which rows had no customer / no terminal features.

    ``online`` is [N, 12] in ``ONLINE_FEATURES`` order with NaN where the store had nothing;
    ``defaults`` is the model's fill value per MODEL_INPUTS entry. The current transaction is
    folded into the customer windows after filling, so a new customer counts one transaction.
    """
    n = len(tx_amount)
    missing = np.isnan(online)
    no_customer = missing[:, _CUST].all(axis=1)
    no_terminal = missing[:, _TERM].all(axis=1)
    feats = np.where(missing, defaults[_N_REQ:], online) if missing.any() else online.copy()
    amount = tx_amount.astype(np.float64, copy=False)
    counts, avgs = feats[:, _COUNT_COLS], feats[:, _AVG_COLS]
    counts, avgs = fold_current_transaction(counts, avgs, amount[:, None])
    feats[:, _COUNT_COLS], feats[:, _AVG_COLS] = counts, avgs
    weekend, night = calendar_features(epoch)
    x = np.empty((n, len(MODEL_INPUTS)), dtype=np.float32)
    x[:, 0] = amount
    x[:, 1] = weekend
    x[:, 2] = night
    x[:, _N_REQ:] = feats
    return x, no_customer, no_terminal
