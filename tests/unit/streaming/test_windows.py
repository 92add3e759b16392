"""Tiles of the engine: order independence, exactly once, the naive reference, bounded state (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from feature_repo.aggregations import AGGREGATIONS, CUSTOMER_SPENDING, TERMINAL_RISK
from feature_repo.tiles import layout_for
from streaming.engine import FeatureEngine
from streaming.windows import PRUNE_MIN, drain_rows
from tests.unit.streaming.reference import BASE, DAY, HOUR, NaiveWindows, blobs, feed, label, streams, tx, us



@settings(max_examples=300, deadline=None)
@given(streams(), st.data())
def test_any_order_with_duplicates_gives_the_same_tiles_bytes(stream, data):
    """(a) Order independence and exactly once: a permutation of the stream, duplicates included and
    online drains anywhere in between, packs the very same bytes; so does the stream fed twice."""
    in_order = FeatureEngine()
    feed(in_order, stream)
    want = blobs(in_order)

    order = data.draw(st.permutations(range(len(stream))))
    drains = frozenset(data.draw(st.lists(st.integers(0, len(stream) - 1), max_size=5)))
    shuffled = FeatureEngine()
    feed(shuffled, [stream[i] for i in order], drains)
    assert blobs(shuffled) == want

    in_order.drain_online_values()
    feed(in_order, stream)  # everything again: every event is a replay
    assert in_order.pending_online() == 0 and blobs(in_order) == want


@settings(max_examples=300, deadline=None)
@given(streams(), st.data())
def test_tiles_merged_at_any_time_equal_the_naive_windows(stream, data):
    """(b) The engine's tiles, merged by ``TileLayout.features`` at times from one tile plus ``grace_s``
    before an entity's newest event to long after it (with and without a current event), equal the
    naive windows."""
    grace_s = data.draw(st.sampled_from([0.0, HOUR, 20 * HOUR]), label="grace_s")
    engine = FeatureEngine(grace_s=grace_s)
    feed(engine, stream)
    packed = blobs(engine)
    events = [e for s, e in stream if s == "transactions"]
    labels = [e for s, e in stream if s == "fraud_labels"]
    for agg in AGGREGATIONS:
        layout, naive = layout_for(agg), NaiveWindows(agg, events, labels)
        for entity in naive.entities():
            earliest = -us(HOUR + grace_s)
            t_us = naive.last_event_us(entity) + data.draw(st.integers(earliest, 40 * 86400 * 10**6), label="offset")
            amount = data.draw(st.integers(0, 4000), label="amount") / 4
            blob = packed[agg.feature_view].get(entity)
            got = layout.features([blob], np.array([t_us]))[0]
            np.testing.assert_allclose(got, naive.features(entity, t_us), rtol=1e-12, atol=0)
            current = {"tx_amount": np.array([amount])}
            got = layout.features([blob], np.array([t_us]), {f: current[f] for f in layout.fields})[0]
            np.testing.assert_allclose(got, naive.features(entity, t_us, {"tx_amount": amount}), rtol=1e-12, atol=0)


@pytest.mark.parametrize("per_hour,grace_s", [(1, 0.0), (12, 0.0), (60, 0.0), (12, 20 * HOUR)])
def test_pruning_bounds_the_tiles_of_an_entity_whatever_the_rate(per_hour, grace_s):
    """(c) However many events an entity gets, it keeps at most horizon_tiles + 2 tiles (plus those of
    ``grace_s``), online and in memory."""
    engine = FeatureEngine(aggregations=(CUSTOMER_SPENDING,), grace_s=grace_s)
    layout = layout_for(CUSTOMER_SPENDING)
    bound = layout.horizon_tiles + 2 + int(grace_s // HOUR)
    header = len(layout.encode({}))
    step = HOUR / per_hour
    largest = 0
    for i in range(int(90 * DAY / step)):  # 90 days: three times the horizon
        engine.apply("transactions", tx(i, BASE + i * step, 1.0 + i % 7))
        if i % 500 == 499:
            (row,) = engine.drain_online_values()["customer_spending"]
            largest = max(largest, len(row[2][0]))
            st_ = engine.state["customer_spending"][1]
            assert len(st_.keys) <= bound
            # Remembered events: those of the kept tiles, plus what amortised pruning has not moved yet.
            assert len(st_.events) <= bound * per_hour + PRUNE_MIN
    assert largest == header + bound * 8 * (1 + layout.width)  # the bound is reached, never passed


def test_a_replayed_event_changes_nothing():
    engine = FeatureEngine(aggregations=(CUSTOMER_SPENDING,))
    engine.apply("transactions", tx(7, BASE + 100, 10.0))
    engine.drain_online_values()
    engine.apply("transactions", tx(7, BASE + 100, 10.0))
    assert engine.pending_online() == 0
    engine.apply("transactions", tx(7, BASE + 101, 10.0))  # same id, another time: another event
    assert engine.pending_online() == 1
    assert engine.state["customer_spending"][1].tiles() == {int((BASE + 100) // 3600): [2.0, 20.0]}


def test_an_event_older_than_the_kept_tiles_is_ignored():
    engine = FeatureEngine(aggregations=(CUSTOMER_SPENDING,))
    layout = layout_for(CUSTOMER_SPENDING)
    engine.apply("transactions", tx(1, BASE + 60 * DAY))
    engine.drain_online_values()
    oldest_kept = int((BASE + 60 * DAY) // 3600) - layout.horizon_tiles - 1
    engine.apply("transactions", tx(2, oldest_kept * 3600.0 - 1))
    assert engine.pending_online() == 0
    engine.apply("transactions", tx(3, oldest_kept * 3600.0))
    assert sorted(engine.state["customer_spending"][1].tiles()) == [oldest_kept, int((BASE + 60 * DAY) // 3600)]


def test_labels_count_once_when_positive_and_on_time_in_the_tile_of_their_event():
    engine = FeatureEngine(aggregations=(TERMINAL_RISK,))
    ev = tx(1, BASE + 10 * HOUR + 5)
    tile = int(ev["tx_datetime"] // 3600)
    engine.apply("transactions", ev)
    states = engine.state["terminal_risk"]
    engine.drain_online_values()
    for lab in (label(ev, 0, ev["tx_datetime"] + DAY),  # negative: nothing to count
                label(ev, 1, ev["tx_datetime"] + 8 * DAY)):  # positive, known a day past the label delay
        engine.apply("fraud_labels", lab)
        assert engine.pending_online() == 0 and states[2].tiles()[tile] == [1.0, 0.0]
    engine.apply("fraud_labels", label(ev, 1, ev["tx_datetime"] + 7 * DAY))  # on time (exactly the delay)
    assert states[2].tiles()[tile] == [1.0, 1.0]
    (row,) = engine.drain_online_values()["terminal_risk"]
    assert row[1] == ev["tx_datetime"] + 7 * DAY  # stamped when the label became known
    engine.apply("fraud_labels", label(ev, 1, ev["tx_datetime"] + DAY))  # another on-time label of the same event
    engine.apply("fraud_labels", label(ev, 1, None))  # known at the event time
    assert engine.pending_online() == 0 and states[2].tiles()[tile] == [1.0, 1.0]


def test_a_label_counts_in_the_tile_of_its_event_without_looking_the_event_up():
    engine = FeatureEngine(aggregations=(TERMINAL_RISK,))
    ev = tx(1, BASE + 5)
    engine.apply("fraud_labels", label(ev, 1, BASE + DAY))  # before its event
    engine.apply("fraud_labels", label(tx(9, BASE + 2 * HOUR), 1, BASE + DAY))  # an event that never comes
    assert engine.pending_online() == 1
    engine.apply("transactions", ev)
    tile = int(BASE // 3600)
    assert engine.state["terminal_risk"][2].tiles() == {tile: [1.0, 1.0], tile + 2: [0.0, 1.0]}


def test_stamps_increase_strictly_per_entity():
    engine = FeatureEngine(aggregations=(CUSTOMER_SPENDING,))
    stamps = []
    for i, t in enumerate((BASE + 50, BASE + 10, BASE + 10.5, BASE + 60)):  # older events after a newer one
        engine.apply("transactions", tx(i, t))
        stamps += [s for _, s, _ in engine.drain_online_values()["customer_spending"]]
    assert stamps == pytest.approx([BASE + 50, BASE + 50.001, BASE + 50.002, BASE + 60], abs=1e-6, rel=0)
    assert all(a < b for a, b in zip(stamps, stamps[1:]))


def test_an_id_beyond_int64_raises_before_any_change():
    engine = FeatureEngine(aggregations=(CUSTOMER_SPENDING,))
    engine.apply("transactions", tx(1, BASE))
    before = engine.state["customer_spending"][1].tiles()
    with pytest.raises(OverflowError):
        engine.apply("transactions", tx(1 << 63, BASE + 1))
    assert engine.state["customer_spending"][1].tiles() == before and len(engine.state["customer_spending"][1].events) == 1


def test_the_engine_packs_tiles_as_the_layout_encodes_them():
    """The flat rows kept per entity are ``TileLayout.encode``'s bytes, tiles out of order included."""
    engine = FeatureEngine(aggregations=(CUSTOMER_SPENDING,))
    layout = layout_for(CUSTOMER_SPENDING)
    tiles: dict[int, list[float]] = {}
    for i, (t, amount) in enumerate([(5 * HOUR, 3.5), (HOUR, 1.25), (5 * HOUR + 1, 2.0), (3 * HOUR, 7.0), (0.5, 1.0)]):
        engine.apply("transactions", tx(i, BASE + t, amount))
        layout.add_event(tiles.setdefault(layout.tile_of(us(BASE + t)), layout.empty()), {"tx_amount": amount})
    (row,) = engine.drain_online_values()["customer_spending"]
    assert row[2] == [layout.encode(tiles)]
