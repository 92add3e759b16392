"""Small fixtures shared by the component tests: a valid TorchScript model file and labelled rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from components.train import FraudNet
from feature_repo.model_inputs import MODEL_INPUTS


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    net = FraudNet(np.zeros(len(MODEL_INPUTS)), np.ones(len(MODEL_INPUTS)), hidden=(4,)).eval()
    path = tmp_path / "model.pt"
    torch.jit.script(net).save(str(path))
    return path


@pytest.fixture
def defaults():
    return {c: 1.0 for c in MODEL_INPUTS}


def labelled_rows(n: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Rows where fraud depends on tx_amount and terminal risk, so a model can learn it."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, len(MODEL_INPUTS))).astype(np.float32), columns=MODEL_INPUTS)
    df["tx_amount"] = rng.uniform(5, 300, n).astype(np.float32)  # a large scale: normalisation matters
    logit = (df["tx_amount"] - 200) / 20 + 2 * df["terminal_id_risk_7day_window"]
    df["tx_fraud"] = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    df["customer_id"] = rng.integers(0, 200, n)
    df["event_timestamp"] = pd.Timestamp("2018-04-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 7 * 86400, n), unit="s")
    return df
