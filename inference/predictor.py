"""The PyTorch predictor: a TorchScript fraud model behind the V2 protocol, with micro-batching."""

from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import numpy as np
import torch
from kserve.protocol.infer_type import InferRequest, InferResponse

from feature_repo.model_inputs import MODEL_INPUTS
from inference import metrics
from inference.artifact import MODEL_FILE, ModelMetadata, read_metadata, resolve_model_dir
from inference.base import V2Model
from inference.batching import MicroBatcher
from inference.settings import PredictorSettings
from inference.tensors import BadRequest, TensorSpec, outputs, validate_inputs

N_FEATURES = len(MODEL_INPUTS)
INPUT_SPECS = [TensorSpec("features", ("FP32",), (-1, N_FEATURES))]
OUTPUT_SPECS = [TensorSpec("fraud_probability", ("FP32",), (-1,))]


def configure_torch(threads: int) -> None:
    """Fix torch's thread pools: one server process per core, no oversubscription."""
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (or parallel work started): keep what is there
        pass


class TorchPredictor(V2Model):
    """Scores FP32 [N, 15] feature rows; ``score`` is the in-process entry the transformer uses."""

    input_specs = INPUT_SPECS
    output_specs = OUTPUT_SPECS

    def __init__(self, name: str, settings: PredictorSettings):
        super().__init__(name)
        self.settings = settings
        self.model_dir: Path | None = None
        self.metadata: ModelMetadata | None = None
        self._module: torch.jit.ScriptModule | None = None
        self._batcher: MicroBatcher | None = None

    def load(self) -> bool:
        """Resolve the storage URI, read metadata.json, load and warm up model.pt."""
        s = self.settings
        self.model_dir = resolve_model_dir(s.storage_uri, home=s.home, model_name=s.model_name, model_registry_url=s.model_registry_url)
        self.metadata = read_metadata(self.model_dir)
        self.version = self.metadata.version
        configure_torch(s.torch_threads)
        with warnings.catch_warnings():  # torch 2.x flags TorchScript as deprecated; it is the artifact contract
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(self.model_dir / MODEL_FILE), map_location="cpu")
        module.eval()
        self._module = module
        self.forward(np.zeros((1, N_FEATURES), dtype=np.float32))  # first call compiles the graph
        self.ready = True
        return self.ready

    def forward(self, rows: np.ndarray) -> np.ndarray:
        """One forward pass: FP32 [N, 15] -> FP32 [N] probabilities."""
        with torch.inference_mode():
            out = self._module(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)))
        return out.reshape(-1).numpy().astype(np.float32, copy=False)

    async def score(self, rows: np.ndarray) -> np.ndarray:
        """Probabilities for ``rows``, merged with concurrent callers into one forward pass."""
        if self._batcher is None:  # created on first use: it needs the server's event loop
            hist = metrics.BATCH_SIZE.labels(self.name, self.version)
            self._batcher = MicroBatcher(
                self._forward_async, self.settings.max_batch_size, self.settings.max_batch_wait_ms / 1000.0, hist.observe
            )
        return await self._batcher.submit(rows)

    async def _forward_async(self, rows: np.ndarray) -> np.ndarray:
        # Inline on the loop: a forward pass of this model is tens of microseconds, less than a thread hop.
        return self.forward(rows)

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise BadRequest("the predictor speaks the V2 protocol only (/v2/models/<name>/infer)")
        features = validate_inputs(payload, INPUT_SPECS)["features"]
        probs = await self.score(features)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=self.version,
            infer_outputs=outputs(payload, [("fraud_probability", "FP32", probs)]),
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )
