"""The micro-batcher merges concurrent requests into one call and hands each its own rows back."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from inference.batching import MicroBatcher


class Recorder:
    def __init__(self, fail: bool = False):
        self.calls: list[int] = []
        self.fail = fail

    async def __call__(self, rows: np.ndarray) -> np.ndarray:
        self.calls.append(len(rows))
        await asyncio.sleep(0)  # like I/O: other requests get to queue meanwhile
        if self.fail:
            raise RuntimeError("boom")
        return rows[:, 0] * 10


def run(coro):
    return asyncio.run(coro)


def test_requests_arriving_during_a_call_share_the_next_one_and_get_their_own_rows():
    fn = Recorder()

    async def main():
        b = MicroBatcher(fn, max_batch_size=100)
        parts = [np.full((k, 2), float(k)) for k in (1, 3, 2)]
        return await asyncio.gather(*(b.submit(p) for p in parts))

    results = run(main())
    assert fn.calls == [1, 5]  # the first runs at once (idle batcher), the other two wait for it and go together
    assert [r.tolist() for r in results] == [[10.0], [30.0] * 3, [20.0] * 2]


def test_batches_never_exceed_max_batch_size_and_big_requests_run_alone():
    fn = Recorder()

    async def main():
        b = MicroBatcher(fn, max_batch_size=4)
        sizes = (2, 2, 1, 9, 3)
        return await asyncio.gather(*(b.submit(np.ones((k, 1)) * i) for i, k in enumerate(sizes)))

    results = run(main())
    assert sorted(fn.calls) == [2, 3, 3, 9] and sum(fn.calls) == 17
    assert all(c <= 4 for c in fn.calls if c != 9)  # only the oversized request exceeds the limit, alone
    assert [len(r) for r in results] == [2, 2, 1, 9, 3]
    assert results[3].tolist() == [30.0] * 9


def test_max_wait_collects_requests_arriving_later():
    fn = Recorder()

    async def main():
        b = MicroBatcher(fn, max_batch_size=100, max_wait_s=0.05)
        first = asyncio.ensure_future(b.submit(np.ones((1, 1))))
        await asyncio.sleep(0.01)
        second = asyncio.ensure_future(b.submit(np.ones((1, 1))))
        return await asyncio.gather(first, second)

    run(main())
    assert fn.calls == [2]


def test_sequential_requests_are_not_delayed_into_batches():
    fn = Recorder()

    async def main():
        b = MicroBatcher(fn, max_batch_size=100)
        for _ in range(3):
            await b.submit(np.ones((1, 1)))

    run(main())
    assert fn.calls == [1, 1, 1]


def test_a_failing_batch_fails_every_waiter():
    async def main():
        b = MicroBatcher(Recorder(fail=True), max_batch_size=10)
        return await asyncio.gather(b.submit(np.ones((1, 1))), b.submit(np.ones((2, 1))), return_exceptions=True)

    results = run(main())
    assert all(isinstance(r, RuntimeError) and str(r) == "boom" for r in results)


def test_batch_sizes_are_reported():
    seen = []

    async def main():
        b = MicroBatcher(Recorder(), max_batch_size=10, on_batch=seen.append)
        await asyncio.gather(b.submit(np.ones((2, 1))), b.submit(np.ones((3, 1))))

    run(main())
    assert seen == [2, 3]


def test_invalid_max_batch_size_is_rejected():
    with pytest.raises(ValueError):
        MicroBatcher(Recorder(), max_batch_size=0)
