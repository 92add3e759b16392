"""The Kafka edge of the feature engine: poll, validate, apply, write, commit.

Commit order (this is the at-least-once contract; see ``step`` and ``commit``):
  1. state   - every polled record is validated and folded into the in-memory tiles
               (``FeatureEngine.apply``); replays are no-ops because state knows events by (id, event time);
  2. produce - rejected events go to ``<topic>.dlq``; accepted events of a source that feeds an
               aggregation keyed differently are re-keyed into its repartition topic
               (``streaming.topology``); both sends are asynchronous until step 5;
  3. online  - the packed tiles of every entity changed since the last write are written to
               the Feast online store by the background writer (``streaming.online``): at most one
               write in flight, a new one once the last is done and ``online_flush_s`` has passed
               (spaced to ``online_write_share`` of the time while catching up), so an entity
               touched many times in between is written once. Writes are idempotent upserts, so
               they may run ahead of the commit;
  4. offline - raw validated events are appended to the offline log (training sets are computed
               from it), as new files, every ``offline_flush_s`` seconds or ``offline_flush_rows`` rows;
  5. flush   - the producer is flushed (dead letters and repartitioned events are durable);
  6. offsets - only then are consumer offsets committed.
A commit is a checkpoint: the polling thread drains every touched entity into a last online
write, snapshots the consumer's positions and takes the offline buffer; a checkpoint thread
waits for that online write, writes the offline files and flushes the producer (steps 3-5)
while polling goes on; once it is done, the polling thread commits the snapshot (step 6). So
committed offsets never run ahead of the online store, the offline log or the repartition
topics, and a commit no longer stalls the poll loop. One checkpoint is in flight at a time.
A failure anywhere (a store down, a bad write) stops the process with no further commit, not
even the one leaving the group would make, so the next owner replays what was not stored.
A crash between 3 and 6 replays at most one flush interval: state rebuilt from Kafka up to the
committed offsets (``streaming.restore``) plus id de-duplication makes the replay converge to
the same online tiles (the offline log may hold a replayed event twice; its readers
de-duplicate by event id).

Repartition shortcut (``apply_owned_forwards``): an accepted event bound for a partition of a
repartition topic that this process owns is applied to that aggregation at once, in step 1; it
is still re-keyed (step 2), and its copy, consumed later, is a replay: skipped by its header
(``streaming.repartition.applied_by``) while the assignment lasts, a no-op otherwise. Tiles and
offline rows are the same as without the shortcut (events are identified by (id, event time),
and tiles do not depend on the order of arrival, up to the rounding of float sums); only the
wait for the round trip through the broker is gone. Ownership is the consumer's current
assignment (the range assignor gives the co-partitioned partitions to one member), cleared on
every revoke.

Rebalances: before partitions are revoked, everything is committed (steps 3-6, the offsets
through an awaited ``commit_async``: the callback runs on kafka-python's IO thread) and the state
dropped; newly assigned partitions get their state rebuilt from Kafka on the polling thread
before their first record is processed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from kafka import AsyncConsumerRebalanceListener, TopicPartition
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from feature_repo.aggregations import AGGREGATIONS
from feature_repo.sources import SOURCES
from feature_repo.store import open_store
from rtml_common.kafka import dead_letter, dlq_topic, ensure_topics, make_consumer, make_producer
from streaming import metrics
from streaming.engine import FeatureEngine
from streaming.offline import EpochOfflineLog
from streaming.online import OnlineWriter, WriteListener
from streaming.repartition import Rekeyer, applied_by, unpack
from streaming.restore import replay_partitions
from streaming.settings import StreamingSettings
from streaming.topology import Stream, build_topology, check_copartitioned, repartition_partitions
from streaming.validation import InvalidEvent, batch_decoder_for, decoder_for

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    consumed: int = 0  # records of source topics
    rekeyed: int = 0  # records of repartition topics
    forwarded: int = 0  # records sent to repartition topics
    restored: int = 0
    rebalances: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    online_rows: int = 0
    commits: int = 0
    by_reason: dict = field(default_factory=dict)


class StreamRunner:
    """One engine process: a member of the consumer group over every declared source topic.

    ``write_listener(done_at, record_timestamps_ms)`` (optional) hears every finished online
    write with the Kafka timestamps of the records it covers (the benchmark's exact freshness).
    """

    def __init__(self, settings: StreamingSettings, store=None, write_listener: WriteListener | None = None):
        self.settings = settings
        self.topology = build_topology(SOURCES, AGGREGATIONS, settings.topic, settings.repartition)
        self._decoders = {t: decoder_for(s.source) for t, s in self.topology.items()}
        self._batch_decoders = {t: batch_decoder_for(s.source) for t, s in self.topology.items()}
        self._create_topics()
        self.engine = FeatureEngine(streams=self.topology.values(), grace_s=settings.grace_s)
        self.store = store or open_store(settings)
        self.offline = EpochOfflineLog(settings.offline_path, self.engine.timestamp_columns)
        self._user_listener = write_listener
        self.writer = OnlineWriter(self.store, self.engine.aggregations, listener=self._on_online_write,
                                   on_written=self._count_online_rows, mode=settings.online_writer)
        self.producer = make_producer(settings)
        self.stats = RunStats()
        self._last_flush = time.monotonic()
        self._last_online = 0.0
        self._last_lag = 0.0
        self._uncommitted = False  # records processed after the last checkpoint started
        self._checkpoint: _Checkpoint | None = None
        self._failed = False  # set when closing after an error: no commit may follow
        self._pending_restore: list[TopicPartition] | None = None  # assigned, state not yet rebuilt
        self._record_ts: list[int] = []  # Kafka timestamps of records not yet covered by an online write
        # The range assignor gives partition p of co-partitioned topics to one member (see streaming.topology).
        self.consumer = make_consumer(settings, list(self.topology), settings.group_id, listener=_Rebalance(self),
                                      max_poll_records=settings.max_batch_records, check_crcs=settings.check_crcs,
                                      partition_assignment_strategy=(RangePartitionAssignor,),
                                      max_poll_interval_ms=int((settings.restore_timeout_s + 60) * 1000))
        # The first join assigns from this consumer's metadata: fetch it before the first poll, or the
        # leader assigns nothing and the group rebalances again the moment the metadata arrives.
        for topic in self.topology:
            self.consumer.partitions_for_topic(topic)

    def _create_topics(self) -> None:
        s = self.settings
        sources = [t for t, st in self.topology.items() if st.is_source]
        counts = ensure_topics(s, sources + [dlq_topic(t) for t in sources], partitions=s.partitions)
        for topic, n in repartition_partitions(self.topology, counts, s.partitions).items():
            counts.update(ensure_topics(s, [topic], partitions=n))
        check_copartitioned(self.topology, counts)
        self._rekeyers = {f.topic: Rekeyer(f, counts[f.topic]) for st in self.topology.values() for f in st.forwards}
        # Partitions of each repartition topic this process owns: their events are applied at the source.
        self._owned: dict[str, set[int]] = {topic: set() for topic in self._rekeyers}
        self._applied_token = b""  # marks re-keyed records applied at their source during the current assignment

    # -- rebalances --------------------------------------------------------------------------
    # kafka-python runs rebalance callbacks on its IO thread while ``poll`` waits for the join,
    # so they must not block on the consumer (no sync commit there) nor hold the thread long
    # (heartbeats): the revoke commits through ``commit_async`` (awaited by ``_Rebalance``) and
    # the restore of new partitions runs on the polling thread before their first record.
    def begin_revoke(self):
        """Steps 3-5 for everything processed, then the offsets' commit request (a future), or None."""
        if self._failed:  # closing after a failure: nothing more is committed
            return None
        pending = self._uncommitted or self._checkpoint is not None
        if self._checkpoint is not None:  # its offsets are covered by the commit below
            checkpoint, self._checkpoint = self._checkpoint, None
            checkpoint.join()
        if not pending:
            return None
        if self._record_ts:
            self._write_online(time.monotonic())
        self._store(self.writer.last_ticket, self.offline.take())
        return self.consumer.commit_async()

    def end_revoke(self, committed: bool, error: BaseException | None = None) -> None:
        """Forget all state (the next assignment rebuilds its own); a failed commit means a replay."""
        if error is not None:  # the group moved on already: the next owner replays from the last commit
            log.warning("commit before rebalance failed, records since the last commit will be replayed: %s", error)
            self.writer.wait()
        elif committed:
            self.stats.commits += 1
        self._uncommitted = False
        self._last_flush = time.monotonic()
        self.engine.reset()
        for owned in self._owned.values():
            owned.clear()
        self._applied_token = b""
        self._record_ts.clear()
        self._pending_restore = None

    def on_assigned(self, assigned: list[TopicPartition]) -> None:
        """Note the new assignment; ``step`` rebuilds its state before processing any of its records."""
        self.stats.rebalances += 1
        metrics.REBALANCES.inc()
        if self.settings.apply_owned_forwards:
            self._applied_token = uuid.uuid4().hex.encode()  # names this assignment (see streaming.repartition)
            for tp in assigned:
                if tp.topic in self._owned:
                    self._owned[tp.topic].add(tp.partition)
        if self.settings.restore:
            self._pending_restore = list(assigned)

    def _restore(self, assigned: list[TopicPartition]) -> None:
        """Rebuild the state of the assigned partitions from Kafka, up to their committed offsets."""
        horizon_s = max(a.horizon.total_seconds() for a in self.engine.aggregations) + self.settings.grace_s + 86400
        scratch: dict[str, list] = {}
        restored = [0]

        def fold(stream: Stream, tp: TopicPartition, rec) -> None:
            if stream.is_source:
                event = self._accept(stream, tp, rec, restoring=True)
                events = [event] if event is not None else []
            else:
                events = unpack(rec.value)[1]
            for event in events:
                self.engine.apply(stream.name, event, scratch)
            scratch.clear()  # offline rows were logged by whoever processed these records first
            restored[0] += len(events)

        restore_consumer = make_consumer(self.settings, None, self.settings.group_id, check_crcs=self.settings.check_crcs)
        try:
            result = replay_partitions(restore_consumer, list(assigned), self.topology, fold, horizon_s,
                                       self.settings.restore_timeout_s)
        finally:
            restore_consumer.close(autocommit=False)
        self.engine.drain_online_values()  # already in the online store
        self.stats.restored += restored[0]
        metrics.RESTORED_EVENTS.inc(restored[0])
        metrics.RESTORE_SECONDS.observe(result.seconds)
        log.info("assigned %d partitions; rebuilt state from %d events (%d records) of %d partitions in %.1fs",
                 len(assigned), restored[0], result.records, result.partitions, result.seconds)

    # -- main loop ---------------------------------------------------------------------------
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
        """Whether every record this process re-keyed was consumed back (a single-member group only)."""
        return self.stats.rekeyed >= self.stats.forwarded

    def step(self) -> int:
        """One poll cycle; returns the number of records polled."""
        polled = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_batch_records)
        if self._pending_restore is not None:  # assigned during this poll: state first, then the records
            assigned, self._pending_restore = self._pending_restore, None
            self._restore(assigned)
        t0 = time.perf_counter()
        n = 0
        apply, rows, stamps = self.engine.apply, self.offline.rows, self._record_ts
        for tp, records in polled.items():
            stream = self.topology[tp.topic]
            name = stream.name
            if not stream.is_source:  # a repartition topic: batches of events accepted at their source
                count = 0
                engine, token = self.engine, self._applied_token
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
                n += len(records)
                self.stats.rekeyed += count
                metrics.REKEYED_CONSUMED.labels(tp.topic).inc(count)
                continue
            rekeyers = [self._rekeyers[f.topic] for f in stream.forwards]
            owned = [(self._owned[f.topic], self.topology[f.topic].name) for f in stream.forwards]
            decoded = self._batch_decoders[tp.topic]([rec.value for rec in records])
            admit, time_field = self._admit, stream.source.event_time
            for rec, event in zip(records, decoded):
                stamps.append(rec.timestamp)
                if not admit(tp, rec, event, time_field):
                    continue
                apply(name, event, rows)
                for rk, (partitions, rekeyed) in zip(rekeyers, owned):
                    # step 2: re-key for the aggregations this topic's key does not fit. When this
                    # process owns the target partition, the event is applied at once: its copy,
                    # consumed a poll or two later, is then a replay (a no-op), and the features
                    # do not wait for the repartition round trip.
                    if rk.add(event, rec.timestamp) in partitions:
                        apply(rekeyed, event, rows)
            for rk, (partitions, _) in zip(rekeyers, owned):
                sent = rk.send(self.producer, partitions, self._applied_token)
                self.stats.forwarded += sent
                metrics.FORWARDED.labels(rk.topic).inc(sent)
            n += len(records)
            self.stats.consumed += len(records)
            metrics.EVENTS_CONSUMED.labels(tp.topic).inc(len(records))
        if n:
            self._uncommitted = True
        now = time.monotonic()
        if stamps and not self.writer.busy and now - self._last_online >= self._online_gap(n):
            self._write_online(now)
        if self._checkpoint is not None and self._checkpoint.done.is_set():
            self._finish_checkpoint()
        if self._uncommitted and self._checkpoint is None and (
                now - self._last_flush >= self.settings.offline_flush_s
                or self.offline.pending >= self.settings.offline_flush_rows):
            self._start_checkpoint(now)
        if n:
            metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)
        if now - self._last_lag > 5:
            self._record_lag()
        return n

    def _accept(self, stream: Stream, tp: TopicPartition, rec, restoring: bool = False) -> dict | None:
        """The validated event of a source topic's record, or None when it is rejected (dead-lettered), filtered or late.

        Repartition topics never come here: they carry events their source accepted. While
        restoring, the same decisions are made again silently (they were acted on the first time).
        """
        try:
            event = self._decoders[tp.topic](rec.value)
        except InvalidEvent as exc:
            event = exc
        return event if self._admit(tp, rec, event, stream.source.event_time, restoring) else None

    def _admit(self, tp: TopicPartition, rec, event, time_field: str, restoring: bool = False) -> bool:
        """Whether a decoded record (an event, None = filtered, or its ``InvalidEvent``) is applied.

        An event stamped later than now plus ``max_future_skew_s`` is dead-lettered as ``future``
        (a wrong clock or a typo such as year 9999), so it can neither poison its tiles nor move
        anything for the events after it. There is no stream-time lateness: tiles commute, so an
        event that arrives after newer ones is applied exactly as if it had come in order, and which
        events are accepted does not depend on arrival order (training reads the same raw log).
        """
        if event is None or isinstance(event, InvalidEvent):
            if not restoring:
                self._reject(rec, event)
            return False
        ahead = event[time_field] - time.time()
        if ahead > self.settings.max_future_skew_s:
            if not restoring:
                self._reject(rec, InvalidEvent("future", f"event time {event[time_field]:.0f} is {ahead:.0f}s ahead of this "
                                                         f"engine's clock (allowed skew {self.settings.max_future_skew_s:.0f}s)"))
            return False
        return True

    def _reject(self, rec, error: InvalidEvent | None) -> None:
        """A source record that yields no event: dead-lettered with its reason, or counted as filtered (None)."""
        if error is None:
            metrics.EVENTS_FILTERED.labels(rec.topic).inc()
            self.stats.filtered += 1
        else:
            self._dead_letter(rec, error)

    def _dead_letter(self, rec, exc: InvalidEvent) -> None:
        dead_letter(self.producer, rec.topic, rec.value, rec.key, exc.reason)
        metrics.EVENTS_DLQ.labels(rec.topic, exc.category).inc()
        self.stats.dead_lettered += 1
        self.stats.by_reason[exc.category] = self.stats.by_reason.get(exc.category, 0) + 1

    def _online_gap(self, polled: int) -> float:
        """Least time between two online writes.

        Caught up, a write starts as soon as the last one is done (and ``online_flush_s`` has
        passed): freshness first. Catching up (the poll came back full), freshness is lost
        anyway, so writes keep to ``online_write_share`` of the time and coalesce more entities.
        """
        gap = self.settings.online_flush_s
        if polled >= self.settings.max_batch_records:
            gap = max(gap, self.writer.last_duration_s / self.settings.online_write_share)
        return gap

    def _write_online(self, now: float) -> None:
        """Hand the tiles of every changed entity to the writer (step 3 of the commit order)."""
        self._last_online = now
        drained = self.engine.drain_online_values()
        stamps, self._record_ts = self._record_ts, []
        self.writer.submit(drained, stamps)
        metrics.ENTITIES.set(self.engine.entity_count())

    def _on_online_write(self, done_at: float, stamps: list[int]) -> None:
        if stamps:
            metrics.FRESHNESS_SECONDS.observe(max(0.0, done_at - min(stamps) / 1000.0))
        if self._user_listener is not None:
            self._user_listener(done_at, stamps)

    def _count_online_rows(self, view: str, rows: int, seconds: float) -> None:
        metrics.ONLINE_ROWS.labels(view).inc(rows)
        self.stats.online_rows += rows

    def commit(self) -> None:
        """Steps 3-6 now for everything processed so far: returns once the offsets are committed."""
        if self._checkpoint is not None:
            self._finish_checkpoint()
        if self._uncommitted:
            self._start_checkpoint(time.monotonic())
            self._finish_checkpoint()

    def _start_checkpoint(self, now: float) -> None:
        """Step 3's last online write, the offsets snapshot and the offline buffer; steps 3-5 go to a thread."""
        if self._record_ts:
            self._write_online(now)
        ticket = self.writer.last_ticket
        offsets = {tp: OffsetAndMetadata(self.consumer.position(tp), "", -1) for tp in self.consumer.assignment()}
        tables = self.offline.take()
        self._uncommitted = False
        self._last_flush = now

        self._checkpoint = _Checkpoint(offsets, lambda: self._store(ticket, tables))

    def _store(self, ticket: int, tables: dict[str, list[dict]]) -> None:
        """Steps 3-5 for what a checkpoint covers: the online write ``ticket``, the offline ``tables``, the producer."""
        self.writer.wait(ticket)  # 3: the online write that covers the snapshot
        metrics.OFFLINE_ROWS.inc(self.offline.write(tables))  # 4
        self.producer.flush()  # 5: dead letters and re-keyed events

    def _finish_checkpoint(self) -> None:
        """Step 6: commit the snapshot once steps 3-5 are done (their error stops the process uncommitted)."""
        checkpoint, self._checkpoint = self._checkpoint, None
        checkpoint.join()
        self.consumer.commit(checkpoint.offsets)
        metrics.CHECKPOINT_SECONDS.observe(time.monotonic() - checkpoint.started)
        self.stats.commits += 1

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
        self._failed = self._failed or not commit
        try:
            if commit:
                try:
                    self.commit()
                except BaseException:
                    self._failed = True
                    raise
            elif self._checkpoint is not None:  # let its files finish; its offsets stay uncommitted
                self._checkpoint.done.wait(timeout=60)
        finally:
            self.writer.close()
            self.consumer.close(autocommit=False)  # leaving the group calls the revoke callback: see _failed
            self.producer.close()


class _Checkpoint:
    """Steps 3-5 of one commit on their own thread, and the offsets they cover."""

    def __init__(self, offsets: dict, steps) -> None:
        self.offsets = offsets
        self.started = time.monotonic()
        self.done = threading.Event()
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(steps,), name="checkpoint", daemon=True).start()

    def _run(self, steps) -> None:
        try:
            steps()
        except BaseException as exc:  # re-raised on the polling thread by join()
            self._error = exc
        finally:
            self.done.set()

    def join(self) -> None:
        self.done.wait()
        if self._error is not None:
            raise self._error


class _Rebalance(AsyncConsumerRebalanceListener):
    """Kafka's rebalance callbacks, delegated to the runner.

    They run on kafka-python's IO thread during ``poll`` (the polling thread waits meanwhile), so
    they touch runner state safely but await the revoke's commit instead of blocking on it.
    """

    def __init__(self, runner: StreamRunner):
        self.runner = runner

    async def on_partitions_revoked(self, revoked):
        future = error = None
        try:
            future = self.runner.begin_revoke()
            if future is not None:
                await future
        except KafkaError as exc:  # the commit failed: it only costs a replay (other errors stop the process)
            error = exc
        self.runner.end_revoke(future is not None, error)

    async def on_partitions_lost(self, lost):
        self.runner.end_revoke(False, RuntimeError(f"membership lost with {len(lost)} partitions"))

    async def on_partitions_assigned(self, assigned):
        self.runner.on_assigned(sorted(assigned))


__all__ = ["StreamRunner", "RunStats", "TopicPartition"]
