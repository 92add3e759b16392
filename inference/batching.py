"""Dynamic micro-batching: concurrent requests share one call of a batch function.

Requests submit arrays of rows; the batcher concatenates what is pending, calls the batch
function once and hands each caller its slice; a batch never exceeds ``max_batch_size`` rows
(a larger request runs alone).

Two modes:
- ``max_wait_s = 0`` (adaptive, the default): an idle batcher runs a request at once, with no
  added latency; requests arriving while a call is in flight wait and go together in the next
  call, so batches grow with load by themselves.
- ``max_wait_s > 0``: a batch is flushed when full or ``max_wait_s`` after its first request.
"""

from __future__ import annotations

import asyncio
from typing import Awaitable, Callable

import numpy as np

BatchFn = Callable[[np.ndarray], Awaitable[np.ndarray]]


class MicroBatcher:
    """Merge concurrent ``submit`` calls into calls of ``fn`` (rows along axis 0 in, rows out)."""

    def __init__(self, fn: BatchFn, max_batch_size: int, max_wait_s: float = 0.0, on_batch: Callable[[int], None] | None = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._fn = fn
        self._max_rows = max_batch_size
        self._max_wait_s = max_wait_s
        self._on_batch = on_batch
        self._pending: list[tuple[np.ndarray, asyncio.Future]] = []
        self._pending_rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._in_flight = 0

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """The batch function's output rows for ``rows``."""
        adaptive = self._max_wait_s <= 0
        if adaptive and not self._in_flight and not self._pending:
            return await self._call(rows)  # idle: no queueing, no extra event-loop turns
        fut = asyncio.get_running_loop().create_future()
        if self._pending and self._pending_rows + len(rows) > self._max_rows:
            self._flush()
        self._pending.append((rows, fut))
        self._pending_rows += len(rows)
        if self._pending_rows >= self._max_rows or (adaptive and not self._in_flight):
            self._flush()
        elif not adaptive and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_wait_s, self._flush)
        return await fut

    async def _call(self, rows: np.ndarray, reserved: bool = False) -> np.ndarray:
        if not reserved:
            self._in_flight += 1
        try:
            out = await self._fn(rows)
        finally:
            self._in_flight -= 1
            if self._pending and not self._in_flight and self._max_wait_s <= 0:
                self._flush()  # what queued up meanwhile goes next, together
        if self._on_batch is not None:
            self._on_batch(len(out))
        return out

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._pending:
            return
        batch, self._pending, self._pending_rows = self._pending, [], 0
        self._in_flight += 1  # counted from now, so no request slips past a scheduled batch
        asyncio.ensure_future(self._run(batch))

    async def _run(self, batch: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        parts = [rows for rows, _ in batch]
        try:
            out = await self._call(parts[0] if len(parts) == 1 else np.concatenate(parts), reserved=True)
        except BaseException as e:  # every waiter learns the failure; none hangs
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e) if isinstance(e, Exception) else fut.cancel()
            if not isinstance(e, Exception):
                raise
            return
        start = 0
        for rows, fut in batch:
            end = start + len(rows)
            if not fut.done():
                fut.set_result(out[start:end])
            start = end
