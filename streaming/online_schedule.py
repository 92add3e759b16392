"""When the poll loop hands changed tiles to the online writer (step 3 of ``streaming.checkpoint``).

The background writer (``streaming.online``) has at most one write in flight. The poll loop
starts a new one once the last is done and ``online_flush_s`` has passed since the last start,
with the packed tiles of every entity changed in between, so an entity touched many times is
written once. A checkpoint and a revoke hand over whatever is left, whenever they come.

Each write carries the Kafka timestamps of the records it covers: the freshness metric counts
from the oldest of them, and a ``WriteListener`` (the benchmark's) hears them all.
"""

from __future__ import annotations

from streaming import metrics
from streaming.engine import FeatureEngine
from streaming.metrics import RunStats
from streaming.online import OnlineWriter, WriteListener
from streaming.settings import StreamingSettings


class OnlineWriteScheduler:
    """Starts the online writes of the engine's changed tiles, spaced as the settings say.

    ``pending_timestamps`` holds the Kafka timestamps (ms) of records processed since the last
    write started; the poll loop appends to it, and a write takes it over.
    """

    def __init__(self, settings: StreamingSettings, store, engine: FeatureEngine, stats: RunStats,
                 listener: WriteListener | None = None):
        self.engine = engine
        self.stats = stats
        self.flush_s = settings.online_flush_s
        self.write_share = settings.online_write_share
        self.full_poll = settings.max_batch_records
        self._listener = listener
        self.writer = OnlineWriter(store, engine.aggregations, listener=self._on_write, on_written=self._count_rows,
                                   mode=settings.online_writer)
        self.pending_timestamps: list[int] = []
        self._last_start = 0.0

    def maybe_write(self, now: float, polled: int) -> None:
        """Start a write if anything is pending, the writer is free and the gap since the last start has passed."""
        if self.pending_timestamps and not self.writer.busy and now - self._last_start >= self._gap(polled):
            self._write(now)

    def write_pending(self, now: float) -> int:
        """Start a write of everything pending (waiting for the writer if busy); returns the ticket covering it."""
        if self.pending_timestamps:
            self._write(now)
        return self.writer.last_ticket

    def forget(self) -> None:
        """Drop what is pending (partitions were revoked: the engine's state is gone as well)."""
        self.pending_timestamps.clear()

    def wait(self, ticket: int | None = None) -> None:
        """Wait for write ``ticket`` (default: every write started); re-raises a failed write's error."""
        self.writer.wait(ticket)

    def close(self) -> None:
        """Stop the writer's thread (after the write in flight, if any)."""
        self.writer.close()

    def _gap(self, polled: int) -> float:
        """Least time between two write starts.

        Caught up, a write starts as soon as the last one is done (and ``online_flush_s`` has
        passed): freshness first. Catching up (the poll came back full), freshness is lost
        anyway, so writes keep to ``online_write_share`` of the time and coalesce more entities.
        """
        gap = self.flush_s
        if polled >= self.full_poll:
            gap = max(gap, self.writer.last_duration_s / self.write_share)
        return gap

    def _write(self, now: float) -> None:
        self._last_start = now
        drained = self.engine.drain_online_values()
        stamps, self.pending_timestamps = self.pending_timestamps, []
        self.writer.submit(drained, stamps)
        metrics.ENTITIES.set(self.engine.entity_count())

    def _on_write(self, done_at: float, stamps: list[int]) -> None:
        """A finished write (on the writer's thread): freshness from its oldest record, then the user's listener."""
        if stamps:
            metrics.FRESHNESS_SECONDS.observe(max(0.0, done_at - min(stamps) / 1000.0))
        if self._listener is not None:
            self._listener(done_at, stamps)

    def _count_rows(self, view: str, rows: int, seconds: float) -> None:
        metrics.ONLINE_ROWS.labels(view).inc(rows)
        self.stats.online_rows += rows


__all__ = ["OnlineWriteScheduler"]
