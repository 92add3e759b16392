"""Prometheus metrics of the streaming feature engine (explicit registry), and one runner's own counters."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS_CONSUMED = Counter("rtml_stream_events_consumed_total", "Events read from source topics.", ["topic"], registry=REGISTRY)
REKEYED_CONSUMED = Counter("rtml_stream_rekeyed_events_consumed_total", "Events read back from repartition topics.",
                           ["topic"], registry=REGISTRY)
EVENTS_DLQ = Counter("rtml_stream_events_dead_lettered_total", "Events sent to the dead-letter topic.", ["topic", "reason"], registry=REGISTRY)
EVENTS_FILTERED = Counter("rtml_stream_events_filtered_total", "Events dropped by a source's declared filter.", ["topic"], registry=REGISTRY)
ONLINE_ROWS = Counter("rtml_stream_online_rows_written_total", "Rows written to the online store.", ["feature_view"], registry=REGISTRY)
OFFLINE_ROWS = Counter("rtml_stream_offline_rows_written_total", "Rows appended to the offline log.", registry=REGISTRY)
BATCH_SECONDS = Histogram(
    "rtml_stream_batch_duration_seconds", "Time to process one polled batch, commit included.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=REGISTRY,
)
FRESHNESS_SECONDS = Histogram(
    "rtml_stream_feature_freshness_seconds", "Kafka record timestamp to online-store write.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=REGISTRY,
)
CONSUMER_LAG = Gauge("rtml_stream_consumer_lag_records", "Records behind the log end, per partition.", ["topic", "partition"], registry=REGISTRY)
ENTITIES = Gauge("rtml_stream_entities_in_state", "Entities with tiles in this process (per aggregation).", registry=REGISTRY)
RESTORED_EVENTS = Counter(
    "rtml_stream_restored_events_total", "Events replayed from Kafka to rebuild the state of assigned partitions.",
    registry=REGISTRY)
RESTORE_SECONDS = Histogram(
    "rtml_stream_restore_duration_seconds", "Time to rebuild state after an assignment.",
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=REGISTRY)
REBALANCES = Counter("rtml_stream_rebalances_total", "Partition assignments this process received.", registry=REGISTRY)
FORWARDED = Counter("rtml_stream_events_repartitioned_total", "Events re-keyed into a repartition topic.", ["topic"],
                    registry=REGISTRY)
CHECKPOINT_SECONDS = Histogram(
    "rtml_stream_checkpoint_duration_seconds", "Start of a checkpoint (offsets snapshot) to its offsets' commit.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)


@dataclass
class RunStats:
    """What one ``StreamRunner`` did since it started (``run`` returns it; tests and benchmarks read it)."""

    consumed: int = 0  # records of source topics
    rekeyed: int = 0  # events read back from repartition topics
    forwarded: int = 0  # events sent to repartition topics
    restored: int = 0  # state changelog records read, or events replayed, to rebuild assigned partitions
    rebalances: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    online_rows: int = 0
    commits: int = 0
    by_reason: dict = field(default_factory=dict)  # dead letters by reason category
