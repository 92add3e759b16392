"""Consumer-group offsets for the engine's integration tests: what a group has committed, read from the broker."""

from __future__ import annotations

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

from rtml_common.kafka import partition_counts
from rtml_common.settings import KafkaSettings


def group_lag(settings: KafkaSettings, group: str, topics: list[str]) -> tuple[int, dict[str, int]]:
    """Records not yet committed by the group over ``topics``, and the committed offsets per topic."""
    admin = KafkaAdminClient(**settings.kafka_client_config())
    consumer = KafkaConsumer(**settings.kafka_client_config())
    try:
        committed = admin.list_group_offsets(group).get(group, {})
        tps = [TopicPartition(t, p) for t, n in partition_counts(settings, topics).items() for p in range(n)]
        ends = consumer.end_offsets(tps)
        lag = sum(ends[tp] - max(0, committed[tp].offset if tp in committed else 0) for tp in tps)
        per_topic: dict[str, int] = {}
        for tp, meta in committed.items():
            per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, meta.offset)
        return lag, per_topic
    finally:
        consumer.close()
        admin.close()
