"""Helpers for the inference tests: a tiny TorchScript fraud model as a model version dir, a server process,
online tiles written through Feast, and the model inputs recomputed from raw events."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import httpx
import numpy as np
import torch
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto

from feature_repo.aggregations import AGGREGATIONS, EntityAggregation
from feature_repo.model_inputs import MODEL_INPUTS
from feature_repo.tiles import TILES_FEATURE, layout_for
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


# -- online tiles and their reference ----------------------------------------------------------
# An event is a dict: customer_id, terminal_id, t_us (event time, integer microseconds), tx_amount
# and fraud (True: a positive label known within the label delay, so the ratio features count it).
US = 1_000_000


def tiles_from_events(agg: EntityAggregation, events: Iterable[Mapping]) -> dict[int, bytes]:
    """Each entity's packed tiles of ``agg`` built from raw events, as the engine would write them."""
    layout = layout_for(agg)
    by_entity: dict[int, dict[int, list[float]]] = {}
    for e in events:
        ir = by_entity.setdefault(e[agg.join_key], {}).setdefault(layout.tile_of(e["t_us"]), layout.empty())
        layout.add_event(ir, e)
        if layout.labels_index is not None and e["fraud"]:
            ir[layout.labels_index] += 1.0
    return {k: layout.encode(tiles) for k, tiles in by_entity.items()}


def write_tiles(store, agg: EntityAggregation, blobs: Mapping[int, bytes]) -> None:
    """Write packed tiles per entity into ``agg``'s feature view through Feast's own ``provider.online_write_batch``."""
    view = store.get_feature_view(agg.feature_view)
    now = datetime.now(timezone.utc)
    key = (lambda k: ValueProto(int64_val=int(k))) if agg.key_type == "int" else (lambda k: ValueProto(string_val=str(k)))
    rows = [(EntityKeyProto(join_keys=[agg.join_key], entity_values=[key(k)]), {TILES_FEATURE: ValueProto(bytes_val=blob)}, now, None)
            for k, blob in blobs.items()]
    store._get_provider().online_write_batch(store.config, view, rows, progress=None)


def write_events(store, events: Sequence[Mapping]) -> None:
    """Every aggregation's tiles of ``events`` into the online store."""
    for agg in AGGREGATIONS:
        write_tiles(store, agg, tiles_from_events(agg, events))


def _us(td: timedelta) -> int:
    return td // timedelta(microseconds=1)


def _aggregate(function: str, field: str | None, inside: list[Mapping]) -> float:
    if not inside:
        return 0.0
    if function == "count":
        return float(len(inside))
    if function == "ratio":
        return sum(bool(e["fraud"]) for e in inside) / len(inside)
    values = [float(e[field]) for e in inside]
    return {"sum": sum(values), "mean": sum(values) / len(values), "min": min(values), "max": max(values)}[function]


def reference_vectors(events: Sequence[Mapping], requests: Iterable[tuple[int, int, float, int]]) -> np.ndarray:
    """MODEL_INPUTS rows of ``requests`` (customer_id, terminal_id, tx_amount, epoch seconds) straight from raw events.

    A plain loop over the semantics of ``feature_repo.aggregations`` (no tiles): at t = the request's
    time, a window (length L, delay D) holds the entity's events with end - L <= e < end,
    end = floor((t - D) / tile) * tile; delay-0 windows also hold the request's transaction
    (never labelled); an empty window gives 0. Calendar features from the UTC date-time.
    """
    by_key = {agg.join_key: {} for agg in AGGREGATIONS}
    for e in events:
        for key, groups in by_key.items():
            groups.setdefault(e[key], []).append(e)
    rows = []
    for customer, terminal, amount, epoch in requests:
        t_us, request = int(epoch) * US, {"customer_id": customer, "terminal_id": terminal, "tx_amount": float(amount)}
        dt = datetime.fromtimestamp(int(epoch), timezone.utc)
        feats = {"tx_amount": float(amount), "tx_during_weekend": float(dt.weekday() >= 5), "tx_during_night": float(dt.hour <= 6)}
        for agg in AGGREGATIONS:
            tile = _us(agg.tile)
            history = by_key[agg.join_key].get(request[agg.join_key], [])
            for w in agg.windows:
                end = (t_us - _us(w.delay)) // tile * tile
                inside = [e for e in history if end - _us(w.length) <= e["t_us"] < end]
                if w.delay == timedelta(0):
                    inside.append({**request, "fraud": False})
                for f in agg.features:
                    feats[f.name.format(window=w.suffix)] = _aggregate(f.function, f.field, inside)
        rows.append([feats[name] for name in MODEL_INPUTS])
    return np.array(rows, dtype=np.float64)


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
