"""Session fixtures that start the real services integration tests talk to (free loopback ports)."""

from __future__ import annotations

import uuid

import pytest

from rtml.local.kafka import LocalKafka
from rtml_common.settings import KafkaSettings


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """A real Apache Kafka broker (KRaft, single node) for the whole test session."""
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), partitions=4).start()
    yield broker
    broker.stop()


@pytest.fixture
def kafka_settings(kafka_broker) -> KafkaSettings:
    return KafkaSettings(kafka_bootstrap=kafka_broker.bootstrap)


@pytest.fixture
def unique() -> str:
    """A suffix that keeps topics and consumer groups of different tests apart on the shared broker."""
    return uuid.uuid4().hex[:8]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis server for the Feast online store."""
    from rtml.local.redis import LocalRedis

    server = LocalRedis(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()
