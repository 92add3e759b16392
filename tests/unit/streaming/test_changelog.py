"""The state changelog: chunks written at checkpoints restore exactly the state they were taken from."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from streaming.changelog import chunk_key, parse_key
from streaming.engine import FeatureEngine
from tests.unit.streaming.reference import blobs, feed, streams


def compacted_log(engine: FeatureEngine, log: dict) -> None:
    """Take the engine's changed chunks into ``log`` as a compacted topic keeps them (newest per key)."""
    for view, chunks in engine.take_changes().items():
        for entity, day, value in chunks:
            log[(view, chunk_key(entity, day))] = value


def restored(log: dict, chunk_days: int = 7) -> FeatureEngine:
    engine = FeatureEngine(track_changes=True, chunk_days=chunk_days)
    for (view, key), value in log.items():
        entity, _ = parse_key(key, "int")
        engine.restore_chunk(view, entity, value)
    engine.finish_restore()
    return engine


@settings(max_examples=200, deadline=None)
@given(streams(), st.data())
def test_restore_from_checkpointed_chunks_equals_the_live_state(stream, data):
    """Checkpoints at any points; a restore from the compacted chunks packs the same tiles, knows the same
    events (the whole stream fed again is a replay) and then continues exactly like the live engine."""
    chunk_days = data.draw(st.sampled_from([1, 7]))
    cut = data.draw(st.integers(0, len(stream)))
    checkpoints = set(data.draw(st.lists(st.integers(0, cut), max_size=4))) | {cut}
    live, log = FeatureEngine(track_changes=True, chunk_days=chunk_days), {}
    for pos, (source, event) in enumerate(stream[:cut]):
        live.apply(source, dict(event))
        if pos + 1 in checkpoints:
            compacted_log(live, log)
    compacted_log(live, log)
    back = restored(log, chunk_days)
    assert blobs(back) == blobs(live)
    feed(back, stream[:cut])
    assert back.pending_online() == 0  # every event before the checkpoint is a replay
    feed(live, stream[cut:])
    feed(back, stream[cut:])
    assert blobs(back) == blobs(live)


def test_string_keys_and_chunk_order_do_not_matter():
    live, log = FeatureEngine(track_changes=True, chunk_days=1), {}
    for i in range(60):  # three weeks of one customer, checkpointed every day
        live.apply("transactions", {"transaction_id": i, "tx_datetime": 1_522_540_800.0 + i * 30_000.0,
                                    "customer_id": 7, "terminal_id": 8, "tx_amount": 1.25 * i})
        if i % 3 == 0:
            compacted_log(live, log)
    compacted_log(live, log)
    assert len({k for _, k in log}) > 15  # one chunk per entity and day
    backwards = dict(reversed(list(log.items())))  # chunks in any order
    assert blobs(restored(backwards, chunk_days=1)) == blobs(live)
    assert parse_key(chunk_key("card-7/x", 17_000), "str") == ("card-7/x", 17_000)
