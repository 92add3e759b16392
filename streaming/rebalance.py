"""Rebalances: what the engine does when the consumer group moves partitions.

Before partitions are revoked, everything processed is committed (steps 3-6 of the commit order,
``streaming.checkpoint``; the offsets through an awaited ``commit_async``) and all state is
dropped. Newly assigned partitions get their state rebuilt from Kafka (``streaming.restore``) on
the polling thread, before their first record is processed.

kafka-python runs rebalance callbacks on its IO thread while ``poll`` waits for the join, so they
must not block on the consumer (no synchronous commit there) nor hold the thread long
(heartbeats): the revoke awaits an asynchronous commit, and the restore, which takes as long as
replaying a state horizon takes, waits for the polling thread (``restore_pending`` after ``poll``).
The polling thread is parked in ``poll`` meanwhile, so the callbacks touch engine state safely.
"""

from __future__ import annotations

import logging
import time

from kafka import AsyncConsumerRebalanceListener, TopicPartition
from kafka.errors import KafkaError

from rtml_common.kafka import make_consumer
from streaming import metrics
from streaming.admission import Admission
from streaming.changelog import StateChangelog
from streaming.checkpoint import Checkpointer
from streaming.engine import FeatureEngine
from streaming.metrics import RunStats
from streaming.online_schedule import OnlineWriteScheduler
from streaming.repartition import Forwards, unpack
from streaming.restore import replay_partitions
from streaming.settings import StreamingSettings
from streaming.topology import Stream

log = logging.getLogger(__name__)


class Rebalancer:
    """Hands partitions over: commits and forgets before a revoke, rebuilds the state of an assignment.

    ``listener`` is the consumer's rebalance listener; ``pending_restore`` holds the partitions
    assigned during the last ``poll`` until ``restore_pending`` has rebuilt their state.
    """

    def __init__(self, settings: StreamingSettings, topology: dict[str, Stream], engine: FeatureEngine,
                 admission: Admission, checkpointer: Checkpointer, online: OnlineWriteScheduler,
                 forwards: Forwards, stats: RunStats, changelog: StateChangelog | None = None):
        self.settings = settings
        self.topology = topology
        self.engine = engine
        self.admission = admission
        self.checkpointer = checkpointer
        self.online = online
        self.forwards = forwards
        self.stats = stats
        self.changelog = changelog
        self.pending_restore: list[TopicPartition] | None = None  # assigned, state not yet rebuilt
        self.listener = RebalanceListener(self)

    def begin_revoke(self):
        """Steps 3-5 for everything processed, then the offsets' commit request (a future), or None."""
        return self.checkpointer.commit_before_revoke()

    def end_revoke(self, committed: bool, error: BaseException | None = None) -> None:
        """Forget all state (the next assignment rebuilds its own); a failed commit means a replay."""
        self.checkpointer.after_revoke(committed, error)
        self.engine.reset()
        self.forwards.revoke()
        self.online.forget()
        self.pending_restore = None

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Note the new assignment; ``restore_pending`` rebuilds its state before any of its records is processed."""
        self.stats.rebalances += 1
        metrics.REBALANCES.inc()
        if self.settings.apply_owned_forwards:
            self.forwards.assign(assigned)
        self.pending_restore = list(assigned)

    def restore_pending(self) -> None:
        """Rebuild the state of the partitions assigned during the last ``poll``, if any (polling thread)."""
        if self.pending_restore is not None:
            assigned, self.pending_restore = self.pending_restore, None
            self._restore(assigned)

    def _restore(self, assigned: list[TopicPartition]) -> None:
        """Rebuild the state of the assigned partitions: from the state changelog, or by a replay of the
        partitions up to their committed offsets where the changelog holds nothing (a first start)."""
        settings = self.settings
        if self.changelog is not None:
            started = time.monotonic()
            parts = {view: sorted({tp.partition for tp in assigned if view in self.topology[tp.topic].views})
                     for view in self.changelog.topics}
            reader = make_consumer(settings, None, None, check_crcs=settings.check_crcs)
            try:
                records, empty = self.changelog.restore(reader, parts, settings.restore_timeout_s)
            finally:
                reader.close(autocommit=False)
            seconds = time.monotonic() - started
            self.stats.restored += records
            metrics.RESTORE_SECONDS.observe(seconds)
            log.info("assigned %d partitions; rebuilt state from %d changelog records in %.1fs", len(assigned), records, seconds)
            if not empty:
                return
            log.info("state changelog holds nothing for %s: replaying those partitions", sorted(empty))
            assigned = [tp for tp in assigned if any((view, tp.partition) in empty for view in self.topology[tp.topic].views)]
        self._replay(assigned)

    def _replay(self, assigned: list[TopicPartition]) -> None:
        """Rebuild the state of the assigned partitions by replaying them from Kafka, up to their committed offsets."""
        horizon_s = max(a.horizon.total_seconds() for a in self.engine.aggregations) + self.settings.grace_s + 86400
        scratch: dict[str, list] = {}
        restored = [0]

        def fold(stream: Stream, tp: TopicPartition, rec) -> None:
            if stream.is_source:
                event = self.admission.accept(stream, rec, restoring=True)
                events = [event] if event is not None else []
            else:
                events = unpack(rec.value)[1]
            for event in events:
                self.engine.apply(stream.name, event, scratch)
            scratch.clear()  # offline rows were logged by whoever processed these records first
            restored[0] += len(events)

        settings = self.settings
        restore_consumer = make_consumer(settings, None, settings.group_id, check_crcs=settings.check_crcs)
        try:
            result = replay_partitions(restore_consumer, list(assigned), self.topology, fold, horizon_s,
                                       settings.restore_timeout_s)
        finally:
            restore_consumer.close(autocommit=False)
        self.engine.drain_online_values()  # already in the online store
        self.stats.restored += restored[0]
        metrics.RESTORED_EVENTS.inc(restored[0])
        metrics.RESTORE_SECONDS.observe(result.seconds)
        log.info("assigned %d partitions; rebuilt state from %d events (%d records) of %d partitions in %.1fs",
                 len(assigned), restored[0], result.records, result.partitions, result.seconds)


class RebalanceListener(AsyncConsumerRebalanceListener):
    """Kafka's rebalance callbacks, delegated to a ``Rebalancer``.

    They run on kafka-python's IO thread during ``poll`` (the polling thread waits meanwhile), so
    they touch engine state safely but await the revoke's commit instead of blocking on it.
    """

    def __init__(self, rebalancer: Rebalancer):
        self.rebalancer = rebalancer

    async def on_partitions_revoked(self, revoked):
        future = error = None
        try:
            future = self.rebalancer.begin_revoke()
            if future is not None:
                await future
        except KafkaError as exc:  # the commit failed: it only costs a replay (other errors stop the process)
            error = exc
        self.rebalancer.end_revoke(future is not None, error)

    async def on_partitions_lost(self, lost):
        self.rebalancer.end_revoke(False, RuntimeError(f"membership lost with {len(lost)} partitions"))

    async def on_partitions_assigned(self, assigned):
        self.rebalancer.on_assigned(sorted(assigned))


__all__ = ["Rebalancer", "RebalanceListener"]
