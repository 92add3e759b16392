"""Helpers for the inference tests: a tiny TorchScript fraud model as a model version dir, and a server process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import httpx
import torch

from feature_repo.model_inputs import MODEL_INPUTS
from rtml.local.processes import free_port

REPO = Path(__file__).resolve().parents[2]
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




class Server:
    """One `python -m inference` process on free ports; stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, home: Path, log: Path, *args: str, env: dict[str, str] | None = None):
        self.http_port, self.grpc_port = free_port(), free_port()
        base = {k: v for k, v in os.environ.items() if not k.startswith("RTML_")}
        env = dict(base, RTML_HOME=str(home), PYTHONPATH=str(REPO), **(env or {}))
        cmd = [sys.executable, "-m", "inference", "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *args]
        self.log = log
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def wait_ready(self, timeout_s: float = 90.0) -> "Server":
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"server not ready in {timeout_s}s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
