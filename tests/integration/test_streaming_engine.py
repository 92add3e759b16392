"""The feature engine against a real Kafka broker and a real Feast (SQLite) store.

The online store holds each entity's packed tiles; they are read back through Feast
(``get_online_features``), merged by ``TileLayout.features`` at chosen times and compared with
the naive windows of ``tests.unit.streaming.reference`` over the events produced.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from kafka import KafkaConsumer

from feature_repo.aggregations import AGGREGATIONS
from feature_repo.sources import SOURCES
from feature_repo.store import apply_definitions
from feature_repo.tiles import TILES_FEATURE, layout_for
from rtml.simulator import generate_transactions, produce_events, to_events
from rtml_common.kafka import REASON_HEADER, make_producer
from streaming.runner import StreamRunner
from streaming.settings import StreamingSettings
from streaming.validation import decode_event
from tests.unit.streaming.reference import NaiveWindows, us

pytestmark = pytest.mark.integration
DAY_US = 86400 * 10**6
SOURCE_BY_TOPIC = {s.topic: s for s in SOURCES}


@pytest.fixture(scope="module")
def dataset():
    return generate_transactions(n_customers=150, n_terminals=300, n_days=45, start_date="2018-04-01", radius=12.0, seed=11)


def engine_settings(tmp_path, kafka_broker, unique, **kw) -> StreamingSettings:
    # Each test gets its own topics (RTML_TOPIC_PREFIX) and consumer group on the shared broker.
    return StreamingSettings(home=tmp_path, kafka_bootstrap=kafka_broker.bootstrap, group_id=f"engine-{unique}",
                             topic_prefix=f"{unique}-", metrics_port=0, offline_flush_s=0.5, **kw)


def decoded_events(dataset, extra: list[tuple[str, dict]] = ()) -> list[tuple[str, dict]]:
    """(source, event) as the engine decodes them: the dataset's transactions and labels, then ``extra`` (topic, value)."""
    values = [(ev.topic, ev.value) for ev in to_events(dataset)] + list(extra)
    return [(SOURCE_BY_TOPIC[t].name, decode_event(SOURCE_BY_TOPIC[t], json.dumps(v).encode())) for t, v in values]


def online_tiles(store, agg, ids: list[int]) -> list[bytes | None]:
    """The packed tiles of ``ids`` as Feast's reader returns them."""
    return store.get_online_features(features=[f"{agg.feature_view}:{TILES_FEATURE}"], entity_rows=[{agg.join_key: i} for i in ids],
                                     full_feature_names=True).to_dict()[f"{agg.feature_view}__{TILES_FEATURE}"]


def assert_converged(store, dataset, extra: list[tuple[str, dict]] = ()):
    """Every entity's online tiles, merged at several times (and at each entity's newest event, with a
    current transaction), equal the naive windows of the events produced (plus ``extra``)."""
    stream = decoded_events(dataset, extra)
    events = [e for name, e in stream if name == "transactions"]
    labels = [e for name, e in stream if name == "fraud_labels"]
    end = max(us(e["tx_datetime"]) for e in events)
    for agg in AGGREGATIONS:
        layout, naive = layout_for(agg), NaiveWindows(agg, events, labels)
        ids = sorted(naive.entities())
        blobs = online_tiles(store, agg, ids)
        assert all(b is not None for b in blobs), f"{agg.feature_view}: entities missing online"
        for t_us in (end, end + DAY_US // 3, end + 8 * DAY_US):
            got = layout.features(blobs, np.full(len(ids), t_us))
            np.testing.assert_allclose(got, [naive.features(i, t_us) for i in ids], rtol=1e-9, err_msg=agg.feature_view)
        last = [naive.last_event_us(i) for i in ids]
        current = {"tx_amount": 12.5}
        got = layout.features(blobs, np.array(last), {f: np.full(len(ids), current[f]) for f in layout.fields})
        np.testing.assert_allclose(got, [naive.features(i, t, current) for i, t in zip(ids, last)], rtol=1e-9, err_msg=agg.feature_view)
        if agg.uses_labels:  # the labels did count somewhere
            assert got[:, agg.feature_names().index("terminal_id_risk_30day_window")].max() > 0


def test_stream_to_feast_equals_the_naive_windows_and_bad_events_reach_the_dlq(tmp_path, kafka_broker, unique, dataset):
    settings = engine_settings(tmp_path, kafka_broker, unique)
    store = apply_definitions(settings)
    produce_events(settings, to_events(dataset))
    producer = make_producer(settings)
    topic = settings.topic("transactions")
    producer.send(topic, b"{broken")
    producer.send(topic, json.dumps({"transaction_id": 5, "tx_datetime": "2018-04-02T00:00:00Z", "customer_id": 1,
                                     "terminal_id": 2, "tx_amount": -3}).encode())
    producer.send(topic, json.dumps({"transaction_id": 6, "tx_datetime": "2200-01-01T00:00:00Z", "customer_id": 1,
                                     "terminal_id": 2, "tx_amount": 3}).encode())  # a clock far ahead
    # Same key (same partition) as the customer's last event, but two days older: applied as if in order.
    last = dataset.iloc[-1]
    late = {"transaction_id": 99_999_999, "tx_datetime": (last.TX_DATETIME - pd.Timedelta(days=2)).isoformat(),
            "customer_id": int(last.CUSTOMER_ID), "terminal_id": int(last.TERMINAL_ID), "tx_amount": 10.0}
    producer.send(topic, key=str(int(last.CUSTOMER_ID)).encode(), value=json.dumps(late).encode())
    producer.flush()
    stats = StreamRunner(settings, store=store).run(idle_timeout_s=3, max_seconds=240)
    n_events = len(list(to_events(dataset)))
    assert stats.consumed == n_events + 4
    assert stats.dead_lettered == 3 and stats.by_reason == {"unparseable": 1, "range": 1, "future": 1}
    assert_converged(store, dataset, extra=[("transactions", late)])

    dlq = KafkaConsumer(topic + ".dlq", bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest",
                        consumer_timeout_ms=5000, group_id=None)
    records = [r for r in dlq]
    dlq.close()
    reasons = {dict(r.headers)[REASON_HEADER].decode().split(":")[0] for r in records}
    assert {b"{broken"} <= {r.value for r in records}
    assert reasons == {"unparseable", "range", "future"}

    # Offline log: the raw events, partitioned by event date; no feature rows.
    days = sorted(p.name for p in (settings.offline_path / "transactions").iterdir())
    assert days[0] == "2018-04-01" and len(days) == 45
    assert sorted(p.name for p in settings.offline_path.iterdir() if p.is_dir() and any(p.iterdir())) == ["fraud_labels", "transactions"]


def test_kill_9_and_restart_loses_nothing_and_counts_nothing_twice(tmp_path, kafka_broker, unique, dataset):
    group = f"engine-{unique}"
    settings = engine_settings(tmp_path, kafka_broker, unique)
    apply_definitions(settings)
    env = dict(os.environ, RTML_HOME=str(tmp_path), RTML_KAFKA_BOOTSTRAP=kafka_broker.bootstrap, RTML_GROUP_ID=group,
               RTML_TOPIC_PREFIX=settings.topic_prefix,
               RTML_METRICS_PORT="0", RTML_OFFLINE_FLUSH_S="0.3", RTML_MAX_BATCH_RECORDS="200")
    events = list(to_events(dataset))
    # Events keep arriving (about 9 s at 1,500/s) while the engine is killed twice mid-stream.
    producer = threading.Thread(target=produce_events, args=(settings, events), kwargs={"rate": 1500})
    producer.start()
    for kill_after in (2.5, 2.5):
        proc = subprocess.Popen([sys.executable, "-m", "streaming"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    committed_before = committed_total(settings, group)
    producer.join(timeout=120)
    assert committed_before < len(events), "the kills must land before the stream was fully processed"
    proc = subprocess.run([sys.executable, "-m", "streaming", "--idle-timeout", "4"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    store = apply_definitions(settings)
    assert_converged(store, dataset)
    assert committed_total(settings, group) == len(events)


def committed_total(settings, group) -> int:
    """Committed offsets of the group summed over the source topics (repartition topics excluded)."""
    from kafka import KafkaAdminClient

    sources = {settings.topic(s.topic) for s in SOURCES}
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
        return sum(o.offset for tp, o in offsets.items() if o.offset > 0 and tp.topic in sources)
    finally:
        admin.close()
