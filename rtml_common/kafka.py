"""Thin kafka-python wrappers: producers, consumers, topic creation and the dead-letter convention.

Stages call these instead of building clients themselves, so that security settings,
serialisation and the DLQ header format are the same everywhere.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any, Iterable

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from rtml_common import kafka_records
from rtml_common.settings import KafkaSettings

log = logging.getLogger(__name__)

DLQ_SUFFIX = ".dlq"
REASON_HEADER = "rtml-dlq-reason"
SOURCE_HEADER = "rtml-dlq-source"


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of ``topic``."""
    return topic + DLQ_SUFFIX


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer for raw bytes; idempotent with ``acks=all`` (kafka-python 3 defaults, spelled out)."""
    cfg = dict(settings.kafka_client_config(), acks="all", linger_ms=5, batch_size=256 * 1024)
    cfg.update(overrides)
    return KafkaProducer(**cfg)


def make_consumer(settings: KafkaSettings, topics: Iterable[str] | None, group_id: str | None, listener: Any = None,
                  **overrides: Any) -> KafkaConsumer:
    """A consumer with manual commits: the caller commits only after its writes are durable.

    ``topics`` None leaves it unsubscribed (for ``assign``); ``listener`` is a
    ``kafka.ConsumerRebalanceListener`` that hears partitions revoked and assigned.
    """
    cfg = dict(
        settings.kafka_client_config(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2000,
        # A fetch waits for 32 KiB or 25 ms: at a few thousand events a second, fetches of a few
        # records each cost the engine about a tenth more CPU than these (measured at 5,000/s).
        fetch_max_wait_ms=25,
        fetch_min_bytes=32768,
    )
    cfg.update(overrides)
    # kafka-python's fetch loop with the faster record decoder (process-wide; see kafka_records)
    if settings.kafka_fast_records:
        kafka_records.install()
    else:
        kafka_records.uninstall()
    consumer = KafkaConsumer(**cfg)
    if topics is not None:
        consumer.subscribe(list(topics), listener=listener)
    return consumer


def ensure_topics(settings: KafkaSettings, topics: Iterable[str], partitions: int = 1, replication: int = 1,
                  timeout_s: float = 30.0, configs: dict[str, str] | None = None) -> dict[str, int]:
    """Create the topics that do not exist yet (with topic ``configs``); waits for the cluster up to ``timeout_s``.

    Returns the partition count of every topic asked for (existing ones keep theirs)."""
    topics = list(topics)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(**settings.kafka_client_config())
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        missing = [NewTopic(t, partitions, replication, topic_configs=configs or {}) for t in topics if t not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    # Creation is asynchronous: wait until every topic has its partitions in the cluster metadata.
    wanted = set(topics)
    while True:
        ready = partition_counts(settings, wanted)
        if set(ready) >= wanted:
            return ready
        if time.monotonic() > deadline:
            raise KafkaError(f"topics {sorted(wanted - set(ready))} have no partitions after {timeout_s:.0f}s")
        time.sleep(0.2)


def partition_counts(settings: KafkaSettings, topics: Iterable[str]) -> dict[str, int]:
    """Partition count of each existing topic among ``topics``."""
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        return {d.get("name", d.get("topic")): len(d["partitions"]) for d in admin.describe_topics(list(topics)) if d.get("partitions")}
    finally:
        admin.close()


def entity_key(value: Any) -> bytes:
    """The record key of an entity id: its decimal text, as every rtml producer writes it, so that
    Kafka's default partitioner puts an entity in the same partition number on every topic."""
    return str(value).encode()


def dead_letter(producer: KafkaProducer, topic: str, value: bytes | None, key: bytes | None, reason: str) -> None:
    """Send the original bytes of a rejected event to ``<topic>.dlq`` with the reason in a header."""
    headers = [(REASON_HEADER, reason.encode()), (SOURCE_HEADER, topic.encode())]
    producer.send(dlq_topic(topic), value=value, key=key, headers=headers)


def json_bytes(obj: Any) -> bytes:
    """Compact JSON encoding used for every event rtml produces."""
    return json.dumps(obj, separators=(",", ":"), default=str).encode()
