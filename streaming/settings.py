"""Settings of the streaming feature engine deployable."""

from __future__ import annotations

from pydantic import Field

from feature_repo.store import FeatureStoreSettings
from rtml_common.settings import KafkaSettings


class StreamingSettings(KafkaSettings, FeatureStoreSettings):
    """Everything the engine process reads from the environment (RTML_ prefix)."""

    group_id: str = Field("rtml-feature-engine", description="Kafka consumer group shared by all engine processes.")
    max_batch_records: int = Field(5000, description="Most records handled between two commits.")
    poll_timeout_ms: int = Field(100, description="How long one poll waits for records.")
    offline_flush_rows: int = Field(20000, description="Rows buffered before the offline log writes a file.")
    offline_flush_s: float = Field(5.0, description="Longest time offline rows stay buffered (bounds replay after a crash).")
    grace_s: float = Field(0.0, description="Extra state kept beyond the longest window, for late events.")
    metrics_port: int = Field(9100, description="Port of the Prometheus /metrics endpoint; 0 disables it.")
    restore: bool = Field(True, description="Rebuild window state from the offline log at start-up.")
    partitions: int = Field(4, description="Partitions for topics the engine creates when they do not exist.")
