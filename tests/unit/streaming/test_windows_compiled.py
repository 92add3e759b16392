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
from streaming.engine import FeatureEngine
from streaming.validation import decode_event
from streaming.windows import COMPILED_WINDOWS, DAY_S, PYTHON_WINDOWS, plan_for
from tests.unit.streaming.test_engine import SOURCE_BY_TOPIC

needs_compiled = pytest.mark.skipif(COMPILED_WINDOWS is None, reason="the compiled windows were not built")


def test_compiled_windows_are_built_where_a_compiler_is():
    has_compiler = shutil.which((sysconfig.get_config_var("CC") or "cc").split()[0]) is not None
    has_headers = (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()
    if not (has_compiler and has_headers):
        pytest.skip("no C compiler or Python headers here: the Python windows are the ones installed")
    assert COMPILED_WINDOWS is not None, "pip install -e . should have built streaming/_windows_compiled.pyx"


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
        outputs.append(({t: engine.offline_frame(rows).to_dict("list") for t, rows in offline.items()}, drained))
    assert outputs[0] == outputs[1]
