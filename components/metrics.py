"""Fraud-detection metrics exactly as the handbook defines them (ch. 3.4 / 4.2), and its reference table."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from rtml_common.errors import InvalidInputError

# Handbook ch. 3.4 single split (test set), and the ch. 7 feed-forward network.
HANDBOOK_TABLE: dict[str, dict[str, float]] = {
    "Logistic regression (handbook 3.4)": {"auc_roc": 0.871, "average_precision": 0.606, "card_precision_at_100": 0.291},
    "Random forest (handbook 3.4)": {"auc_roc": 0.867, "average_precision": 0.658, "card_precision_at_100": 0.287},
    "XGBoost (handbook 3.4)": {"auc_roc": 0.862, "average_precision": 0.639, "card_precision_at_100": 0.273},
    "Feed-forward NN (handbook 7)": {"auc_roc": 0.876, "average_precision": 0.675, "card_precision_at_100": 0.303},
    "Random scorer (handbook 3.4)": {"auc_roc": 0.5, "average_precision": 0.007, "card_precision_at_100": 0.017},
}
METRICS = ("auc_roc", "average_precision", "card_precision_at_100")


def card_precision_top_k(df: pd.DataFrame, k: int = 100, remove_detected: bool = True) -> tuple[float, list[float]]:
    """Mean daily card precision@k and the per-day values.

    ``df`` has ``customer_id``, ``day`` (any sortable day key), ``score`` and ``tx_fraud``. Per day:
    one row per card with its maximum score and maximum label, the ``k`` highest-scored cards,
    precision = compromised cards among them / k. Cards found compromised are removed from later days.
    """
    detected: set = set()
    per_day = []
    for _, day in df.sort_values("day", kind="stable").groupby("day", sort=True):
        day = day[~day["customer_id"].isin(detected)]
        cards = day.groupby("customer_id", sort=True).agg(score=("score", "max"), tx_fraud=("tx_fraud", "max"))
        top = cards.sort_values("score", ascending=False, kind="mergesort").head(k)
        found = top.index[top["tx_fraud"] == 1]
        per_day.append(len(found) / k)
        if remove_detected:
            detected.update(found.tolist())
    return (float(np.mean(per_day)) if per_day else 0.0), per_day


def evaluate_scores(test: pd.DataFrame, scores: np.ndarray, k: int = 100) -> dict[str, float]:
    """AUC ROC, average precision and card precision@k of ``scores`` on a test set with ``tx_fraud`` labels."""
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != len(test):
        raise InvalidInputError(f"{len(scores)} scores for {len(test)} test transactions")
    if len(test) == 0:
        raise InvalidInputError("the test set is empty: no transactions to evaluate on")
    if not np.all(np.isfinite(scores)):
        raise InvalidInputError(f"{int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    y = test["tx_fraud"].to_numpy()
    if y.min() == y.max():
        raise InvalidInputError("the test set has a single class (no frauds or no legitimate transactions): AUC is undefined")
    frame = pd.DataFrame({"customer_id": test["customer_id"].to_numpy(), "tx_fraud": y, "score": scores,
                          "day": pd.to_datetime(test["event_timestamp"], utc=True).dt.floor("D").to_numpy()})
    cp, _ = card_precision_top_k(frame, k)
    return {"auc_roc": float(roc_auc_score(y, scores)), "average_precision": float(average_precision_score(y, scores)),
            f"card_precision_at_{k}": cp}


def comparison_table(rows: dict[str, dict[str, float] | None]) -> str:
    """A fixed-width text table: our rows first, then the handbook's reference rows."""
    lines = [f"{'model':<38}{'AUC ROC':>9}{'AP':>9}{'CP@100':>9}"]
    for name, m in list(rows.items()) + list(HANDBOOK_TABLE.items()):
        if m is None:
            continue
        lines.append(f"{name:<38}" + "".join(f"{m[k]:>9.3f}" for k in METRICS))
    return "\n".join(lines)
