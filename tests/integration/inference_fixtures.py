"""Helpers for the inference tests: a tiny TorchScript fraud model written as a model version dir."""

from __future__ import annotations

import json
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch

from feature_repo.model_inputs import MODEL_INPUTS

DEFAULTS = {name: 0.0 for name in MODEL_INPUTS[3:]}
DEFAULTS.update({n: 0.02 for n in MODEL_INPUTS if n.startswith("terminal_id_risk")})


class TinyFraudModel(torch.nn.Module):
    """Normalisation inside the module (raw inputs in), a 2-layer MLP, sigmoid out: FP32 [N, 15] -> [N]."""

    def __init__(self) -> None:
        super().__init__()
        n = len(MODEL_INPUTS)
        self.register_buffer("mean", torch.linspace(0.0, 50.0, n))
        self.register_buffer("std", torch.linspace(1.0, 30.0, n))
        self.net = torch.nn.Sequential(torch.nn.Linear(n, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net((x - self.mean) / self.std)).squeeze(-1)


def make_model_dir(path: Path, version: str = "3", seed: int = 0, threshold: float = 0.5) -> Path:
    """Write model.pt + metadata.json under ``path`` (created) and return it."""
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.script(TinyFraudModel().eval())
    module.save(str(path / "model.pt"))
    meta = {
        "name": "fraud-detector",
        "version": version,
        "inputs": MODEL_INPUTS,
        "threshold": threshold,
        "metrics": {"auc": 0.5},
        "created_at": datetime.now(timezone.utc).isoformat(),
        "defaults": DEFAULTS,
    }
    (path / "metadata.json").write_text(json.dumps(meta))
    return path


def reference_forward(model_dir: Path, rows) -> list[float]:
    """The saved module's own forward pass on ``rows`` (list of 15-float lists)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(model_dir / "model.pt"))
    with torch.no_grad():
        return module(torch.tensor(rows, dtype=torch.float32)).tolist()
