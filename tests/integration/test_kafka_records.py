"""The fast record decoder (``rtml_common.kafka_records``) against kafka-python's own, on a real broker."""

from __future__ import annotations

import random

import pytest
from kafka import KafkaConsumer, KafkaProducer

from rtml_common import kafka_records


def _consume_all(bootstrap: str, topics: list[str], expected: int, **config) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
                             check_crcs=False, max_poll_records=97, **config)  # odd poll size: batches split across polls
    consumer.subscribe(topics)
    got: list = []
    try:
        for _ in range(200):  # bounded: 200 polls of up to 1 s
            for records in consumer.poll(timeout_ms=1000).values():
                got.extend(records)
            if len(got) >= expected:
                break
    finally:
        consumer.close()
    return sorted(got, key=lambda r: (r.topic, r.partition, r.offset))


def _produce(bootstrap: str, topic: str, n: int, seed: int, **config) -> None:
    rnd = random.Random(seed)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **config)
    if config.get("transactional_id"):
        producer.init_transactions()
        producer.begin_transaction()
    for i in range(n):
        key = None if i % 7 == 0 else str(rnd.randrange(10**rnd.randrange(1, 9))).encode()
        value = None if i % 11 == 0 and key is not None else rnd.randbytes(rnd.choice([0, 5, 63, 64, 200, 5000]))
        headers = [] if i % 3 else [("h", b"x" * rnd.randrange(0, 300)), ("empty", b""), ("ünï", b"")][: 1 + i % 4]
        producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=1_700_000_000_000 + rnd.randrange(10**7))
    if config.get("transactional_id"):
        producer.commit_transaction()  # leaves control batches in the log, which consumers skip
    producer.flush()
    producer.close()


@pytest.mark.parametrize("isolation_level", ["read_uncommitted", "read_committed"])
def test_fast_records_equal_kafka_pythons_own_field_by_field(kafka_broker, unique, isolation_level):
    """Null and multi-byte keys, values and headers; plain, gzip and transactional batches (with control
    records): every ConsumerRecord field the same as kafka-python's own decoder gives."""
    bootstrap = kafka_broker.bootstrap
    topics = [f"records-plain-{unique}", f"records-gzip-{unique}", f"records-tx-{unique}"]
    _produce(bootstrap, topics[0], 1500, seed=1)
    _produce(bootstrap, topics[1], 1500, seed=2, compression_type="gzip")
    _produce(bootstrap, topics[2], 600, seed=3, transactional_id=f"tx-{unique}")
    try:
        kafka_records.uninstall()
        own = _consume_all(bootstrap, topics, 3600, isolation_level=isolation_level)
        assert kafka_records.install()
        fast = _consume_all(bootstrap, topics, 3600, isolation_level=isolation_level)
    finally:
        kafka_records.install()
    assert len(own) == 3600
    assert fast == own  # namedtuples: topic, partition, leader epoch, offset, timestamps, key, value, headers, sizes
    assert any(r.headers for r in fast) and any(r.key is None for r in fast) and any(r.value is None for r in fast)
