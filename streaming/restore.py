"""Rebuilding the tiles of newly assigned partitions by replaying them from Kafka.

When the group hands this process partitions (at start-up, after a rebalance, after a
``kill -9`` of whoever held them), their entities' state (tiles, and the events they hold for
de-duplication) is rebuilt from the partitions themselves: every record from the start of the
state horizon up to the group's committed offset is decoded and folded into the engine again,
without any output. Everything before the committed offset was already written online and
logged by the previous owner (the commit order in ``streaming.checkpoint`` guarantees it), and
records after it are consumed normally, so each event is counted exactly once. A dedicated
consumer that never joins the group reads the range, as Kafka Streams' restore consumer does;
the group's own consumer stays where the group left it.

How far back: records whose Kafka timestamp is within the longest window (+ delay, the open
tile, the runner's ``grace_s`` and a day) of now, found with ``offsets_for_times``. Real-time
producers stamp records when the event happens, so this is the horizon; a replay of old data
(the simulator) is newer by its Kafka timestamps and is replayed whole, which is merely
conservative. Topic retention must cover the horizon.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

from kafka import KafkaConsumer, TopicPartition

from rtml_common.errors import RtmlError
from streaming.topology import Stream

log = logging.getLogger(__name__)


class RestoreError(RtmlError):
    """State could not be rebuilt in time (the process stops rather than serve partial windows)."""


@dataclass
class RestoreResult:
    records: int = 0
    partitions: int = 0
    seconds: float = 0.0


def replay_partitions(consumer: KafkaConsumer, tps: list[TopicPartition], streams: dict[str, Stream],
                      apply: Callable[[Stream, TopicPartition, object], None], horizon_s: float, timeout_s: float) -> RestoreResult:
    """Feed every record of ``tps`` between the horizon and the group's committed offset to ``apply``.

    ``consumer`` belongs to the group (``group_id`` set) but is only ``assign``-ed, so it reads the
    committed offsets without joining. ``apply(stream, topic_partition, record)`` folds one record.
    """
    started = time.monotonic()
    result = RestoreResult()
    tps = [tp for tp in tps if streams[tp.topic].stateful]
    if not tps:
        return result
    consumer.assign(tps)
    targets: dict[TopicPartition, int] = {}
    for tp in tps:
        committed = consumer.committed(tp)
        if committed:
            targets[tp] = committed
    if not targets:
        return result  # a new group: nothing was processed before
    since_ms = int((time.time() - horizon_s) * 1000)
    starts = consumer.offsets_for_times({tp: since_ms for tp in targets})
    begin = consumer.beginning_offsets(list(targets))
    for tp in list(targets):
        start = starts.get(tp).offset if starts.get(tp) is not None else targets[tp]
        start = max(start, begin[tp])
        if start >= targets[tp]:
            del targets[tp]
            continue
        consumer.seek(tp, start)
    consumer.pause(*[tp for tp in tps if tp not in targets])
    deadline = started + timeout_s
    pending = dict(targets)
    while pending:
        if time.monotonic() > deadline:
            raise RestoreError(f"restoring {sorted(map(str, pending))} took over {timeout_s:.0f}s; "
                               "raise RTML_RESTORE_TIMEOUT_S or lower topic retention")
        for tp, records in consumer.poll(timeout_ms=200, max_records=5000).items():
            stop_at = pending.get(tp)
            if stop_at is None:
                continue
            stream = streams[tp.topic]
            for rec in records:
                if rec.offset >= stop_at:
                    break
                apply(stream, tp, rec)
                result.records += 1
            if consumer.position(tp) >= stop_at:
                del pending[tp]
                consumer.pause(tp)
    result.partitions = len(targets)
    result.seconds = time.monotonic() - started
    return result


__all__ = ["replay_partitions", "RestoreError", "RestoreResult"]
