"""The fraud transformer: raw transactions in, Feast features and the model's decision out."""

from __future__ import annotations

import time

import numpy as np
from kserve.protocol.infer_type import InferRequest, InferResponse

from feature_repo.aggregations import AGGREGATIONS
from inference import metrics
from inference.artifact import read_metadata, resolve_model_dir
from inference.assembly import ENTITY_KEYS, EVENT_FIELDS, assemble, epoch_seconds
from inference.base import V2Model
from inference.features import OnlineFeatureReader
from inference.prediction_log import PredictionLog
from inference.predictor import TorchPredictor
from inference.routing import CanarySplit, LocalRoute, RemoteRoute, Route
from inference.settings import TransformerSettings
from inference.stream import ScoreFanout
from inference.tensors import BadRequest, TensorSpec, outputs, validate_inputs
from rtml_common.errors import ConfigurationError, NotReadyError

INPUT_SPECS = [
    TensorSpec("customer_id", ("INT64",), (-1,)),
    TensorSpec("terminal_id", ("INT64",), (-1,)),
    TensorSpec("tx_amount", ("FP32", "FP64"), (-1,)),
    # Required: the windows are evaluated at the transaction's own time (validate_inputs has no optional inputs).
    TensorSpec("tx_datetime", ("INT64", "BYTES"), (-1,), optional=True),  # absent: the time of the request
]
assert {*ENTITY_KEYS, *EVENT_FIELDS} <= {s.name for s in INPUT_SPECS}, "join keys and current-event fields must be request inputs"
OUTPUT_SPECS = [
    TensorSpec("fraud_probability", ("FP32",), (-1,)),
    TensorSpec("is_fraud", ("BOOL",), (-1,)),
    TensorSpec("model_version", ("BYTES",), (-1,)),
]


class FraudTransformer(V2Model):
    """Scores card transactions: validates, reads online tiles, evaluates the windows at ``tx_datetime``, calls the predictor.

    The predictor is ``predictor`` (same process) when given, else the V2 server at
    ``settings.predictor_host`` over REST or gRPC through one pooled client. With a candidate
    (``candidate``, or ``settings.candidate_predictor_host``) each request goes to one of the
    two by ``settings.canary_percent`` (``inference.routing``); ``version`` is the champion's.
    Every scored row is also published to ``scores`` (the server-sent-events stream).
    """

    input_specs = INPUT_SPECS
    output_specs = OUTPUT_SPECS

    def __init__(
        self, name: str, settings: TransformerSettings, predictor: TorchPredictor | None = None, candidate: TorchPredictor | None = None
    ):
        super().__init__(name)
        self.settings = settings
        self.predictor = predictor
        self.candidate = candidate
        self.split: CanarySplit | None = None
        self.scores = ScoreFanout(name, settings.score_stream_queue, settings.score_stream_max_subscribers, end_on_signals=True)
        self._features: OnlineFeatureReader | None = None
        self._log: PredictionLog | None = None

    def load(self) -> bool:
        """Resolve the champion (and candidate) routes, open the store and the log."""
        s = self.settings
        champion = self._route(self.predictor, s.storage_uri, s.predictor_host, "RTML_PREDICTOR_HOST")
        candidate = None
        if self.candidate is not None or s.candidate_storage_uri or s.candidate_predictor_host:
            candidate = self._route(self.candidate, s.candidate_storage_uri, s.candidate_predictor_host, "RTML_CANDIDATE_PREDICTOR_HOST")
        self.split = CanarySplit(champion, candidate, s.canary_percent)
        self.version = champion.version
        self._features = OnlineFeatureReader(s, s.feature_fetch_threads, s.max_fetch_batch_size)
        if s.prediction_log_enabled:
            self._log = PredictionLog(s, s.prediction_log_topic, s.prediction_log_queue)
        self.ready = True
        return self.ready

    def _route(self, predictor: TorchPredictor | None, storage_uri: str, host: str, host_var: str) -> Route:
        s = self.settings
        if predictor is not None:
            return LocalRoute(predictor, s.decision_threshold)
        if not host:
            raise NotReadyError(f"the transformer needs {host_var}, or the predictor in the same process (--role all)")
        if not storage_uri and host_var != "RTML_PREDICTOR_HOST":  # the champion alone may default to the registry's latest
            raise ConfigurationError(f"{host_var} needs RTML_CANDIDATE_STORAGE_URI: the candidate's defaults and threshold")
        model_dir = resolve_model_dir(storage_uri, home=s.home, model_name=s.model_name, model_registry_url=s.model_registry_url)
        name = s.predictor_model_name or s.model_name
        return RemoteRoute(read_metadata(model_dir), host, s.predictor_protocol, name, s.predictor_timeout_s, s.decision_threshold)

    def stop(self) -> None:
        """End the score streams, close the store's threads and flush the prediction log."""
        self.scores.close()
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
        if "tx_datetime" in cols:
            epoch = epoch_seconds(cols["tx_datetime"])
        else:  # scored as it happens: the windows are evaluated now
            epoch = np.full(len(amount), int(time.time()), dtype=np.int64)
        cols["tx_datetime"] = epoch
        route, request_id = self.split.choose(payload.id)
        keys = np.stack([cols[k] for k in ENTITY_KEYS], axis=1)
        tiles = await self._features.fetch(keys)
        x, missing = assemble(cols, epoch, tiles)
        self._account_missing(cols, missing, route.version)
        probs, version = await route.score(x, request_id)
        metrics.note_served_version(version)
        flags = probs >= route.threshold
        score_hist = metrics.SCORES.labels(self.name, version)
        for p in probs.tolist():
            score_hist.observe(p)
        if self._log is not None:
            self._log.publish(self.name, version, request_id, cols, x, probs, flags)
        self.scores.publish(self.name, version, request_id, cols, x, probs, flags)
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

    def _account_missing(self, cols: dict[str, np.ndarray], missing: np.ndarray, version: str) -> None:
        """Entities without an online row were scored with empty windows: count them, or reject the request."""
        if not missing.any():
            return
        if self.settings.missing_entity_policy == "reject":
            unknown = [f"{a.join_key}={k}" for j, a in enumerate(AGGREGATIONS) for k in cols[a.join_key][missing[:, j]].tolist()]
            raise BadRequest(f"no online features for {', '.join(unknown[:20])}")
        for j, agg in enumerate(AGGREGATIONS):
            if n := int(missing[:, j].sum()):
                metrics.MISSING_ENTITIES.labels(agg.entity, version).inc(n)
