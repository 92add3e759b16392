"""The Kafka edge of the feature engine: poll, validate, apply, write, commit.

Commit order (this is the at-least-once contract; see ``step`` and ``commit``):
  1. state   - every polled record is validated and folded into the in-memory window state
               (``FeatureEngine.apply``); replays are no-ops because state knows events by (id, event time);
  2. online  - the latest features of every entity touched since the last write are written to
               the Feast online store by the background writer (``streaming.online``): at most one
               write in flight, a new one once the last is done and ``online_flush_s`` has passed
               (spaced to ``online_write_share`` of the time while catching up), so an entity
               touched many times in between is written once. Writes are idempotent upserts, so
               they may run ahead of the commit;
  3. offline - raw events and per-event feature rows are appended to the offline log, as new
               files, every ``offline_flush_s`` seconds or ``offline_flush_rows`` rows;
  4. produce - the dead-letter producer is flushed;
  5. offsets - only then are consumer offsets committed.
A commit first drains every touched entity into a last online write and waits until the writer
has stored it, so committed offsets never run ahead of the online store. A crash between 2 and
5 replays at most one flush interval; state restored from the offline log plus id
de-duplication makes the replay converge to the same online values.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import pandas as pd
from kafka import TopicPartition

from feature_repo.offline_log import read_table
from feature_repo.sources import SOURCES
from feature_repo.store import open_store
from rtml_common.kafka import dead_letter, dlq_topic, ensure_topics, make_consumer, make_producer
from streaming import metrics
from streaming.engine import FeatureEngine
from streaming.offline import EpochOfflineLog
from streaming.online import OnlineWriter, WriteListener
from streaming.settings import StreamingSettings
from streaming.validation import InvalidEvent, decoder_for

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    consumed: int = 0
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
        self.sources = {settings.topic(s.topic): s for s in SOURCES}
        self._decoders = {t: decoder_for(s) for t, s in self.sources.items()}
        ensure_topics(settings, list(self.sources) + [dlq_topic(t) for t in self.sources], partitions=settings.partitions)
        self.engine = FeatureEngine(grace_s=settings.grace_s)
        self.store = store or open_store(settings)
        self.offline = EpochOfflineLog(settings.offline_path, self.engine.timestamp_columns)
        self._user_listener = write_listener
        self.writer = OnlineWriter(self.store, self.engine.aggregations, listener=self._on_online_write,
                                   on_written=self._count_online_rows)
        self.producer = make_producer(settings)
        self.consumer = make_consumer(settings, list(self.sources), settings.group_id,
                                      max_poll_records=settings.max_batch_records, check_crcs=settings.check_crcs)
        self.stats = RunStats()
        self._last_flush = time.monotonic()
        self._last_online = 0.0
        self._last_lag = 0.0
        self._watermarks: dict = {}  # TopicPartition -> stream time (max event time seen)
        self._uncommitted = False
        self._record_ts: list[int] = []  # Kafka timestamps of records not yet covered by an online write

    # -- start-up ---------------------------------------------------------------------------
    def restore(self) -> int:
        """Rebuild window state from the raw events in the offline log (within the horizon)."""
        horizon = max(a.horizon for a in self.engine.aggregations) + pd.Timedelta(seconds=self.settings.grace_s)
        restored = 0
        stateful = {inp.source for agg in self.engine.aggregations for inp in agg.inputs}
        for source in SOURCES:
            if source.name not in stateful:
                continue  # logged only (e.g. predictions): no window state to rebuild
            latest = read_table(self.settings.offline_path, source.name, key=None)
            if latest.empty:
                continue
            cutoff = latest["event_timestamp"].max() - horizon - pd.Timedelta(days=8)
            df = latest[latest["event_timestamp"] >= cutoff].sort_values(source.event_time)
            for rec in df.to_dict("records"):
                for f in source.fields:
                    if f.type == "timestamp" and rec.get(f.name) is not None and not pd.isna(rec[f.name]):
                        rec[f.name] = pd.Timestamp(rec[f.name]).timestamp()
                rec.pop("event_timestamp", None)
                self.engine.apply(source.name, rec)
                restored += 1
        self.engine.drain_online_values()  # already in the online store
        log.info("restored window state from %d logged events", restored)
        return restored

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
        finally:
            self.close()
        return self.stats

    def step(self) -> int:
        """One poll cycle; returns the number of records polled."""
        polled = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_batch_records)
        t0 = time.perf_counter()
        n = 0
        apply, rows, stamps = self.engine.apply, self.offline.rows, self._record_ts
        grace = self.settings.grace_s
        for tp, records in polled.items():
            source = self.sources[tp.topic]
            decode, name, time_field = self._decoders[tp.topic], source.name, source.event_time
            # Stream time per partition (as Kafka Streams keeps it): producers write a key's
            # events in order, so only an event older than the partition's latest minus the
            # grace is late; it goes to the DLQ instead of silently rewriting closed windows.
            watermark = self._watermarks.get(tp, float("-inf"))
            for rec in records:
                stamps.append(rec.timestamp)
                try:
                    event = decode(rec.value)
                except InvalidEvent as exc:
                    self._dead_letter(source, rec, exc)
                    continue
                if event is None:
                    metrics.EVENTS_FILTERED.labels(tp.topic).inc()
                    self.stats.filtered += 1
                    continue
                ts = event[time_field]
                if ts < watermark - grace:
                    self._dead_letter(source, rec, InvalidEvent(
                        "late", f"event time {ts:.0f} is {watermark - ts:.0f}s behind partition {tp.partition}'s stream time "
                                f"(grace {grace:.0f}s)"))
                    continue
                if ts > watermark:
                    watermark = ts
                apply(name, event, rows)
            self._watermarks[tp] = watermark
            n += len(records)
            metrics.EVENTS_CONSUMED.labels(tp.topic).inc(len(records))
        self.stats.consumed += n
        if n:
            self._uncommitted = True
        now = time.monotonic()
        if stamps and not self.writer.busy and now - self._last_online >= self._online_gap(n):
            self._write_online(now)
        if self._uncommitted and (now - self._last_flush >= self.settings.offline_flush_s
                                  or self.offline.pending >= self.settings.offline_flush_rows):
            self.commit()
        if n:
            metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)
        if now - self._last_lag > 5:
            self._record_lag()
        return n

    def _dead_letter(self, source, rec, exc: InvalidEvent) -> None:
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
        """Hand every touched entity's latest features to the writer (step 2 of the commit order)."""
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
        """Steps 2-5 now: write every touched entity online, flush the offline log and the producer, commit offsets."""
        # Step 2 completed for everything polled so far, then steps 3-5: offline, produce, offsets.
        if self._record_ts:
            self._write_online(time.monotonic())
        self.writer.wait()
        metrics.OFFLINE_ROWS.inc(self.offline.flush())
        self.producer.flush()
        self.consumer.commit()
        self._uncommitted = False
        self._last_flush = time.monotonic()
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

    def close(self) -> None:
        try:
            if self._uncommitted:
                self.commit()
        finally:
            self.writer.close()
            self.consumer.close()
            self.producer.close()


__all__ = ["StreamRunner", "RunStats", "TopicPartition"]
