"""Prometheus metrics of the serving path, on an explicit registry exposed at /metrics."""

from __future__ import annotations

from contextvars import ContextVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

registry = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "rtml_inference_requests_total",
    "Inference requests answered, by model, model version and status (HTTP status code, also for gRPC).",
    ["model", "model_version", "status"],
    registry=registry,
)
REQUEST_DURATION = Histogram(
    "rtml_inference_request_duration_seconds",
    "Time from request received to response sent.",
    ["model", "model_version", "status"],
    buckets=_LATENCY_BUCKETS,
    registry=registry,
)
FEATURE_FETCH_DURATION = Histogram(
    "rtml_feature_fetch_duration_seconds",
    "Time of one batched online-store read (Feast get_online_features).",
    buckets=_LATENCY_BUCKETS,
    registry=registry,
)
FEATURE_FETCH_ROWS = Histogram(
    "rtml_feature_fetch_rows",
    "Entity rows per online-store read (reads are merged across concurrent requests).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    registry=registry,
)
BATCH_SIZE = Histogram(
    "rtml_inference_batch_size",
    "Rows per model forward pass (requests are merged by the micro-batcher).",
    ["model", "model_version"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
    registry=registry,
)
MISSING_ENTITIES = Counter(
    "rtml_inference_missing_entities_total",
    "Entities with no online row, scored with empty windows (as training scores an entity with no history).",
    ["entity", "model_version"],
    registry=registry,
)
SCORES = Histogram(
    "rtml_inference_score",
    "Predicted fraud probabilities, per serving model version (canary analysis compares their distributions).",
    ["model", "model_version"],
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
    registry=registry,
)
PREDICTION_LOG_DROPPED = Counter(
    "rtml_prediction_log_dropped_total",
    "Predictions not produced to Kafka (buffer full or broker failure).",
    registry=registry,
)

SCORE_STREAM_SUBSCRIBERS = Gauge(
    "rtml_score_stream_subscribers",
    "Open server-sent-events score streams.",
    ["model"],
    registry=registry,
)
SCORE_STREAM_DROPPED = Counter(
    "rtml_score_stream_dropped_total",
    "Score events not delivered to a stream subscriber because its buffer was full (a slow reader).",
    ["model"],
    registry=registry,
)

# The version that served the current request: with a canary split it is known only after the
# model chose, so the edge that counts the request (REST middleware, gRPC wrapper) opens a slot
# and the model fills it. A mutable slot, not a bare value, so that it survives context copies.
_served_version: ContextVar[list | None] = ContextVar("rtml_served_version", default=None)


def open_version_slot():
    """Start tracking the serving version of the current request; returns (slot, token for close_version_slot)."""
    slot: list[str] = []
    return slot, _served_version.set(slot)


def close_version_slot(token) -> None:
    """Stop tracking (restores the previous slot of this context)."""
    _served_version.reset(token)


def note_served_version(version: str) -> None:
    """Record which model version answered the current request (no-op outside a slot)."""
    slot = _served_version.get()
    if slot is not None:
        slot.append(version)


def exposition() -> bytes:
    """rtml's metrics followed by kserve's own (default registry) in the text format."""
    return generate_latest(registry) + generate_latest(REGISTRY)
