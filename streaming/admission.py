"""Admission: what becomes of each record of a source topic.

A source record is decoded by its source's validators (``streaming.validation``): a whole poll at
once in the poll loop, one record at a time while restoring. The result decides its fate:
  - an event is applied (folded into the tiles, logged raw, re-keyed), unless its event time is
    more than ``max_future_skew_s`` ahead of its record's Kafka timestamp (when it was produced;
    a restore replaying the record decides the same): then it is dead-lettered as
    ``future`` (a wrong clock or a typo such as year 9999), so it can neither poison its tiles
    nor move anything for the events after it;
  - an ``InvalidEvent`` is dead-lettered to ``<topic>.dlq`` with its reason;
  - ``None`` (the source's declared filter dropped it) is counted as filtered.
Dead letters are counted by reason category (``RunStats.by_reason`` and the DLQ metric); they are
sent asynchronously and made durable by the next checkpoint's producer flush (``streaming.checkpoint``).

There is no stream-time lateness: tiles commute, so an event that arrives after newer ones is
applied exactly as if it had come in order, and which events are accepted does not depend on
arrival order (training reads the same raw log). Repartition topics never come here: they carry
events their source accepted.
"""

from __future__ import annotations

import time

from rtml_common.kafka import dead_letter
from streaming import metrics
from streaming.metrics import RunStats
from streaming.topology import Stream
from streaming.validation import InvalidEvent, batch_decoder_for, decoder_for


class Admission:
    """Decodes the records of source topics, and dead-letters or counts those that yield no applicable event."""

    def __init__(self, topology: dict[str, Stream], producer, stats: RunStats, max_future_skew_s: float):
        sources = {topic: stream.source for topic, stream in topology.items() if stream.is_source}
        self._decoders = {topic: decoder_for(source) for topic, source in sources.items()}
        self._batch_decoders = {topic: batch_decoder_for(source) for topic, source in sources.items()}
        self.producer = producer
        self.stats = stats
        self.max_future_skew_s = max_future_skew_s

    def decode_batch(self, topic: str, records: list) -> list:
        """One result per record of a source ``topic``: the event, None (filtered) or its ``InvalidEvent``."""
        return self._batch_decoders[topic]([rec.value for rec in records])

    def admit(self, rec, event, time_field: str, restoring: bool = False) -> bool:
        """Whether a decoded record (an event, None = filtered, or its ``InvalidEvent``) is applied.

        A rejected record is dead-lettered or counted as filtered, unless ``restoring``: the
        decision was acted on when the record was first processed.
        """
        if event is None or isinstance(event, InvalidEvent):
            if not restoring:
                self._reject(rec, event)
            return False
        # The clock is the record's own Kafka timestamp (when it was produced), not this engine's: a
        # restore that replays the record later decides exactly as the first processing did.
        sent = rec.timestamp / 1000.0 if rec.timestamp is not None and rec.timestamp > 0 else time.time()
        ahead = event[time_field] - sent
        if ahead > self.max_future_skew_s:
            if not restoring:
                self._dead_letter(rec, InvalidEvent(
                    "future", f"event time {event[time_field]:.0f} is {ahead:.0f}s ahead of the time the record "
                              f"was produced (allowed skew {self.max_future_skew_s:.0f}s)"))
            return False
        return True

    def accept(self, stream: Stream, rec, restoring: bool = False) -> dict | None:
        """The validated event of one record of a source ``stream``, or None when it is not applied (see ``admit``)."""
        try:
            event = self._decoders[stream.topic](rec.value)
        except InvalidEvent as exc:
            event = exc
        return event if self.admit(rec, event, stream.source.event_time, restoring) else None

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


__all__ = ["Admission"]
