"""Batch scoring: score stored transactions of a date range with a registered model, write table ``scores``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from components.dataset import point_in_time_features, read_transactions, split_windows
from components.registry import LocalRegistry
from components.train import load_scripted, score
from feature_repo.model_inputs import MODEL_INPUTS
from feature_repo.offline_log import OfflineLog
from rtml_common.errors import NotFoundError

SCORES = "scores"


def resolve_version(registry: LocalRegistry, model_name: str, version: str = "") -> str:
    """The given version, else the champion; fails naming the model when there is none."""
    if version:
        registry.metadata(model_name, version)
        return version
    champion = registry.version_in(model_name, "champion")
    if champion is None:
        raise NotFoundError(f"model {model_name!r} has no champion in {registry.root}; pass a version")
    return champion


def score_range(store, offline_dir: Path, registry: LocalRegistry, model_name: str, start: str, days: int,
                version: str = "") -> pd.DataFrame:
    """Scores of every transaction logged in [start, start + days), appended to the offline log table ``scores``."""
    w = split_windows(start, train_days=days, delay_days=0, test_days=1)
    version = resolve_version(registry, model_name, version)
    module = load_scripted(registry.model_path(model_name, version))
    tx = read_transactions(Path(offline_dir), w.train_start, w.train_end)
    rows = point_in_time_features(Path(offline_dir), tx)
    meta = registry.metadata(model_name, version)
    rows[MODEL_INPUTS] = rows[MODEL_INPUTS].fillna({k: v for k, v in meta["defaults"].items()})
    out = pd.DataFrame({
        "transaction_id": rows["transaction_id"].to_numpy(np.int64), "customer_id": rows["customer_id"].to_numpy(np.int64),
        "terminal_id": rows["terminal_id"].to_numpy(np.int64), "event_timestamp": rows["event_timestamp"],
        "score": score(module, rows).astype(np.float64), "model_name": model_name, "model_version": version,
    })
    out["is_fraud_predicted"] = (out["score"] >= float(meta.get("threshold", 0.5))).astype(np.int64)
    log = OfflineLog(Path(offline_dir), writer_id=f"batch-{model_name}-{version}")
    log.extend(SCORES, out.to_dict("records"))
    log.flush()
    return out
