"""The Kafka edge of the feature engine: poll, validate, apply, write, commit.

Commit order, per cycle (this is the at-least-once contract; see ``_commit``):
  1. state   - every polled record is validated and folded into the in-memory window state
               (``FeatureEngine.apply``); replays are no-ops because state is keyed by event id;
  2. online  - the latest features of every touched entity are written to the Feast online
               store, every batch (an idempotent upsert, so it can run ahead of the commit);
  3. offline - raw events and per-event feature rows are appended to the offline log, as
               new files, every ``offline_flush_s`` seconds;
  4. produce - the dead-letter producer is flushed;
  5. offsets - only then are consumer offsets committed.
A crash between 2 and 5 replays at most one flush interval; state restored from the offline
log plus id de-duplication makes the replay converge to the same online values.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import pandas as pd
from kafka import TopicPartition

from feature_repo.offline_log import OfflineLog, read_table
from feature_repo.sources import SOURCES
from feature_repo.store import open_store
from rtml_common.kafka import dead_letter, dlq_topic, ensure_topics, make_consumer, make_producer
from streaming import metrics
from streaming.engine import FeatureEngine
from streaming.settings import StreamingSettings
from streaming.validation import InvalidEvent, decode_event

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
    """One engine process: a member of the consumer group over every declared source topic."""

    def __init__(self, settings: StreamingSettings, store=None):
        self.settings = settings
        self.sources = {s.topic: s for s in SOURCES}
        ensure_topics(settings, list(self.sources) + [dlq_topic(t) for t in self.sources], partitions=settings.partitions)
        self.engine = FeatureEngine(grace_s=settings.grace_s)
        self.store = store or open_store(settings)
        self.offline = OfflineLog(settings.offline_path)
        self.producer = make_producer(settings)
        self.consumer = make_consumer(settings, list(self.sources), settings.group_id,
                                      max_poll_records=settings.max_batch_records)
        self.stats = RunStats()
        self._last_flush = time.monotonic()
        self._last_lag = 0.0
        self._uncommitted = False

    # -- start-up ---------------------------------------------------------------------------
    def restore(self) -> int:
        """Rebuild window state from the raw events in the offline log (within the horizon)."""
        horizon = max(a.horizon for a in self.engine.aggregations) + pd.Timedelta(seconds=self.settings.grace_s)
        restored = 0
        for source in SOURCES:
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
        self.engine.drain_online()  # already in the online store
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
        oldest_ts_ms = None
        for tp, records in polled.items():
            source = self.sources[tp.topic]
            for rec in records:
                n += 1
                oldest_ts_ms = rec.timestamp if oldest_ts_ms is None else min(oldest_ts_ms, rec.timestamp)
                self._handle(source, rec)
            metrics.EVENTS_CONSUMED.labels(tp.topic).inc(len(records))
        self.stats.consumed += n
        if n:
            self._uncommitted = True
            self._write_online(oldest_ts_ms)
        if self._uncommitted and (time.monotonic() - self._last_flush >= self.settings.offline_flush_s
                                  or self.offline.pending >= self.settings.offline_flush_rows):
            self._commit()
        if n:
            metrics.BATCH_SECONDS.observe(time.perf_counter() - t0)
        if time.monotonic() - self._last_lag > 5:
            self._record_lag()
        return n

    def _handle(self, source, rec) -> None:
        try:
            event = decode_event(source, rec.value)
        except InvalidEvent as exc:
            dead_letter(self.producer, source.topic, rec.value, rec.key, exc.reason)
            metrics.EVENTS_DLQ.labels(source.topic, exc.category).inc()
            self.stats.dead_lettered += 1
            self.stats.by_reason[exc.category] = self.stats.by_reason.get(exc.category, 0) + 1
            return
        if event is None:
            metrics.EVENTS_FILTERED.labels(source.topic).inc()
            self.stats.filtered += 1
            return
        for table, rows in self.engine.apply(source.name, event).items():
            self.offline.extend(table, rows)

    def _write_online(self, oldest_ts_ms: int | None) -> None:
        for view, rows in self.engine.drain_online().items():
            df = pd.DataFrame(rows)
            for col in df.columns:
                if "_nb_tx_" in col:
                    df[col] = df[col].astype("int64")
            self.store.write_to_online_store(view, df)
            metrics.ONLINE_ROWS.labels(view).inc(len(df))
            self.stats.online_rows += len(df)
        if oldest_ts_ms is not None:
            metrics.FRESHNESS_SECONDS.observe(max(0.0, time.time() - oldest_ts_ms / 1000.0))
        metrics.ENTITIES.set(self.engine.entity_count())

    def _commit(self) -> None:
        # Steps 3-5 of the commit order in the module docstring: offline, produce, offsets.
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
                self._commit()
        finally:
            self.consumer.close()
            self.producer.close()


__all__ = ["StreamRunner", "RunStats", "TopicPartition"]
