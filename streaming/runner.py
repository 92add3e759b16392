"""The Kafka edge of the feature engine: one member of the consumer group, and its poll loop.

``StreamRunner`` runs the poll loop (``run``, ``step``) and wires the parts, each in its own module:
  - ``streaming.topology``   which topics are consumed and what each one feeds; creates them;
  - ``streaming.admission``  what becomes of a source record: applied, dead-lettered with its
                             reason, or filtered;
  - ``streaming.engine``     folds accepted events into tiles and raw offline rows;
  - ``streaming.repartition`` re-keys accepted events for aggregations keyed differently;
  - ``streaming.online_schedule`` when changed tiles go to the online writer (``streaming.online``);
  - ``streaming.checkpoint`` the commit order (at-least-once) and its checkpoints;
  - ``streaming.rebalance``  commit and forget before a revoke, state rebuilt for an assignment.

Repartition shortcut (``apply_owned_forwards``): an accepted event bound for a partition of a
repartition topic that this process owns is applied to that aggregation at once, in the poll
loop; it is still re-keyed, and its copy, consumed later, is a replay: skipped by its header
(``streaming.repartition.applied_by``) while the assignment lasts, a no-op otherwise. Tiles and
offline rows are the same as without the shortcut (events are identified by (id, event time),
and tiles do not depend on the order of arrival, up to the rounding of float sums); only the
wait for the round trip through the broker is gone. Ownership is the consumer's current
assignment (the range assignor gives the co-partitioned partitions to one member), cleared on
every revoke (``streaming.repartition.Forwards``).
"""

from __future__ import annotations

import logging
import threading
import time

from kafka import TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor

from feature_repo.aggregations import AGGREGATIONS
from feature_repo.sources import SOURCES
from feature_repo.store import open_store
from rtml_common.kafka import make_consumer, make_producer
from streaming import metrics
from streaming.admission import Admission
from streaming.checkpoint import Checkpointer
from streaming.changelog import MAX_CHUNK_BYTES, StateChangelog
from streaming.engine import FeatureEngine
from streaming.metrics import RunStats
from streaming.offline import EpochOfflineLog
from streaming.online import WriteListener
from streaming.online_schedule import OnlineWriteScheduler
from streaming.rebalance import Rebalancer
from streaming.repartition import Forwards, applied_by, unpack
from streaming.settings import StreamingSettings
from streaming.topology import Stream, build_topology, create_topics

log = logging.getLogger(__name__)


class StreamRunner:
    """One engine process: a member of the consumer group over every declared source topic.

    ``write_listener(done_at, record_timestamps_ms)`` (optional) hears every finished online
    write with the Kafka timestamps of the records it covers (the benchmark's exact freshness).
    """

    def __init__(self, settings: StreamingSettings, store=None, write_listener: WriteListener | None = None):
        self.settings = settings
        self.topology = build_topology(SOURCES, AGGREGATIONS, settings.topic, settings.repartition)
        counts = create_topics(settings, self.topology, settings.partitions)
        self.forwards = Forwards(self.topology, counts)
        self.engine = FeatureEngine(streams=self.topology.values(), grace_s=settings.grace_s,
                                    track_changes=settings.state_changelog, chunk_days=settings.state_chunk_days)
        self.store = store or open_store(settings)
        self.offline = EpochOfflineLog(settings.offline_path, self.engine.timestamp_columns)
        self.stats = RunStats()
        self.online = OnlineWriteScheduler(settings, self.store, self.engine, self.stats, write_listener)
        # A state changelog record holds an entity's chunk of state: allow them up to the topic's limit.
        self.producer = make_producer(settings, **({"max_request_size": MAX_CHUNK_BYTES} if settings.state_changelog else {}))
        self.changelog = None
        if settings.state_changelog:
            views = {a.feature_view: next(counts[t] for t, st in self.topology.items() if a.feature_view in st.views)
                     for a in self.engine.aggregations}
            self.changelog = StateChangelog(settings, self.engine, self.producer, views)
        self.admission = Admission(self.topology, self.producer, self.stats, settings.max_future_skew_s)
        # The range assignor gives partition p of co-partitioned topics to one member (see streaming.topology).
        self.consumer = make_consumer(settings, None, settings.group_id,
                                      max_poll_records=settings.max_batch_records, check_crcs=settings.check_crcs,
                                      partition_assignment_strategy=(RangePartitionAssignor,),
                                      max_poll_interval_ms=int((settings.restore_timeout_s + 60) * 1000))
        self.checkpointer = Checkpointer(settings, self.consumer, self.producer, self.online, self.offline, self.stats,
                                         self.changelog)
        self.rebalancer = Rebalancer(settings, self.topology, self.engine, self.admission, self.checkpointer,
                                     self.online, self.forwards, self.stats, self.changelog)
        # Subscribed only now: the rebalance listener needs the checkpointer, which needs the consumer.
        self.consumer.subscribe(list(self.topology), listener=self.rebalancer.listener)
        # The first join assigns from this consumer's metadata: fetch it before the first poll, or the
        # leader assigns nothing and the group rebalances again the moment the metadata arrives.
        for topic in self.topology:
            self.consumer.partitions_for_topic(topic)
        self._last_lag = 0.0

    def run(self, stop: threading.Event | None = None, idle_timeout_s: float | None = None,
            max_seconds: float | None = None) -> RunStats:
        """Consume until ``stop`` is set, nothing arrived for ``idle_timeout_s``, or ``max_seconds`` passed."""
        started = last_data = time.monotonic()
        try:
            while not (stop is not None and stop.is_set()):
                n = self.step()
                now = time.monotonic()
                if n:
                    last_data = now
                if idle_timeout_s is not None and now - last_data > idle_timeout_s:
                    break
                if max_seconds is not None and now - started > max_seconds:
                    break
        except BaseException:
            # A failed write (or anything else) must not be followed by a commit: the offsets would
            # cover records whose tiles never reached a store. The next owner replays them.
            self.close(commit=False)
            raise
        self.close()
        return self.stats

    @property
    def caught_up_with_own_forwards(self) -> bool:
        """Whether every event this process re-keyed was consumed back (a single-member group only)."""
        return self.stats.rekeyed >= self.stats.forwarded

    def step(self) -> int:
        """One poll cycle; returns the number of records polled."""
        polled = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_batch_records)
        self.rebalancer.restore_pending()  # assigned during this poll: state first, then the records
        t0 = time.perf_counter()
        n = 0
        for tp, records in polled.items():
            stream = self.topology[tp.topic]
            if stream.is_source:
                self._process_source(tp, stream, records)
            else:
                self._process_repartitioned(tp, stream, records)
            n += len(records)
        if n:
            self.checkpointer.uncommitted = True
        now = time.monotonic()
        self.online.maybe_write(now, n)
        self.checkpointer.tick(now)
        if n:
            metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)
        if now - self._last_lag > 5:
            self._record_lag()
        return n

    def _process_source(self, tp: TopicPartition, stream: Stream, records: list) -> None:
        """Admit, apply and re-key one partition's polled records of a source topic (steps 1-2)."""
        apply, rows, stamps = self.engine.apply, self.offline.rows, self.online.pending_timestamps
        name, targets = stream.name, self.forwards.targets[tp.topic]
        decoded = self.admission.decode_batch(tp.topic, records)
        admit, time_field = self.admission.admit, stream.source.event_time
        for rec, event in zip(records, decoded):
            stamps.append(rec.timestamp)
            if not admit(rec, event, time_field):
                continue
            apply(name, event, rows)
            for rekeyer, owned, rekeyed_name in targets:
                # Re-key for the aggregations this topic's key does not fit. When this process owns
                # the target partition, the event is applied at once: its copy, consumed a poll or
                # two later, is then a replay (a no-op), and the features do not wait for the
                # repartition round trip.
                if rekeyer.add(event, rec.timestamp) in owned:
                    apply(rekeyed_name, event, rows)
        for rekeyer, owned, _ in targets:
            sent = rekeyer.send(self.producer, owned, self.forwards.token)
            self.stats.forwarded += sent
            metrics.FORWARDED.labels(rekeyer.topic).inc(sent)
        self.stats.consumed += len(records)
        metrics.EVENTS_CONSUMED.labels(tp.topic).inc(len(records))

    def _process_repartitioned(self, tp: TopicPartition, stream: Stream, records: list) -> None:
        """Apply one partition's polled records of a repartition topic: batches of events accepted at their source."""
        engine, rows, stamps = self.engine, self.offline.rows, self.online.pending_timestamps
        apply, name, token = engine.apply, stream.name, self.forwards.token
        count = 0
        for rec in records:
            early = applied_by(rec.headers, token)
            if early:  # applied at the source by this very assignment: every event is a replay
                count += early
                continue
            ts_list, events = unpack(rec.value)
            for ts, event in zip(ts_list, events):
                apply(name, event, rows)
                if engine.changed:  # not applied at its source already (the repartition shortcut)
                    stamps.append(ts)
            count += len(events)
        self.stats.rekeyed += count
        metrics.REKEYED_CONSUMED.labels(tp.topic).inc(count)

    def commit(self) -> None:
        """Steps 3-6 of the commit order now, for everything processed so far: returns once the offsets are committed."""
        self.checkpointer.commit()

    def _record_lag(self) -> None:
        self._last_lag = time.monotonic()
        assigned = list(self.consumer.assignment())
        if not assigned:
            return
        try:
            ends = self.consumer.end_offsets(assigned)
            for tp in assigned:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, ends[tp] - self.consumer.position(tp)))
        except Exception as exc:  # lag is best effort: never stop consuming because of it
            log.debug("lag check failed: %s", exc)

    def close(self, commit: bool = True) -> None:
        """Commit everything processed (unless ``commit`` is false: after a failure) and release the clients."""
        try:
            self.checkpointer.conclude(commit)
        finally:
            self.online.close()
            self.consumer.close(autocommit=False)  # leaving the group calls the revoke callback: see Checkpointer.failed
            self.producer.close()


__all__ = ["StreamRunner", "RunStats", "TopicPartition"]
