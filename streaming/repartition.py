"""Re-keying accepted events into a repartition topic, a batch of events per Kafka record.

kafka-python spends tens of microseconds of pure Python on every record it produces and on every
record it fetches; one record per re-keyed event would cost more than the windows themselves.
So each poll's accepted events are grouped by target partition and sent as one record per
partition (chunked to stay far below the broker's 1 MB record limit). The target partition is
the one Kafka's default partitioner gives the event's key (murmur2 of the decimal id, the
``rtml_common.kafka.entity_key`` convention), so a batch lands in the partition its entities'
other topics use: the topology's co-partitioning holds per event, not just per record.

Record layout (value, JSON via orjson): ``[[kafka timestamps ms...], [events...]]`` with a
``rtml-format: events-v1`` header. Events were validated at their source, so they travel as
the decoded dicts (times as epoch seconds) and are not validated again; the timestamps are the
source records', so freshness keeps counting from the original produce.

A record whose events the sending process applied at their source already (the runner's
repartition shortcut, ``streaming.runner``) also carries ``rtml-applied-by: <token>/<events>``.
The token names the sender's current assignment (``Forwards``); while that assignment lasts, the
same process consumes the copy and knows from the header alone that every event in it is a
replay, so it skips the record without decoding it. Anyone else (another process, the same one
after a rebalance, a restore) applies the events as usual, and replays stay no-ops there.
"""

from __future__ import annotations

import uuid

import orjson
from kafka.partitioner.default import murmur2

from rtml_common.errors import RtmlError
from rtml_common.kafka import entity_key
from streaming.topology import Forward, Stream

FORMAT_HEADER = ("rtml-format", b"events-v1")
APPLIED_HEADER = "rtml-applied-by"
MAX_EVENTS_PER_RECORD = 2000
_PARTITION_CACHE_LIMIT = 2_000_000


class RepartitionFormatError(RtmlError):
    """A record on a repartition topic that this engine did not write."""


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed record (Java and kafka-python agree)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class Rekeyer:
    """Buffers one poll's accepted events by target partition of one repartition topic."""

    def __init__(self, forward: Forward, partitions: int):
        self.topic, self.key_field, self.partitions = forward.topic, forward.key_field, partitions
        self._buffers: dict[int, tuple[list[int], list[dict]]] = {}
        self._partition_of: dict = {}  # entity id -> partition: murmur2 in Python costs more than a lookup

    def add(self, event: dict, timestamp_ms: int) -> int:
        """Buffer ``event`` for its target partition, which it returns."""
        entity = event[self.key_field]
        p = self._partition_of.get(entity)
        if p is None:
            if len(self._partition_of) > _PARTITION_CACHE_LIMIT:
                self._partition_of.clear()
            p = self._partition_of[entity] = partition_for(entity_key(entity), self.partitions)
        buf = self._buffers.get(p)
        if buf is None:
            buf = self._buffers[p] = ([], [])
        buf[0].append(timestamp_ms)
        buf[1].append(event)
        return p

    def send(self, producer, applied: frozenset[int] | set[int] = frozenset(), token: bytes = b"") -> int:
        """Send the buffered events (asynchronously; the commit flushes the producer) and return how many.

        ``applied``: the partitions whose events the caller applied already, marked with ``token``.
        """
        sent = 0
        for p, (stamps, events) in self._buffers.items():
            for i in range(0, len(events), MAX_EVENTS_PER_RECORD):
                chunk_ts, chunk = stamps[i:i + MAX_EVENTS_PER_RECORD], events[i:i + MAX_EVENTS_PER_RECORD]
                headers = [FORMAT_HEADER]
                if p in applied:
                    headers.append((APPLIED_HEADER, b"%s/%d" % (token, len(chunk))))
                producer.send(self.topic, value=orjson.dumps([chunk_ts, chunk]), partition=p,
                              timestamp_ms=min(chunk_ts), headers=headers)
            sent += len(events)
        self._buffers.clear()
        return sent


class Forwards:
    """The re-keyers of a topology's repartition topics, and which of their partitions this process owns.

    ``targets[source topic]`` lists, per forward of that source, its ``Rekeyer``, the set of the
    repartition topic's partitions this process owns (updated in place by ``assign`` and
    ``revoke``) and the engine's stream name of the repartition topic. ``token`` names the current
    assignment in the ``rtml-applied-by`` header (empty while none, or without the shortcut).
    """

    def __init__(self, topology: dict[str, Stream], partition_counts: dict[str, int]):
        self.rekeyers = {f.topic: Rekeyer(f, partition_counts[f.topic]) for st in topology.values() for f in st.forwards}
        self.owned: dict[str, set[int]] = {topic: set() for topic in self.rekeyers}
        self.targets: dict[str, list[tuple[Rekeyer, set[int], str]]] = {
            topic: [(self.rekeyers[f.topic], self.owned[f.topic], topology[f.topic].name) for f in st.forwards]
            for topic, st in topology.items() if st.is_source}
        self.token = b""

    def assign(self, assigned) -> None:
        """Own the assigned partitions of repartition topics, under a new token (after a revoke cleared the last)."""
        self.token = uuid.uuid4().hex.encode()
        for tp in assigned:
            if tp.topic in self.owned:
                self.owned[tp.topic].add(tp.partition)

    def revoke(self) -> None:
        """Own nothing: a copy applied at its source under the old token is applied again, a no-op."""
        for owned in self.owned.values():
            owned.clear()
        self.token = b""


def applied_by(headers, token: bytes) -> int:
    """How many events of a repartition record ``token``'s holder applied at their source: all or 0."""
    for name, value in headers or ():
        if name == APPLIED_HEADER:
            owner, _, count = value.rpartition(b"/")
            return int(count) if owner == token and token else 0
    return 0


def unpack(value: bytes) -> tuple[list[int], list[dict]]:
    """The (timestamps, events) of one repartition record."""
    try:
        stamps, events = orjson.loads(value)
    except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
        raise RepartitionFormatError(f"not a repartition record of this engine: {exc}") from None
    if len(stamps) != len(events):
        raise RepartitionFormatError(f"repartition record with {len(stamps)} timestamps for {len(events)} events")
    return stamps, events
