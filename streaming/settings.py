"""Settings of the streaming feature engine deployable."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from feature_repo.store import FeatureStoreSettings
from rtml_common.settings import KafkaSettings


class StreamingSettings(KafkaSettings, FeatureStoreSettings):
    """Everything the engine process reads from the environment (RTML_ prefix)."""

    group_id: str = Field("rtml-feature-engine", description="Kafka consumer group shared by all engine processes.")
    max_batch_records: int = Field(5000, description="Most records one poll returns.")
    poll_timeout_ms: int = Field(100, description="How long one poll waits for records.")
    online_flush_s: float = Field(
        0.1, description="Shortest time between two online-store writes; an entity touched several times in between "
                         "is written once. Writes also wait for the previous one, so slow writes coalesce more.")
    online_write_share: float = Field(
        0.5, gt=0, le=1, description="While catching up (polls come back full), the largest share of wall time online "
                                     "writes may take: writes are spaced so, and coalesce more entities each.")
    online_writer: Literal["native", "feast"] = Field(
        "native", description="How rows reach the online store: 'native' writes Feast's own SQLite/Redis layout directly "
                              "(the same bytes, read unchanged by Feast; about 5x less CPU per row), other store types "
                              "fall back to Feast; 'feast' always goes through Feast's online_write_batch.")
    offline_flush_rows: int = Field(100_000, description="Rows buffered before the offline log writes a file.")
    offline_flush_s: float = Field(5.0, description="Longest time offline rows stay buffered (bounds replay after a crash).")
    grace_s: float = Field(
        86400.0, ge=0, description="How much older than an entity's newest event its state reaches beyond the longest "
        "window plus delay: requests evaluated up to this long before the newest event read complete tiles. Events "
        "older than the kept state are ignored (never counted twice).")
    max_future_skew_s: float = Field(
        300.0, ge=0, description="How far ahead of its record's Kafka timestamp (when it was produced) an event time may "
        "be; later events go to the "
        "DLQ with reason 'future' (timestamps outside what the stores represent get reason 'range').")
    metrics_port: int = Field(9100, description="Port of the Prometheus /metrics endpoint; 0 disables it.")
    state_changelog: bool = Field(
        True, description="Keep each entity's state (remembered events, tiles) in chunks on a compacted changelog "
                          "topic per feature view (rtml-<view>-changelog) and restore assigned partitions from it; "
                          "off, or where it holds nothing for a partition (a first start), assigned partitions are "
                          "replayed from their source topics instead.")
    state_chunk_days: int = Field(
        7, ge=1, description="Days of event time per state changelog record of an entity: longer spans mean fewer "
                             "records to write and to restore, shorter ones smaller rewrites of a busy entity's chunk.")
    restore_timeout_s: float = Field(
        900.0, gt=0, description="Longest the state rebuild of assigned partitions (from the state changelog, or a "
                                 "replay up to the group's committed offsets; at start-up and after every rebalance) may "
                                 "take before the process stops with an error; the consumer's max poll interval is set "
                                 "above it. About 340-510 s per million entities with a month of history here.")
    repartition: bool = Field(
        True, description="Re-key events into repartition topics for aggregations keyed differently from their source "
                          "topic (terminal windows from customer-keyed transactions), so several engine processes can "
                          "share the partitions. Off saves a hop per event, but then one process must own every partition.")
    apply_owned_forwards: bool = Field(
        True, description="Apply a re-keyed event at once when this process owns its repartition partition (its copy, "
                          "consumed later, is then a replay): same features, without waiting for the round trip through "
                          "the broker. Off, aggregations keyed differently are fed by the repartition topic alone.")
    check_crcs: bool = Field(
        False, description="Verify record CRCs on fetch (about a tenth of the consume cost with the native crc32c "
                           "package; off by default like librdkafka's check.crcs, the broker checks CRCs on produce).")
    partitions: int = Field(4, description="Partitions for topics the engine creates when they do not exist.")
    gc_young_objects: int = Field(
        50_000, ge=0, description="Allocations between two young-generation collections of CPython's cyclic GC (Python's "
                                  "default is 700); start-up objects are frozen out of collection. 0 keeps Python's defaults.")
    gil_switch_interval_s: float = Field(
        0.0, ge=0, description="CPython's GIL switch interval for the engine process; 0 keeps Python's default (5 ms).")
