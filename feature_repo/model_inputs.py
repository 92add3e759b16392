"""The model's 15 inputs (fraud handbook ch. 3.3) in their fixed order, and the request-time features.

Training, the exported model and the transformer all take the order from ``MODEL_INPUTS``;
nothing else may re-declare it.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from feature_repo.aggregations import CUSTOMER_SPENDING, TERMINAL_RISK

REQUEST_FEATURES = ["tx_amount", "tx_during_weekend", "tx_during_night"]
CUSTOMER_FEATURES = CUSTOMER_SPENDING.feature_names()
TERMINAL_FEATURES = TERMINAL_RISK.feature_names()
MODEL_INPUTS: list[str] = REQUEST_FEATURES + CUSTOMER_FEATURES + TERMINAL_FEATURES

FEATURE_SERVICE = "fraud_detection_v1"


def calendar_features(epoch_seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TX_DURING_WEEKEND (Saturday/Sunday) and TX_DURING_NIGHT (hour <= 6, as the handbook's code does), UTC."""
    secs = np.asarray(epoch_seconds, dtype=np.int64)
    days = secs // 86400
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (weekday 3, Monday = 0)
    hour = (secs % 86400) // 3600
    return (weekday >= 5).astype(np.float32), (hour <= 6).astype(np.float32)


def weekend_night(ts: datetime) -> tuple[float, float]:
    """Calendar features of one timestamp (naive timestamps are taken as UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    w, n = calendar_features(np.array([int(ts.timestamp())]))
    return float(w[0]), float(n[0])

