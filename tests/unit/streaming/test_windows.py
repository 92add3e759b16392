"""Window state against a brute-force definition of the declared windows (both implementations: conftest)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st

from feature_repo.aggregations import CUSTOMER_SPENDING, TERMINAL_RISK
from streaming.windows import DAY_S


def brute(events, labels, t, agg):
    out = {}
    names = agg.feature_names()
    for i, w in enumerate(agg.windows):
        hi = t - w.delay.total_seconds()
        lo = hi - w.length.total_seconds()
        inside = [(eid, v) for eid, ts, v in events if lo < ts <= hi]
        n = len(inside)
        if agg.kind == "count_avg":
            second = sum(v for _, v in inside) / n if n else 0.0
        else:
            ids = {eid for eid, _ in inside}
            frauds = sum(v for eid, ts, v in labels if lo < ts <= hi and eid in ids)
            second = frauds / n if n else 0.0
        out[names[2 * i]], out[names[2 * i + 1]] = n, second
    return out


times = st.floats(min_value=0, max_value=60 * DAY_S, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(times, st.floats(min_value=0, max_value=500, allow_nan=False)), min_size=1, max_size=60), times)
def test_count_avg_matches_brute_force(windows, evs, t):
    state = windows.state()
    events = []
    for i, (ts, amount) in enumerate(evs):
        state.add_event(i, ts, amount)
        events.append((i, ts, amount))
    got = windows.features_at(state, t, CUSTOMER_SPENDING)
    want = brute(events, [], t, CUSTOMER_SPENDING)
    assert got.keys() == want.keys()
    for k in want:
        assert abs(got[k] - want[k]) < 1e-9, k


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(times, st.booleans()), min_size=1, max_size=60), times)
def test_count_risk_matches_brute_force(windows, evs, t):
    state = windows.state()
    events, labels = [], []
    for i, (ts, fraud) in enumerate(evs):
        state.add_event(i, ts)
        events.append((i, ts, 0.0))
        if fraud:
            state.add_label(i, ts, 1.0)
            labels.append((i, ts, 1.0))
    got = windows.features_at(state, t, TERMINAL_RISK)
    want = brute(events, labels, t, TERMINAL_RISK)
    for k in want:
        assert abs(got[k] - want[k]) < 1e-9, k


def test_replayed_event_is_not_counted_twice(windows):
    state = windows.state()
    assert state.add_event(7, 100.0, 10.0)
    assert not state.add_event(7, 100.0, 10.0)
    assert windows.features_at(state, 100.0, CUSTOMER_SPENDING)["customer_id_nb_tx_1day_window"] == 1


def test_prune_bounds_state_to_the_horizon(windows):
    state = windows.state()
    for i in range(100):
        state.add_event(i, i * DAY_S, 1.0)
    state.prune(CUSTOMER_SPENDING.horizon.total_seconds())
    assert len(state.events.times) == 30  # days 70..99: the window (99 - 30, 99]
    assert min(state.events.times) > 99 * DAY_S - 30 * DAY_S


def test_out_of_order_replay_is_found_by_id_and_time(windows):
    state = windows.state()
    assert state.add_event(1, 100.0, 1.0)
    assert state.add_event(2, 50.0, 2.0)  # late, inserted before
    assert state.add_event(3, 50.0, 4.0)  # same time, another event
    assert not state.add_event(2, 50.0, 2.0)
    assert not state.add_event(1, 100.0, 1.0)
    assert list(state.events.times) == [50.0, 50.0, 100.0]
    assert windows.features_at(state, 100.0, CUSTOMER_SPENDING)["customer_id_avg_amount_1day_window"] == 7.0 / 3


def test_labels_are_allocated_only_when_one_arrives(windows):
    state = windows.state()
    state.add_event(1, 10.0)
    assert len(state.labels.times) == 0 and state._labels is None
    assert state.add_label(1, 10.0, 1.0) and not state.add_label(1, 10.0, 1.0)
    assert windows.features_at(state, 10.0 + 7 * DAY_S, TERMINAL_RISK)["terminal_id_risk_1day_window"] == 1.0
