"""What benchmarks/serving.py measures rtml against: the KServe Feast-transformer sample pattern
reimplemented, the no-server floor, and the fixtures every path shares (model, features, bodies).

    python -m benchmarks.serving_baseline predictor --model-dir DIR --http-port P
    python -m benchmarks.serving_baseline transformer --http-port P --predictor-host 127.0.0.1:Q \\
        (--feast-url http://127.0.0.1:F | --home RTML_HOME)

What kserve/kserve docs/samples/v1beta1/transformer/feast does, with the fraud model's inputs:

- the transformer is a ``kserve.Model`` taking V1 ``{"instances": [[customer_id, terminal_id,
  tx_amount, epoch_seconds], ...]}``; its ``preprocess`` is synchronous (kserve calls it on the
  event loop, which it blocks) and, per request, POSTs to ``feast serve``'s
  ``/get-online-features`` with ``requests`` and no session (a new connection each time), logging
  the URL, headers and bodies at INFO as the sample does; it orders the features into rows and
  returns V1 ``{"instances": rows}``, which kserve's base ``predict`` POSTs (httpx) to the
  predictor; the answer passes through;
- variant (b'): ``--home`` replaces the HTTP lookup with an in-process Feast SDK
  ``get_online_features`` read (still synchronous, on the event loop);
- the predictor is a stock ``kserve.Model`` running the TorchScript module once per request
  (no batching), as a custom KServe predictor does.

Servers run with kserve's defaults (access and latency logs on, one uvicorn worker), as the
sample's pods do; gRPC is off (nothing uses it). Only the torch thread count is set (1), which
only helps on a 2-core host.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import resource
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from feature_repo.aggregations import AGGREGATIONS
from feature_repo.model_inputs import MODEL_INPUTS, calendar_features
from feature_repo.tiles import TILES_FEATURE, US, layout_for

MODEL_NAME = "fraud-detector"
EPOCH0 = 1_700_000_000
N_BODIES = 2000
FEATURE_REFS = [f"{a.feature_view}:{TILES_FEATURE}" for a in AGGREGATIONS]
# Full feature names, as the sample requests them: <view>__<feature>.
FEATURE_KEYS = [ref.replace(":", "__") for ref in FEATURE_REFS]


def _blob(value) -> bytes | None:
    """A tiles value as Feast hands it over: bytes from the SDK, base64 text from feast serve's JSON."""
    return base64.b64decode(value) if isinstance(value, str) else value


def build_rows(instances: list, columns: dict[str, list]) -> list[list[float]]:
    """Model input rows (MODEL_INPUTS order) from V1 instances and tile columns keyed by FEATURE_KEYS.

    The same inputs rtml assembles (calendar features, every aggregation's tiles merged at the
    transaction's time with the transaction itself in the delay-0 windows), so both paths feed the
    model identical rows; an absent entity has empty windows.
    """
    amount = np.array([float(r[2]) for r in instances])
    epoch = np.array([int(r[3]) for r in instances], dtype=np.int64)
    weekend, night = calendar_features(epoch)
    feats = {"tx_amount": amount, "tx_during_weekend": weekend, "tx_during_night": night}
    for agg, key in zip(AGGREGATIONS, FEATURE_KEYS):
        layout = layout_for(agg)
        merged = layout.features([_blob(v) for v in columns[key]], epoch * US, {"tx_amount": amount})
        feats.update(zip(layout.names, merged.T))
    return np.column_stack([feats[n] for n in MODEL_INPUTS]).tolist()


def make_transformer(feast_url: str | None, home: Path | None):
    """The sample's transformer class: HTTP feature lookup (feast_url) or in-process SDK read (home)."""
    import kserve
    import requests
    from kserve.constants.constants import KSERVE_LOGLEVEL

    logging.basicConfig(level=KSERVE_LOGLEVEL)  # as the sample: its INFO lines are emitted

    class FeastTransformer(kserve.Model):
        def __init__(self, name: str):
            super().__init__(name)
            self.store = None
            if home is not None:
                from feature_repo.store import FeatureStoreSettings, open_store

                self.store = open_store(FeatureStoreSettings(home=home))
            self.ready = True

        def entity_rows(self, inputs: dict) -> dict:
            instances = inputs["instances"]
            return {"customer_id": [int(r[0]) for r in instances], "terminal_id": [int(r[1]) for r in instances]}

        def preprocess(self, inputs: dict, headers: dict | None = None) -> dict:
            entities = self.entity_rows(inputs)
            if self.store is not None:
                rows = [{"customer_id": c, "terminal_id": t} for c, t in zip(entities["customer_id"], entities["terminal_id"])]
                columns = self.store.get_online_features(features=FEATURE_REFS, entity_rows=rows, full_feature_names=True).to_dict()
                logging.info("feast response body %s", columns)
            else:
                hdrs = {"Content-type": "application/json", "Accept": "application/json"}
                params = {"features": FEATURE_REFS, "entities": entities, "full_feature_names": True}
                url = f"{feast_url}/get-online-features"
                body = json.dumps(params)
                logging.info("feast request url %s", url)
                logging.info("feast request headers %s", hdrs)
                logging.info("feast request body %s", body)
                resp = requests.post(url, data=body, headers=hdrs)
                logging.info("feast response status is %s", resp.status_code)
                logging.info("feast response headers %s", resp.headers)
                features = resp.json()
                logging.info("feast response body %s", features)
                names = features["metadata"]["feature_names"]
                columns = {k: features["results"][names.index(k)]["values"] for k in FEATURE_KEYS}
            outputs = {"instances": build_rows(inputs["instances"], columns)}
            logging.info("The input for model predict is %s", outputs)
            return outputs

        def postprocess(self, response, headers: dict | None = None):
            logging.info("The output from model predict is %s", response)
            return response

    return FeastTransformer


def make_predictor(model_dir: Path):
    """A stock custom KServe predictor: the TorchScript module, one forward pass per request."""
    import kserve
    import torch

    class TorchModel(kserve.Model):
        def load(self) -> bool:
            torch.set_num_threads(1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                self.module = torch.jit.load(str(model_dir / "model.pt"), map_location="cpu").eval()
            self.ready = True
            return self.ready

        def predict(self, payload: dict, headers: dict | None = None, response_headers: dict | None = None) -> dict:
            with torch.no_grad():
                out = self.module(torch.tensor(payload["instances"], dtype=torch.float32))
            return {"predictions": out.reshape(-1).tolist()}

    return TorchModel


# -- fixtures shared by every path: model, features, request bodies ------------------------------------------------
def make_model(path: Path) -> Path:
    """A realistic-size fraud MLP as a model version dir (model.pt + metadata.json)."""
    import torch

    from feature_repo.model_inputs import MODEL_INPUTS

    class FraudMLP(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            n = len(MODEL_INPUTS)
            self.register_buffer("mean", torch.linspace(0.0, 50.0, n))
            self.register_buffer("std", torch.linspace(1.0, 30.0, n))
            self.net = torch.nn.Sequential(
                torch.nn.Linear(n, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1)
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.net((x - self.mean) / self.std)).squeeze(-1)

    torch.manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(FraudMLP().eval()).save(str(path / "model.pt"))
    defaults = {n: 0.0 for n in MODEL_INPUTS[3:]}
    meta = {"name": MODEL_NAME, "version": "1", "inputs": MODEL_INPUTS, "threshold": 0.5, "metrics": {},
            "created_at": datetime.now(timezone.utc).isoformat(), "defaults": defaults}
    (path / "metadata.json").write_text(json.dumps(meta))
    return path


def entity_tiles(agg, n_entities: int, tx_per_day: float, rng) -> dict[int, bytes]:
    """Packed tiles of ``n_entities`` entities with Poisson(``tx_per_day``) transactions a day over the 40 days
    before EPOCH0 and the 30 days of request times after it (10% labelled positive)."""
    import pandas as pd

    layout = layout_for(agg)
    days = 70
    n = rng.poisson(tx_per_day * days * n_entities)
    ev = pd.DataFrame({"entity": rng.integers(0, n_entities, n),
                       "tile": (EPOCH0 - 40 * 86400 + rng.integers(0, days * 86400, n)) * US // layout.tile_us,
                       "tx_amount": np.round(rng.gamma(2.0, 30.0, n), 2), "fraud": (rng.random(n) < 0.1).astype(float)})
    # One aggregate per IR column, in the layout's order: count, sum/min/max of a field, positive labels.
    spec = {f"c{i}": ("tx_amount", "size") if kind == "count" else ("fraud", "sum") if kind == "labels" else (field, kind)
            for i, (kind, field) in enumerate(layout.columns)}
    grouped = ev.groupby(["entity", "tile"]).agg(**spec)
    out = {}
    for entity, g in grouped.groupby(level="entity"):
        out[int(entity)] = layout.encode(dict(zip(g.index.get_level_values("tile").tolist(), g.to_numpy(np.float64).tolist())))
    return out


def write_features(home: Path, customers: int, terminals: int) -> None:
    """Register the repo's Feast objects in ``home`` and write every entity's tiles (through Feast's provider)."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    from feature_repo.store import FeatureStoreSettings, apply_definitions

    store = apply_definitions(FeatureStoreSettings(home=home))
    rng = np.random.default_rng(0)
    now = datetime.now(timezone.utc)
    per_day = 2.5  # a customer's transactions a day (the simulator's mean is about that)
    for agg, n in zip(AGGREGATIONS, (customers, terminals)):
        blobs = entity_tiles(agg, n, per_day * customers / n, rng)
        rows = [(EntityKeyProto(join_keys=[agg.join_key], entity_values=[ValueProto(int64_val=k)]),
                 {TILES_FEATURE: ValueProto(bytes_val=b)}, now, None) for k, b in blobs.items()]
        store._get_provider().online_write_batch(store.config, store.get_feature_view(agg.feature_view), rows, progress=None)


def transactions(customers: int, terminals: int) -> list[tuple[int, int, float, int]]:
    """The cycled request rows: (customer_id, terminal_id, tx_amount, epoch seconds)."""
    rng = np.random.default_rng(1)
    c = rng.integers(0, customers, N_BODIES)
    t = rng.integers(0, terminals, N_BODIES)
    amount = np.round(rng.gamma(2.0, 30.0, N_BODIES), 2)
    epoch = EPOCH0 + rng.integers(0, 30 * 86400, N_BODIES)
    return [(int(a), int(b), float(x), int(e)) for a, b, x, e in zip(c, t, amount, epoch)]


def v2_body(tx: tuple) -> bytes:
    c, t, amount, epoch = tx
    inputs = [{"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [c]},
              {"name": "terminal_id", "shape": [1], "datatype": "INT64", "data": [t]},
              {"name": "tx_amount", "shape": [1], "datatype": "FP32", "data": [amount]},
              {"name": "tx_datetime", "shape": [1], "datatype": "INT64", "data": [epoch]}]
    return json.dumps({"inputs": inputs}, separators=(",", ":")).encode()


def v1_body(tx: tuple) -> bytes:
    return json.dumps({"instances": [list(tx)]}, separators=(",", ":")).encode()


# -- the floor ------------------------------------------------------------------------------
def floor_child(home: str, model_dir: str, txs: list, seconds: float, q) -> None:
    import torch

    from feature_repo.model_inputs import FEATURE_SERVICE
    from feature_repo.store import FeatureStoreSettings, open_store
    from inference.assembly import assemble

    torch.set_num_threads(1)
    store = open_store(FeatureStoreSettings(home=Path(home)))
    service = store.get_feature_service(FEATURE_SERVICE, allow_cache=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        module = torch.jit.load(str(Path(model_dir) / "model.pt")).eval()

    def once(tx) -> float:
        cols = store.get_online_features(features=service, entity_rows=[{"customer_id": tx[0], "terminal_id": tx[1]}],
                                         full_feature_names=True).to_dict()
        tiles = np.empty((1, len(FEATURE_KEYS)), dtype=object)
        tiles[0] = [cols[k][0] for k in FEATURE_KEYS]
        x, _ = assemble({"tx_amount": np.array([tx[2]])}, np.array([tx[3]]), tiles)
        with torch.inference_mode():
            return float(module(torch.from_numpy(x))[0])

    for tx in txs[:200]:
        once(tx)
    lat: list[float] = []
    start, cpu0 = time.perf_counter(), time.process_time()
    i = 0
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        once(txs[i % len(txs)])
        lat.append(time.perf_counter() - t)
        i += 1
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    a = np.asarray(lat) * 1000.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    q.put({"requests": len(lat), "req_per_s": round(len(lat) / elapsed, 1), "p50_ms": round(float(np.percentile(a, 50)), 3),
           "p99_ms": round(float(np.percentile(a, 99)), 3), "max_ms": round(float(a.max()), 3), "peak_rss_mib": round(rss / 2**20, 1),
           "server_cpu_ms_per_request": round(1000 * cpu / len(lat), 3)})



def main(argv: list[str] | None = None) -> None:
    """Serve the baseline transformer or predictor until SIGTERM."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.serving_baseline", description=__doc__)
    p.add_argument("role", choices=["transformer", "predictor"])
    p.add_argument("--http-port", type=int, required=True)
    p.add_argument("--model-dir", type=Path, help="predictor: model version dir (model.pt)")
    p.add_argument("--predictor-host", help="transformer: host:port of the predictor")
    p.add_argument("--feast-url", help="transformer (b): feast serve base URL")
    p.add_argument("--home", type=Path, help="transformer (b'): RTML_HOME of the Feast store, read in process")
    args = p.parse_args(argv)
    sys.argv = sys.argv[:1]  # kserve parses sys.argv on import
    from kserve import ModelServer
    from kserve.predictor_config import PredictorConfig

    if args.role == "predictor":
        model = make_predictor(args.model_dir)(MODEL_NAME)
        model.load()
        config = None
    else:
        if bool(args.feast_url) == bool(args.home):
            p.error("the transformer takes exactly one of --feast-url and --home")
        model = make_transformer(args.feast_url, args.home)(MODEL_NAME)
        config = PredictorConfig(predictor_host=args.predictor_host, predictor_protocol="v1")
    ModelServer(http_port=args.http_port, enable_grpc=False, predictor_config=config).start([model])


if __name__ == "__main__":
    main()
