"""The feature engine against a real Kafka broker and a real Feast (SQLite) store."""

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

from feature_repo.batch_features import entity_features_at
from feature_repo.sources import SOURCES
from feature_repo.model_inputs import CUSTOMER_FEATURES, TERMINAL_FEATURES
from feature_repo.store import apply_definitions
from rtml.simulator import generate_transactions, produce_events, to_events
from rtml_common.kafka import REASON_HEADER, make_producer
from streaming.runner import StreamRunner
from streaming.settings import StreamingSettings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def dataset():
    return generate_transactions(n_customers=150, n_terminals=300, n_days=45, start_date="2018-04-01", radius=12.0, seed=11)


def engine_settings(tmp_path, kafka_broker, unique, **kw) -> StreamingSettings:
    # Each test gets its own topics (RTML_TOPIC_PREFIX) and consumer group on the shared broker.
    return StreamingSettings(home=tmp_path, kafka_bootstrap=kafka_broker.bootstrap, group_id=f"engine-{unique}",
                             topic_prefix=f"{unique}-", metrics_port=0, offline_flush_s=0.5, **kw)


def online_frames(store, dataset):
    cust_ids = sorted(dataset["CUSTOMER_ID"].unique().tolist())
    term_ids = sorted(dataset["TERMINAL_ID"].unique().tolist())
    cust = store.get_online_features(features=[f"customer_spending:{f}" for f in CUSTOMER_FEATURES],
                                     entity_rows=[{"customer_id": int(c)} for c in cust_ids]).to_df().set_index("customer_id")
    term = store.get_online_features(features=[f"terminal_risk:{f}" for f in TERMINAL_FEATURES],
                                     entity_rows=[{"terminal_id": int(t)} for t in term_ids]).to_df().set_index("terminal_id")
    return cust, term


def assert_converged(store, dataset):
    cust, term = online_frames(store, dataset)
    cust_batch, term_batch = entity_features_at(dataset)
    # float32 in the online store: compare at float32 precision
    np.testing.assert_allclose(cust[CUSTOMER_FEATURES].to_numpy(float), cust_batch.loc[cust.index, CUSTOMER_FEATURES].to_numpy(float), rtol=1e-6)
    np.testing.assert_allclose(term[TERMINAL_FEATURES].to_numpy(float), term_batch.loc[term.index, TERMINAL_FEATURES].to_numpy(float), rtol=1e-6, atol=1e-7)


def test_stream_to_feast_equals_batch_and_bad_events_reach_the_dlq(tmp_path, kafka_broker, unique, dataset):
    settings = engine_settings(tmp_path, kafka_broker, unique)
    store = apply_definitions(settings)
    produce_events(settings, to_events(dataset))
    producer = make_producer(settings)
    topic = settings.topic("transactions")
    producer.send(topic, b"{broken")
    producer.send(topic, json.dumps({"transaction_id": 5, "tx_datetime": "2018-04-02T00:00:00Z", "customer_id": 1,
                                     "terminal_id": 2, "tx_amount": -3}).encode())
    # Same key (same partition) as the customer's last event, but two days older than the stream time: late.
    last = dataset.iloc[-1]
    producer.send(topic, key=str(int(last.CUSTOMER_ID)).encode(), value=json.dumps({
        "transaction_id": 99_999_999, "tx_datetime": (last.TX_DATETIME - pd.Timedelta(days=2)).isoformat(),
        "customer_id": int(last.CUSTOMER_ID), "terminal_id": int(last.TERMINAL_ID), "tx_amount": 10.0}).encode())
    producer.flush()
    stats = StreamRunner(settings, store=store).run(idle_timeout_s=3, max_seconds=240)
    n_events = len(list(to_events(dataset)))
    assert stats.consumed == n_events + 3
    assert stats.dead_lettered == 3 and stats.by_reason == {"unparseable": 1, "range": 1, "late": 1}
    assert_converged(store, dataset)  # the late event changed nothing

    dlq = KafkaConsumer(topic + ".dlq", bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest",
                        consumer_timeout_ms=5000, group_id=None)
    records = [r for r in dlq]
    dlq.close()
    reasons = {dict(r.headers)[REASON_HEADER].decode().split(":")[0] for r in records}
    assert {b"{broken"} <= {r.value for r in records}
    assert reasons == {"unparseable", "range", "late"}

    # Offline log: every transaction's feature row landed, partitioned by event date.
    days = sorted(p.name for p in (settings.offline_path / "customer_spending").iterdir())
    assert days[0] == "2018-04-01" and len(days) == 45


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
