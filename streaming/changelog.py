"""The engine's state changelog: each entity's state, in chunks of event time, on a compacted Kafka topic.

A restarted or rebalanced engine restores the state of its partitions by reading their
changelog partitions (one record per entity and chunk of event time, ``RTML_STATE_CHUNK_DAYS`` days,
7 by default) instead of replaying weeks
of source topics. Kafka Streams and Quix Streams keep their state stores the same way.

* **Topic.** ``<prefix>rtml-<feature view>-changelog``, as many partitions as the aggregation's
  input topics (they are co-partitioned), ``cleanup.policy=compact,delete``: compaction keeps
  the newest record of each key, and ``retention.ms`` (the windows' horizon plus two days) drops
  chunks nobody rewrote for that long; their tiles are outside every window by then.
* **Records.** Key ``<entity>/<chunk>`` (chunk = event time // the chunk span), sent to the partition
  Kafka's default partitioner gives the entity's own key (``rtml_common.kafka.entity_key``), so
  an entity's chunks live in the partition number its events do. The value packs that chunk's
  remembered events and labels, its tiles, and the entity's running maxima (newest tile, newest
  event time, newest label time, last online stamp), which a restore merges by taking the max.
* **When.** The chunks changed since the last checkpoint are packed on the polling thread when a
  checkpoint starts and sent before the producer flush that precedes the offsets' commit, so
  the changelog always holds at least the state the committed offsets cover. A restore may thus
  find state newer than the committed offsets; the records after them are then replays, which
  the engine recognises by (id, event time) and skips.
"""

from __future__ import annotations

import struct
import sys
import time
from array import array
from bisect import bisect_left
from typing import Callable

from kafka import TopicPartition

from rtml_common.kafka import ensure_topics, entity_key
from streaming.repartition import partition_for
from streaming.windows import EntityState, _Timeline

DAY_US = 86_400_000_000
# Largest chunk record: an entity with more events than fit (about 500,000 in one chunk span) needs a shorter span.
MAX_CHUNK_BYTES = 8 << 20
_HEAD = struct.Struct("<4sIIIIqddd")  # magic, events, labels, tiles, row width, max tile, last time, known, written
_MAGIC = b"RTS1"
_SWAP = sys.byteorder != "little"


def changelog_topic(topic: Callable[[str], str], view: str) -> str:
    """The changelog topic of a feature view (``topic`` adds the configured prefix)."""
    return topic(f"rtml-{view}-changelog")


def _bytes(a: array) -> bytes:
    if _SWAP:
        a = array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


def _array(typecode: str, data: memoryview) -> array:
    a = array(typecode)
    a.frombytes(data)
    if _SWAP:
        a.byteswap()
    return a


def _span(times: array, lo: int, hi: int) -> tuple[int, int]:
    return bisect_left(times, lo), bisect_left(times, hi)


def pack_chunk(st: EntityState, chunk: int, tile_us: int, span_us: int) -> bytes:
    """One chunk (event times in ``[chunk * span_us, (chunk + 1) * span_us)``) of an entity's state."""
    lo_us, hi_us = chunk * span_us, (chunk + 1) * span_us
    e0, e1 = _span(st.events.times, lo_us, hi_us)
    labels = st.labels
    l0, l1 = _span(labels.times, lo_us, hi_us) if labels is not None else (0, 0)
    t0, t1 = _span(st.keys, -(-lo_us // tile_us), -(-hi_us // tile_us))  # tiles starting in the chunk
    w1 = len(st.rows) // len(st.keys) if st.keys else 0
    head = _HEAD.pack(_MAGIC, e1 - e0, l1 - l0, t1 - t0, w1, st.max_tile, st.last_time, st.known, st.written)
    parts = [head, _bytes(st.events.times[e0:e1]), _bytes(st.events.ids[e0:e1])]
    if labels is not None:
        parts += [_bytes(labels.times[l0:l1]), _bytes(labels.ids[l0:l1])]
    parts.append(_bytes(st.rows[t0 * w1:t1 * w1]))
    return b"".join(parts)


def merge_chunk(st: EntityState, chunk: bytes) -> None:
    """Add one packed chunk to ``st`` (an entity's chunks may come in any order; ``finish`` sorts).

    Each chunk must be merged once, from its newest record: chunks add up, they do not replace."""
    magic, ne, nl, nt, w1, max_tile, last_time, known, written = _HEAD.unpack_from(chunk)
    if magic != _MAGIC:
        raise ValueError(f"not a state changelog record (magic {magic!r})")
    view, pos = memoryview(chunk), _HEAD.size
    for timeline, n in ((st.events, ne), (None, nl)):
        if timeline is None:
            if not n:
                continue
            timeline = st.labels = st.labels if st.labels is not None else _Timeline()
        timeline.times.extend(_array("q", view[pos:pos + 8 * n]))
        timeline.ids.extend(_array("q", view[pos + 8 * n:pos + 16 * n]))
        pos += 16 * n
    rows = _array("d", view[pos:pos + 8 * nt * w1])
    st.rows.extend(rows)
    if nt:
        st.keys.extend(array("q", map(int, rows[::w1])))
    st.max_tile = max(st.max_tile, max_tile)
    st.last_time, st.known, st.written = max(st.last_time, last_time), max(st.known, known), max(st.written, written)


def finish(st: EntityState) -> None:
    """Sort a restored state's arrays by time and tile (its chunks arrived in any order)."""
    for timeline in (st.events, st.labels):
        if timeline is not None and any(a > b for a, b in zip(timeline.times, timeline.times[1:])):
            pairs = sorted(zip(timeline.times, timeline.ids))
            timeline.times, timeline.ids = array("q", [t for t, _ in pairs]), array("q", [i for _, i in pairs])
    keys = st.keys
    if any(a > b for a, b in zip(keys, keys[1:])):
        w1 = len(st.rows) // len(keys)
        order = sorted(range(len(keys)), key=keys.__getitem__)
        st.keys = array("q", [keys[i] for i in order])
        st.rows = array("d", [v for i in order for v in st.rows[i * w1:(i + 1) * w1]])


def chunk_key(entity, chunk: int) -> bytes:
    """The record key of an entity's chunk."""
    return f"{entity}/{chunk}".encode()


def parse_key(key: bytes, key_type: str):
    """(entity, chunk) of a chunk's record key; ``key_type`` is the aggregation's (``int`` or ``str``)."""
    entity, _, chunk = key.decode().rpartition("/")
    return (int(entity) if key_type == "int" else entity), int(chunk)


def read_partitions(consumer, tps: list[TopicPartition], on_record: Callable[[bytes, bytes | None], None],
                    timeout_s: float) -> int:
    """Feed every record of ``tps`` (from the start to their end offsets now) to ``on_record(key, value)``."""
    if not tps:
        return 0
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ends = consumer.end_offsets(tps)
    todo = {tp for tp in tps if ends[tp] > consumer.position(tp)}
    deadline, n = time.monotonic() + timeout_s, 0
    while todo:
        if time.monotonic() > deadline:
            raise TimeoutError(f"state changelog {sorted(str(tp) for tp in todo)} not read within {timeout_s:.0f}s")
        for tp, records in consumer.poll(timeout_ms=200, max_records=20_000).items():
            for rec in records:
                on_record(rec.key, rec.value)
            n += len(records)
            if consumer.position(tp) >= ends[tp]:
                todo.discard(tp)
    return n


class StateChangelog:
    """The engine's changelog topics: ``take`` packs the chunks changed since the last checkpoint (polling
    thread), ``send`` produces them (checkpoint thread, before the producer flush), ``restore`` reads an
    assignment's partitions back into the engine.

    ``partitions``: the partition count of each feature view's input topics (co-partitioned).
    """

    def __init__(self, settings, engine, producer, partitions: dict[str, int]):
        self.engine, self.producer, self.partitions = engine, producer, partitions
        self.key_types = {a.feature_view: a.key_type for a in engine.aggregations}
        self.topics = {view: changelog_topic(settings.topic, view) for view in partitions}
        retention_s = max(a.horizon.total_seconds() for a in engine.aggregations) + settings.grace_s + 2 * 86400
        for view, topic in self.topics.items():
            ensure_topics(settings, [topic], partitions=partitions[view],
                          configs={"cleanup.policy": "compact,delete", "retention.ms": str(int(retention_s * 1000)),
                                   "max.message.bytes": str(MAX_CHUNK_BYTES)})

    def take(self) -> list[tuple[str, int, bytes, bytes]]:
        """(topic, partition, key, value) of every chunk changed since the last call."""
        out = []
        for view, chunks in self.engine.take_changes().items():
            topic, n = self.topics[view], self.partitions[view]
            out += [(topic, partition_for(entity_key(e), n), chunk_key(e, c), value) for e, c, value in chunks]
        return out

    def send(self, records: list[tuple[str, int, bytes, bytes]]) -> None:
        """Produce taken chunks (made durable by the caller's producer flush)."""
        send = self.producer.send
        for topic, partition, key, value in records:
            send(topic, key=key, value=value, partition=partition)

    def restore(self, consumer, partitions: dict[str, list[int]], timeout_s: float) -> tuple[int, set[tuple[str, int]]]:
        """Read the changelog partitions of each view into the engine; returns the records read and the
        (view, partition) pairs that held nothing (their state must come from a replay)."""
        records, empty = 0, set()
        for view, parts in partitions.items():
            key_type = self.key_types[view]
            for p in parts:
                # Compaction never touches the active segment: a key can still have several records, and only
                # its newest (the last read) is the chunk. One partition's newest values at a time in memory.
                newest: dict[bytes, bytes | None] = {}
                n = read_partitions(consumer, [TopicPartition(self.topics[view], p)], newest.__setitem__, timeout_s)
                records += n
                if not n:
                    empty.add((view, p))
                for key, value in newest.items():
                    if value is not None:  # a tombstone: nothing to merge
                        self.engine.restore_chunk(view, parse_key(key, key_type)[0], value)
        self.engine.finish_restore()
        return records, empty
