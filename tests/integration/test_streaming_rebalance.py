"""A rebalance that lands while the engine holds uncommitted work, against a real broker.

kafka-python runs rebalance callbacks on its IO thread; a blocking commit there fails the
whole ``poll``. The engine must commit through the callback anyway (nothing replayed), keep
running, and rebuild the state of the partitions it keeps before their next record.
"""

from __future__ import annotations

import threading
import time

import pytest

from feature_repo.store import apply_definitions
from rtml.simulator import generate_transactions, produce_events, to_events
from rtml_common.kafka import make_consumer
from streaming.runner import StreamRunner
from streaming.settings import StreamingSettings
from tests.integration.group_offsets import group_lag

pytestmark = pytest.mark.integration


def test_member_joining_while_work_is_uncommitted_gets_it_committed_at_the_revoke(tmp_path, kafka_broker, unique):
    data = generate_transactions(n_customers=40, n_terminals=80, n_days=10, start_date="2018-04-01", radius=12.0, seed=3)
    group = f"revoke-{unique}"
    # No periodic commit: whatever the runner processed is uncommitted until the rebalance.
    settings = StreamingSettings(home=tmp_path, kafka_bootstrap=kafka_broker.bootstrap, group_id=group,
                                 topic_prefix=f"{unique}-", metrics_port=0, partitions=4,
                                 offline_flush_s=3600, offline_flush_rows=10**9)
    apply_definitions(settings)
    events = list(to_events(data))
    runner = StreamRunner(settings)
    sources = [t for t, s in runner.topology.items() if s.is_source]
    joined, stop = threading.Event(), threading.Event()

    def second_member() -> None:
        consumer = make_consumer(settings, list(runner.topology), group)
        try:
            deadline = time.monotonic() + 120
            while not stop.is_set() and time.monotonic() < deadline:
                consumer.poll(timeout_ms=200)
                if consumer.assignment():
                    joined.set()
        finally:
            consumer.close(autocommit=False)

    member = threading.Thread(target=second_member, daemon=True)
    try:
        produce_events(settings, events)
        deadline = time.monotonic() + 120
        while runner.stats.consumed < len(events):
            assert time.monotonic() < deadline, f"consumed {runner.stats.consumed} of {len(events)}"
            runner.step()
        assert runner.checkpointer.uncommitted and runner.stats.commits == 0
        assert group_lag(settings, group, sources)[0] == len(events)  # nothing committed yet

        member.start()
        deadline = time.monotonic() + 120
        while not (joined.is_set() and runner.stats.rebalances >= 2 and runner.rebalancer.pending_restore is None):
            assert time.monotonic() < deadline, "the second member never got partitions"
            runner.step()  # the rebalance happens inside this poll, on kafka-python's IO thread

        assert group_lag(settings, group, sources)[0] == 0  # committed by the revoke callback
        assert runner.stats.commits == 1 and not runner.checkpointer.uncommitted
        kept = [tp for tp in runner.consumer.assignment() if tp.topic in sources]
        assert 0 < len(kept) < len(sources) * settings.partitions  # the partitions were shared
        assert runner.stats.restored > 0  # the kept partitions' state came back from Kafka
        assert runner.engine.entity_count() > 0
    finally:
        stop.set()
        member.join(timeout=30)
        runner.close()


def test_a_failed_online_write_stops_the_engine_without_committing(tmp_path, kafka_broker, unique):
    """Redis goes away: the write fails, ``run`` raises, and no offset covers the unwritten records."""
    from rtml.local.redis import LocalRedis

    data = generate_transactions(n_customers=20, n_terminals=40, n_days=5, start_date="2018-04-01", radius=12.0, seed=5)
    redis = LocalRedis(tmp_path / "redis").start()
    group = f"fail-{unique}"
    settings = StreamingSettings(home=tmp_path, kafka_bootstrap=kafka_broker.bootstrap, group_id=group,
                                 topic_prefix=f"{unique}-", metrics_port=0, partitions=2,
                                 redis_connection=redis.connection, offline_flush_s=0.2)
    try:
        apply_definitions(settings)
        runner = StreamRunner(settings)
        sources = [t for t, s in runner.topology.items() if s.is_source]
        events = list(to_events(data))
        produce_events(settings, events)
    finally:
        redis.stop()
    with pytest.raises(Exception) as failure:
        runner.run(max_seconds=120)
    chain, exc = [], failure.value  # the write error itself, or a Kafka error raised from it (in a rebalance callback)
    while exc is not None:
        chain.append(exc)
        exc = exc.__cause__
    assert any(type(e).__module__.startswith("redis") for e in chain), chain
    assert group_lag(settings, group, sources)[0] == len(events)  # nothing committed: a restart replays it all
