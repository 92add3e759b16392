"""The fraud transformer: raw transactions in, Feast features and the model's decision out."""

from __future__ import annotations

import uuid

import numpy as np
from kserve.inference_client import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse

from inference import metrics
from inference.artifact import ModelMetadata, read_metadata, resolve_model_dir
from inference.assembly import assemble, epoch_seconds
from inference.base import V2Model
from inference.features import OnlineFeatureReader
from inference.prediction_log import PredictionLog
from inference.predictor import TorchPredictor
from inference.settings import TransformerSettings
from inference.tensors import BadRequest, TensorSpec, outputs, validate_inputs
from rtml_common.errors import NotReadyError

INPUT_SPECS = [
    TensorSpec("customer_id", ("INT64",), (-1,)),
    TensorSpec("terminal_id", ("INT64",), (-1,)),
    TensorSpec("tx_amount", ("FP32", "FP64"), (-1,)),
    TensorSpec("tx_datetime", ("INT64", "BYTES"), (-1,)),
]
OUTPUT_SPECS = [
    TensorSpec("fraud_probability", ("FP32",), (-1,)),
    TensorSpec("is_fraud", ("BOOL",), (-1,)),
    TensorSpec("model_version", ("BYTES",), (-1,)),
]


class FraudTransformer(V2Model):
    """Scores card transactions: validates, reads online features, assembles, calls the predictor.

    The predictor is ``predictor`` (same process) when given, else the V2 server at
    ``settings.predictor_host`` over REST or gRPC through one pooled client.
    """

    input_specs = INPUT_SPECS
    output_specs = OUTPUT_SPECS

    def __init__(self, name: str, settings: TransformerSettings, predictor: TorchPredictor | None = None):
        super().__init__(name)
        self.settings = settings
        self.predictor = predictor
        self.metadata: ModelMetadata | None = None
        self.threshold = 0.5
        self._defaults = np.zeros(0)
        self._features: OnlineFeatureReader | None = None
        self._log: PredictionLog | None = None
        self._rest: InferenceRESTClient | None = None
        self._grpc: InferenceGRPCClient | None = None
        self._predictor_name = settings.predictor_model_name or settings.model_name

    def load(self) -> bool:
        """Read the model's metadata (defaults, threshold, version), open the store, the client, the log."""
        s = self.settings
        if self.predictor is not None:
            if not self.predictor.ready:
                self.predictor.load()
            self.metadata = self.predictor.metadata
        else:
            if not s.predictor_host:
                raise NotReadyError("the transformer needs RTML_PREDICTOR_HOST, or a predictor in the same process")
            model_dir = resolve_model_dir(s.storage_uri, home=s.home, model_name=s.model_name, model_registry_url=s.model_registry_url)
            self.metadata = read_metadata(model_dir)
        self.version = self.metadata.version
        self.threshold = s.decision_threshold if s.decision_threshold is not None else self.metadata.threshold
        self._defaults = np.asarray(self.metadata.default_vector(), dtype=np.float64)
        self._features = OnlineFeatureReader(s, s.feature_fetch_threads, s.max_fetch_batch_size)
        if s.prediction_log_enabled:
            self._log = PredictionLog(s, s.prediction_log_topic, s.prediction_log_queue)
        self.ready = True
        return self.ready

    def stop(self) -> None:
        """Close the store's threads and flush the prediction log."""
        if self._features is not None:
            self._features.close()
        if self._log is not None:
            self._log.close()
        self.ready = False

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise BadRequest("the transformer speaks the V2 protocol only (/v2/models/<name>/infer)")
        cols = validate_inputs(payload, INPUT_SPECS)
        amount = cols["tx_amount"]
        if (amount < 0).any():
            raise BadRequest(f"input 'tx_amount': amounts must not be negative (row {int(np.argmax(amount < 0))})")
        epoch = epoch_seconds(cols["tx_datetime"])
        cols["tx_datetime"] = epoch
        keys = np.stack([cols["customer_id"], cols["terminal_id"]], axis=1)
        online = await self._features.fetch(keys)
        x, no_customer, no_terminal = assemble(amount, epoch, online, self._defaults)
        self._account_missing(cols, no_customer, no_terminal)
        probs, version = await self._score(x, payload.id)
        flags = probs >= self.threshold
        score_hist = metrics.SCORES.labels(self.name, version)
        for p in probs.tolist():
            score_hist.observe(p)
        request_id = payload.id or str(uuid.uuid4())
        if self._log is not None:
            self._log.publish(self.name, version, request_id, cols, x, probs, flags)
        return InferResponse(
            response_id=request_id,
            model_name=self.name,
            model_version=version,
            infer_outputs=outputs(
                payload,
                [
                    ("fraud_probability", "FP32", probs),
                    ("is_fraud", "BOOL", flags),
                    ("model_version", "BYTES", np.full(len(probs), version.encode(), dtype=object)),
                ],
            ),
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=payload.request_outputs,
        )

    def _account_missing(self, cols: dict[str, np.ndarray], no_customer: np.ndarray, no_terminal: np.ndarray) -> None:
        n_cust, n_term = int(no_customer.sum()), int(no_terminal.sum())
        if not (n_cust or n_term):
            return
        if self.settings.missing_entity_policy == "reject":
            unknown = [f"customer_id={c}" for c in cols["customer_id"][no_customer].tolist()]
            unknown += [f"terminal_id={t}" for t in cols["terminal_id"][no_terminal].tolist()]
            raise BadRequest(f"no online features for {', '.join(unknown[:20])}")
        if n_cust:
            metrics.MISSING_ENTITIES.labels("customer").inc(n_cust)
        if n_term:
            metrics.MISSING_ENTITIES.labels("terminal").inc(n_term)

    async def _score(self, x: np.ndarray, request_id: str | None) -> tuple[np.ndarray, str]:
        if self.predictor is not None:
            return await self.predictor.score(x), self.predictor.version
        features = InferInput("features", list(x.shape), "FP32")
        # JSON, not the binary extension: the predictor's REST fast path takes JSON (gRPC sends raw bytes anyway).
        features.set_data_from_numpy(x, binary_data=self.settings.predictor_protocol == "grpc-v2")
        request = InferRequest(self._predictor_name, [features], request_id=request_id or str(uuid.uuid4()))
        try:
            if self.settings.predictor_protocol == "grpc-v2":
                response = await self._grpc_client().infer(request)
            else:
                response = await self._rest_client().infer(
                    f"http://{self.settings.predictor_host}", model_name=self._predictor_name, data=request
                )
            out = response.get_output_by_name("fraud_probability")
            return out.as_numpy().reshape(-1).astype(np.float32, copy=False), response.model_version or self.version
        except Exception as e:
            raise NotReadyError(f"predictor at {self.settings.predictor_host} failed: {type(e).__name__}: {e}") from e

    def _rest_client(self) -> InferenceRESTClient:
        if self._rest is None:  # one client, one connection pool, for the life of the server
            self._rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=self.settings.predictor_timeout_s))
        return self._rest

    def _grpc_client(self) -> InferenceGRPCClient:
        if self._grpc is None:
            self._grpc = InferenceGRPCClient(self.settings.predictor_host, timeout=self.settings.predictor_timeout_s)
        return self._grpc
