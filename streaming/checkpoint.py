"""Checkpoints: consumer offsets are committed only once everything they cover is stored.

Commit order (this is the at-least-once contract):
  1. state   - every polled record is validated and folded into the in-memory tiles
               (``FeatureEngine.apply``, in ``StreamRunner.step``); replays are no-ops because state
               knows events by (id, event time);
  2. produce - rejected events go to ``<topic>.dlq`` (``streaming.admission``); accepted events of a
               source that feeds an aggregation keyed differently are re-keyed into its repartition
               topic (``streaming.repartition``); both sends are asynchronous until step 5;
  3. online  - the packed tiles of every entity changed since the last write are written to
               the Feast online store by the background writer (``streaming.online``): at most one
               write in flight, a new one once the last is done and ``online_flush_s`` has passed
               (spaced to ``online_write_share`` of the time while catching up;
               ``streaming.online_schedule``), so an entity touched many times in between is
               written once. Writes are idempotent upserts, so they may run ahead of the commit;
  4. offline - raw validated events are appended to the offline log (training sets are computed
               from it), as new files, every ``offline_flush_s`` seconds or ``offline_flush_rows`` rows;
  5. flush   - the producer is flushed (dead letters and repartitioned events are durable);
  6. offsets - only then are consumer offsets committed.
A commit is a checkpoint (``Checkpointer``): the polling thread drains every touched entity into
a last online write, snapshots the consumer's positions and takes the offline buffer; a
checkpoint thread waits for that online write, writes the offline files and flushes the producer
(steps 3-5) while polling goes on; once it is done, the polling thread commits the snapshot
(step 6). So committed offsets never run ahead of the online store, the offline log or the
repartition topics, and a commit does not stall the poll loop. One checkpoint is in flight at a time.
Before partitions are revoked (``streaming.rebalance``), steps 3-5 run at once for everything
processed and the offsets are committed through an awaited ``commit_async``.
A failure anywhere (a store down, a bad write) stops the process with no further commit, not
even the one leaving the group would make, so the next owner replays what was not stored.
A crash between 3 and 6 replays at most one flush interval: state rebuilt from Kafka up to the
committed offsets (``streaming.restore``) plus id de-duplication makes the replay converge to
the same online tiles (the offline log may hold a replayed event twice; its readers
de-duplicate by event id).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from kafka.structs import OffsetAndMetadata

from streaming import metrics
from streaming.metrics import RunStats
from streaming.offline import EpochOfflineLog
from streaming.changelog import StateChangelog
from streaming.online_schedule import OnlineWriteScheduler
from streaming.settings import StreamingSettings

log = logging.getLogger(__name__)


class Checkpointer:
    """Runs the commit order's steps 3-6 for what the poll loop processed, one checkpoint at a time.

    The poll loop sets ``uncommitted`` when it processes records and calls ``tick`` after each
    poll; ``commit`` checkpoints everything now. Every method runs on the polling thread, or in
    a rebalance callback while the polling thread waits in ``poll``.
    """

    def __init__(self, settings: StreamingSettings, consumer, producer, online: OnlineWriteScheduler,
                 offline: EpochOfflineLog, stats: RunStats, changelog: StateChangelog | None = None):
        self.consumer = consumer
        self.changelog = changelog
        self.producer = producer
        self.online = online
        self.offline = offline
        self.stats = stats
        self.flush_s = settings.offline_flush_s
        self.flush_rows = settings.offline_flush_rows
        self.uncommitted = False  # records processed after the last checkpoint started
        self.failed = False  # set when closing after an error: no commit may follow
        self._in_flight: _Checkpoint | None = None
        self._last_start = time.monotonic()

    def tick(self, now: float) -> None:
        """Commit a finished checkpoint; start one when ``offline_flush_s`` or ``offline_flush_rows`` is reached."""
        if self._in_flight is not None and self._in_flight.done.is_set():
            self._finish()
        if self.uncommitted and self._in_flight is None and (
                now - self._last_start >= self.flush_s or self.offline.pending >= self.flush_rows):
            self._start(now)

    def commit(self) -> None:
        """Steps 3-6 now for everything processed so far: returns once the offsets are committed."""
        if self._in_flight is not None:
            self._finish()
        if self.uncommitted:
            self._start(time.monotonic())
            self._finish()

    def commit_before_revoke(self):
        """Steps 3-5 for everything processed, then the offsets' commit request (a future), or None.

        Runs in the revoke callback on kafka-python's IO thread: a blocking commit there would
        fail the poll, so the caller awaits the returned future instead.
        """
        if self.failed:  # closing after a failure: nothing more is committed
            return None
        pending = self.uncommitted or self._in_flight is not None
        if self._in_flight is not None:  # its offsets are covered by the commit below
            checkpoint, self._in_flight = self._in_flight, None
            checkpoint.join()
        if not pending:
            return None
        self._store(self.online.write_pending(time.monotonic()), self.offline.take(), self._take_chunks())
        return self.consumer.commit_async()

    def after_revoke(self, committed: bool, error: BaseException | None = None) -> None:
        """Count the revoke's commit; a failed one means a replay, once the online writes in flight are done."""
        if error is not None:  # the group moved on already: the next owner replays from the last commit
            log.warning("commit before rebalance failed, records since the last commit will be replayed: %s", error)
            self.online.wait()
        elif committed:
            self.stats.commits += 1
        self.uncommitted = False
        self._last_start = time.monotonic()

    def conclude(self, commit: bool) -> None:
        """The last checkpoint before the clients close: everything (``commit``), or none after a failure.

        After a failure a checkpoint in flight may finish its files, but its offsets stay
        uncommitted, and so does everything else: ``failed`` also stops the commit that leaving
        the group would make (``commit_before_revoke``).
        """
        self.failed = self.failed or not commit
        if commit:
            try:
                self.commit()
            except BaseException:
                self.failed = True
                raise
        elif self._in_flight is not None:
            self._in_flight.done.wait(timeout=60)

    def _start(self, now: float) -> None:
        """Step 3's last online write, the offsets snapshot and the offline buffer; steps 3-5 go to a thread."""
        ticket = self.online.write_pending(now)
        offsets = {tp: OffsetAndMetadata(self.consumer.position(tp), "", -1) for tp in self.consumer.assignment()}
        tables = self.offline.take()
        chunks = self._take_chunks()
        self.uncommitted = False
        self._last_start = now
        self._in_flight = _Checkpoint(offsets, lambda: self._store(ticket, tables, chunks))

    def _take_chunks(self) -> list:
        """The state changelog's chunks changed since the last checkpoint, packed now (polling thread: the
        state does not change under the packing)."""
        return self.changelog.take() if self.changelog is not None else []

    def _store(self, ticket: int, tables: dict[str, list[dict]], chunks: list) -> None:
        """Steps 3-5 for what a checkpoint covers: the online write ``ticket``, the offline ``tables``, the
        state changelog ``chunks``, the producer."""
        self.online.wait(ticket)  # 3: the online write that covers the snapshot
        metrics.OFFLINE_ROWS.inc(self.offline.write(tables))  # 4
        if chunks:
            self.changelog.send(chunks)  # 5 (sent): the state the offsets cover, for the next owner's restore
        self.producer.flush()  # 5: dead letters, re-keyed events and changelog chunks

    def _finish(self) -> None:
        """Step 6: commit the snapshot once steps 3-5 are done (their error stops the process uncommitted)."""
        checkpoint, self._in_flight = self._in_flight, None
        checkpoint.join()
        self.consumer.commit(checkpoint.offsets)
        metrics.CHECKPOINT_SECONDS.observe(time.monotonic() - checkpoint.started)
        self.stats.commits += 1


class _Checkpoint:
    """Steps 3-5 of one commit on their own thread, and the offsets they cover."""

    def __init__(self, offsets: dict, steps: Callable[[], None]) -> None:
        self.offsets = offsets
        self.started = time.monotonic()
        self.done = threading.Event()
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(steps,), name="checkpoint", daemon=True).start()

    def _run(self, steps: Callable[[], None]) -> None:
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


__all__ = ["Checkpointer"]
