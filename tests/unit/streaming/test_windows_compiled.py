"""The compiled windows against the Python reference: the same rows, bit for bit, for any event sequence."""

from __future__ import annotations

import json
import shutil
import sysconfig
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from feature_repo.aggregations import CUSTOMER_SPENDING, TERMINAL_RISK
from rtml.simulator import generate_transactions, to_events
from streaming import windows as windows_module
from streaming.compiled import load
from streaming.engine import FeatureEngine
from streaming.validation import decode_event
from streaming.windows import COMPILED_WINDOWS, DAY_S, PYTHON_WINDOWS, plan_for
from tests.unit.streaming.test_engine import SOURCE_BY_TOPIC

needs_compiled = pytest.mark.skipif(COMPILED_WINDOWS is None, reason="the compiled windows were not built")


def test_compiled_twins_are_built_where_a_compiler_is():
    has_compiler = shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is not None
    has_headers = (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()
    if not (has_compiler and has_headers):
        pytest.skip("no C compiler or Python headers here: the Python code is what is installed")
    assert COMPILED_WINDOWS is not None, "pip install -e . should have built streaming/_windows_compiled.pyx"
    assert load("_online_compiled") is not None, "pip install -e . should have built streaming/_online_compiled.pyx"


@needs_compiled
def test_constants_the_twins_share_agree():
    from streaming import _online_compiled, _windows_compiled
    from streaming.online_native import FIELD_KINDS

    assert _windows_compiled.PRUNE_MIN == windows_module.PRUNE_MIN
    assert _online_compiled.KINDS == FIELD_KINDS


@needs_compiled
@pytest.mark.parametrize("bad_id,error", [(7.5, TypeError), (1 << 63, OverflowError), ("7", TypeError)])
def test_an_id_that_is_no_int64_raises_in_both_and_changes_nothing(bad_id, error):
    for impl in (PYTHON_WINDOWS, COMPILED_WINDOWS):
        state = impl.state()
        for i, ts in enumerate((10.0, 20.0)):
            state.add_event(i, ts, 1.0)
        for ts in (30.0, 15.0):  # appended, inserted
            with pytest.raises(error):
                state.add_event(bad_id, ts, 1.0)
        assert (list(state.events.times), list(state.events.ids)) == ([10.0, 20.0], [0, 1]), impl.name
        assert state.add_event(2, 25.0, 1.0)  # still consistent


@needs_compiled
def test_compiled_windows_refuse_what_would_crash_them():
    from streaming import _windows_compiled as c

    kernel = c.Kernel("count_avg", ((0.0, 86400.0),))
    state = c.EntityState()
    state.add_event(1, 10.0, 2.0)
    with pytest.raises(TypeError):
        kernel(None, 1.0)
    with pytest.raises(TypeError):
        state.fold_event(2, 11.0, 1.0, None, 1e9, 1)
    with pytest.raises(TypeError):
        state.latest = (1, 2.0)  # the online drain slices it as a list
    with pytest.raises(TypeError):
        c.drain_rows({1}, {1: None}, kernel, 2, {}, {})

    class NotColumns:
        lists = (object(), object(), object(), object())

    route = c.EntityRoute("v", "k", True, "t", "i", "x", None, kernel, c.EntityState, NotColumns, {}, set(), {}, 1e9)
    with pytest.raises(TypeError):
        route.apply({"k": 1, "t": 10.0, "i": 1, "x": 1.0}, {}, None)


@needs_compiled
def test_a_build_older_than_its_source_is_refused(monkeypatch):
    from streaming import _windows_compiled

    monkeypatch.setattr(_windows_compiled, "SOURCE_SHA1", "0" * 40)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert windows_module._compiled_windows() is None
    assert "older _windows_compiled.pyx" in str(caught[0].message)
    monkeypatch.undo()
    assert windows_module._compiled_windows() is not None


# Few distinct times and ids, so ties, replays and out-of-order inserts are common.
step = st.one_of(
    st.tuples(st.just("event"), st.integers(0, 12), st.integers(0, 40).map(lambda d: d * DAY_S / 4),
              st.floats(0, 1000, allow_nan=False)),
    st.tuples(st.just("label"), st.integers(0, 12), st.integers(0, 40).map(lambda d: d * DAY_S / 4), st.sampled_from([0.0, 1.0])),
    st.tuples(st.just("prune"), st.integers(0, 12), st.integers(0, 40).map(lambda d: d * DAY_S), st.just(0.0)),  # ts: horizon
)


@needs_compiled
@settings(max_examples=300, deadline=None)
@given(st.lists(step, min_size=1, max_size=80), st.sampled_from([CUSTOMER_SPENDING, TERMINAL_RISK]))
def test_fold_gives_the_same_rows_as_the_reference(steps, agg):
    horizon = agg.horizon.total_seconds()
    states = [impl.state() for impl in (PYTHON_WINDOWS, COMPILED_WINDOWS)]
    kernels = [impl.kernel(agg.kind, plan_for(agg).bounds) for impl in (PYTHON_WINDOWS, COMPILED_WINDOWS)]
    for op, event_id, ts, value in steps:
        if op == "event":
            got = [s.fold_event(event_id, ts, value, k, horizon, "entity") for s, k in zip(states, kernels)]
        elif op == "label":
            got = [s.add_label(event_id, ts, value) for s in states]
        else:
            got = [s.prune(ts) for s in states]
        assert got[0] == got[1]
        if isinstance(got[0], list):  # a row: counts stay ints, averages floats
            assert list(map(type, got[0])) == list(map(type, got[1]))
        assert states[0].latest == states[1].latest
        assert states[0].last_event_time == states[1].last_event_time
        for part in ("events", "labels"):
            a, b = getattr(states[0], part), getattr(states[1], part)
            assert (a.times, a.values, a.ids) == (b.times, b.values, b.ids)
        if states[0].last_event_time is not None:
            at = states[0].last_event_time + ts / 7
            assert kernels[0](states[0], at) == kernels[1](states[1], at)


@needs_compiled
def test_engine_output_is_the_same_with_either_implementation():
    data = generate_transactions(n_customers=80, n_terminals=160, n_days=40, start_date="2018-04-01", radius=15.0, seed=11)
    events = list(to_events(data))
    outputs = []
    for impl in (PYTHON_WINDOWS, COMPILED_WINDOWS):
        engine, offline = FeatureEngine(windows=impl, grace_s=DAY_S), {}
        drained = []
        for i, ev in enumerate(events + events[: len(events) // 3]):  # a replayed third: no-ops
            source = SOURCE_BY_TOPIC[ev.topic]
            engine.apply(source.name, decode_event(source, json.dumps(ev.value).encode()), offline)
            if i % 97 == 0:
                drained.append(engine.drain_online_values())
        drained.append(engine.drain_online_values())
        outputs.append(repr(({t: engine.offline_frame(rows).to_dict("list") for t, rows in offline.items()}, drained)))
    assert outputs[0] == outputs[1]  # as text: int against float, -0.0 and nan differences count too
