"""Settings of the serving deployables: the predictor, the transformer, and both in one process.

Each class is frozen and read from ``RTML_`` environment variables; CLI flags override
through keyword arguments (``PredictorSettings(http_port=...)``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from feature_repo.store import FeatureStoreSettings
from rtml_common.settings import KafkaSettings, RtmlSettings


class _ServerSettings(RtmlSettings):
    """What every model server needs: names, ports, limits."""

    model_name: str = Field("fraud-detector", description="Model name on the V2 endpoints (/v2/models/<name>).")
    storage_uri: str = Field(
        "",
        description="Model version to serve: a local dir, file://, s3://, gs:// or model-registry://name/version. "
        "Empty: <home>/registry/<model_name>/<latest version>.",
    )
    model_registry_url: str = Field(
        "", description="Kubeflow Model Registry address (http://host:port) used to resolve model-registry:// URIs."
    )
    http_port: int = Field(8080, description="REST (V2) port.")
    grpc_port: int = Field(8081, description="gRPC (V2) port; 0 disables gRPC.")
    max_request_bytes: int = Field(
        4 * 1024 * 1024, description="Largest accepted request body (REST) or message (gRPC); larger gets 413."
    )
    grpc_threads: int = Field(4, description="gRPC server worker threads.")
    shutdown_grace_s: int = Field(5, description="Seconds in-flight requests get to finish after SIGTERM.")


class PredictorSettings(_ServerSettings):
    """The PyTorch predictor: runs the TorchScript model with dynamic micro-batching."""

    max_batch_size: int = Field(256, description="Most rows one forward pass takes; concurrent requests are merged up to it.")
    max_batch_wait_ms: float = Field(
        0.0,
        description="How long the first request of a batch waits for others; 0 merges only requests already queued "
        "in the same event-loop turn (no added latency).",
    )
    torch_threads: int = Field(1, description="torch intra-op threads (torch.set_num_threads).")


class TransformerSettings(_ServerSettings, FeatureStoreSettings, KafkaSettings):
    """The transformer: raw transactions in, Feast features assembled, predictor called, decision out."""

    predictor_host: str = Field(
        "", description="host:port of the predictor (REST or gRPC port per predictor_protocol); empty = in process."
    )
    predictor_protocol: Literal["v2", "grpc-v2"] = Field("v2", description="Protocol to the remote predictor.")
    predictor_model_name: str = Field(
        "", description="Model name on the predictor; empty = model_name (the KServe convention)."
    )
    predictor_timeout_s: float = Field(5.0, description="Timeout of one remote predictor call, seconds.")
    decision_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Probability at or above which is_fraud is true; unset = the model's threshold."
    )
    missing_entity_policy: Literal["empty", "reject"] = Field(
        "empty",
        description="Entities with no online tiles yet: 'empty' scores them with empty windows, exactly as training "
        "computes an entity without history (and counts them), 'reject' answers 400 naming them.",
    )
    feature_fetch_threads: int = Field(
        1,
        ge=0,
        description="Threads reading the online store (reads are batched across requests); 0 reads on the event loop, "
        "which suits a local SQLite store (CPU-bound, no I/O wait to overlap).",
    )
    max_fetch_batch_size: int = Field(512, description="Most entity rows in one online-store read.")
    prediction_log_topic: str = Field(
        "predictions",
        description="Kafka topic every prediction is produced to; used only when RTML_KAFKA_BOOTSTRAP is set. Empty disables.",
    )
    prediction_log_queue: int = Field(10000, description="Predictions buffered for Kafka; beyond it they are dropped and counted.")
    candidate_storage_uri: str = Field(
        "",
        description="Canary: the candidate model version (same URI forms as storage_uri); empty = no candidate. "
        "On Kubernetes KServe splits the traffic instead and this stays empty.",
    )
    candidate_predictor_host: str = Field(
        "", description="Canary, transformer role: host:port of the candidate's predictor (same protocol as the champion's)."
    )
    canary_percent: float = Field(
        0.0,
        ge=0.0,
        le=100.0,
        description="Share of requests (whole requests, by a hash of the request id) the candidate answers, in percent.",
    )
    score_stream_queue: int = Field(
        1000, ge=1, description="Score events buffered per stream subscriber; a slower reader loses events (counted)."
    )
    score_stream_max_subscribers: int = Field(64, ge=0, description="Most open score streams; more get 503.")

    @property
    def prediction_log_enabled(self) -> bool:
        """Only when Kafka was configured explicitly: a local server without a broker never tries to connect."""
        return bool(self.prediction_log_topic) and "kafka_bootstrap" in self.model_fields_set


class ServingSettings(TransformerSettings, PredictorSettings):
    """Transformer and predictor in one process (the local default); the predictor is called in process."""

    predictor_suffix: str = Field(
        "-predictor", description="The in-process predictor is also registered as <model_name><suffix>."
    )
