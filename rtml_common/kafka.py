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


def make_consumer(settings: KafkaSettings, topics: Iterable[str], group_id: str | None, **overrides: Any) -> KafkaConsumer:
    """A consumer with manual commits: the caller commits only after its writes are durable."""
    cfg = dict(
        settings.kafka_client_config(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2000,
        fetch_max_wait_ms=50,
    )
    cfg.update(overrides)
    consumer = KafkaConsumer(**cfg)
    consumer.subscribe(list(topics))
    return consumer


def ensure_topics(settings: KafkaSettings, topics: Iterable[str], partitions: int = 1, replication: int = 1, timeout_s: float = 30.0) -> None:
    """Create the topics that do not exist yet; waits for the cluster up to ``timeout_s``."""
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
        missing = [NewTopic(t, partitions, replication) for t in topics if t not in existing]
        if missing:
            try:
                admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def dead_letter(producer: KafkaProducer, topic: str, value: bytes | None, key: bytes | None, reason: str) -> None:
    """Send the original bytes of a rejected event to ``<topic>.dlq`` with the reason in a header."""
    headers = [(REASON_HEADER, reason.encode()), (SOURCE_HEADER, topic.encode())]
    producer.send(dlq_topic(topic), value=value, key=key, headers=headers)


def json_bytes(obj: Any) -> bytes:
    """Compact JSON encoding used for every event rtml produces."""
    return json.dumps(obj, separators=(",", ":"), default=str).encode()
