"""The engine on simulated data: raw rows only offline, online tiles equal to the naive windows, replays change nothing."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest

from feature_repo.aggregations import AGGREGATIONS
from feature_repo.sources import SOURCES
from feature_repo.tiles import layout_for
from rtml.simulator import generate_transactions, to_events
from streaming.engine import EVENT_TIMESTAMP, FeatureEngine
from streaming.validation import decode_event
from tests.unit.streaming.reference import NaiveWindows, us

SOURCE_BY_TOPIC = {s.topic: s for s in SOURCES}
DAY_US = 86400 * 10**6


@pytest.fixture(scope="module")
def decoded():
    """(source, decoded event) of a small simulation, every transaction labelled (frauds positive), labels 7 days late."""
    df = generate_transactions(n_customers=60, n_terminals=120, n_days=50, start_date="2018-04-01", radius=15.0, seed=3)
    out = []
    for ev in to_events(df, label_delay=timedelta(days=7), all_labels=True):
        source = SOURCE_BY_TOPIC[ev.topic]
        out.append((source.name, decode_event(source, json.dumps(ev.value).encode())))
    return out


def run(engine: FeatureEngine, stream) -> dict:
    offline: dict = {}
    for name, event in stream:
        engine.apply(name, event, offline)
    return offline


def test_offline_rows_are_the_raw_events_stamped_with_their_log_time(decoded):
    engine = FeatureEngine()
    offline = run(engine, decoded)
    assert set(offline) == {"transactions", "fraud_labels"}  # no feature rows
    labels = offline["fraud_labels"]
    assert all(row[EVENT_TIMESTAMP] == row["label_datetime"] for row in labels)
    assert all(row[EVENT_TIMESTAMP] == row["tx_datetime"] for row in offline["transactions"])
    assert len(offline["transactions"]) + len(labels) == len(decoded)


def test_online_tiles_equal_the_naive_windows_and_replays_change_nothing(decoded):
    engine = FeatureEngine()
    run(engine, decoded)
    drained = engine.drain_online_values()
    run(engine, decoded[: len(decoded) // 2])  # at-least-once: half the stream again
    assert engine.pending_online() == 0  # no tile changed

    events = [e for name, e in decoded if name == "transactions"]
    labels = [e for name, e in decoded if name == "fraud_labels"]
    end_us = max(us(e["tx_datetime"]) for e in events)
    for agg in AGGREGATIONS:
        layout, naive = layout_for(agg), NaiveWindows(agg, events, labels)
        blobs = {entity: values[0] for entity, _, values in drained[agg.feature_view]}
        assert set(blobs) == set(naive.entities())
        entities = sorted(blobs)
        for t_us in (end_us, end_us + DAY_US, end_us + 8 * DAY_US + 1):
            want = np.array([naive.features(e, t_us) for e in entities])
            got = layout.features([blobs[e] for e in entities], np.full(len(entities), t_us))
            np.testing.assert_allclose(got, want, rtol=1e-12)
        last = np.array([naive.last_event_us(e) for e in entities])  # each entity at its newest event
        got = layout.features([blobs[e] for e in entities], last)
        np.testing.assert_allclose(got, np.array([naive.features(e, t) for e, t in zip(entities, last)]), rtol=1e-12)
        if agg.uses_labels:
            assert got[:, agg.feature_names().index("terminal_id_risk_30day_window")].max() > 0  # some labels counted


def test_reset_forgets_everything(decoded):
    engine = FeatureEngine()
    run(engine, decoded[:1000])
    assert engine.entity_count() > 0 and engine.tile_count() > 0 and engine.pending_online() > 0
    engine.reset()
    assert engine.entity_count() == 0 and engine.pending_online() == 0 and engine.drain_online_values() == {}
