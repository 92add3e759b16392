"""Feature correctness under the faults users create, checked against an independent reference.

An independent stream (``correctness_reference.generate``: its own generator, hot terminal,
tile-edge times, duplicates, late and flipped labels) goes through two engine processes on four
partitions while one process is killed with SIGKILL again and again, the broker restarts, one
partition is held back behind the others and a backlog is caught up in a burst. Afterwards:

* every transaction is in the raw offline log, and every training row the training-set builder
  makes from that log equals ``reference_vectors`` (a plain loop over the generated events);
* the tiles in the online store (Redis), merged at request times from 0 to 20 days after each
  entity's last event, equal the same reference.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from components.dataset import point_in_time_features
from feature_repo.aggregations import AGGREGATIONS
from feature_repo.offline_log import TRANSACTIONS, read_table
from feature_repo.sources import SOURCES
from feature_repo.store import apply_definitions
from feature_repo.tiles import layout_for
from rtml.local.kafka import LocalKafka
from rtml_common.kafka import entity_key, json_bytes, make_consumer, make_producer
from streaming.runner import StreamRunner
from streaming.settings import StreamingSettings
from streaming.topology import build_topology
from tests.integration.group_offsets import group_lag
from tests.integration.correctness_reference import DAY_US, FEATURES, H_US, generate, reference_vectors
from tests.integration.inference_fixtures import Server, make_model_dir, reference_forward

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def committed_lag(settings: StreamingSettings, group: str, topics: list[str]) -> int:
    """Records of ``topics`` the group has not committed yet (-1 while the broker cannot say, e.g. just restarted)."""
    try:
        return group_lag(settings, group, topics)[0]
    except KafkaError:
        return -1


def send(settings: StreamingSettings, events, rate: float | None = None) -> None:
    """Produce (topic, key, value) events in order, at most ``rate`` a second."""
    producer = make_producer(settings)
    started = time.monotonic()
    try:
        for i, (topic, key, value, _) in enumerate(events):
            producer.send(settings.topic(topic), key=entity_key(key), value=json_bytes(value))
            if rate and i % 50 == 0:
                ahead = i / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
        producer.flush()
    finally:
        producer.close()


def served_vectors(store, queries: pd.DataFrame) -> pd.DataFrame:
    """What serving computes for each query: the stored tiles merged at the query's time, plus the query's transaction."""
    keys = {"customer_id": queries["customer_id"].astype(int).tolist(), "terminal_id": queries["terminal_id"].astype(int).tolist()}
    refs = [f"{a.feature_view}:tiles" for a in AGGREGATIONS]
    got = store.get_online_features(features=refs, entity_rows=keys, full_feature_names=True).to_dict()
    t_us = queries["t_us"].to_numpy(np.int64)
    parts = [layout_for(a).features(got[f"{a.feature_view}__tiles"], t_us, {"tx_amount": queries["tx_amount"].to_numpy()})
             for a in AGGREGATIONS]
    return pd.DataFrame(np.hstack(parts), columns=[n for a in AGGREGATIONS for n in a.feature_names()], index=queries.index)


def assert_same(got: pd.DataFrame, want: pd.DataFrame, what: str) -> None:
    got = got[FEATURES]
    bad = ~np.isclose(got.to_numpy(np.float64), want.to_numpy(np.float64), rtol=1e-9, atol=1e-12)
    rows = bad.any(axis=1)
    assert not rows.any(), (f"{what}: {int(rows.sum())} of {len(want)} rows differ, by feature "
                            f"{dict(zip(FEATURES, bad.sum(axis=0).tolist()))}; first:\n"
                            f"{pd.concat({'got': got[rows].head(3), 'want': want[rows].head(3)})}")


def test_two_engines_under_kills_broker_restart_delay_and_backlog_match_the_reference(tmp_path, redis_server):
    stream = generate(seed=2027, customers=160, terminals=240, days=45, start="2024-02-01", id_base=71_000_000)
    broker = LocalKafka(tmp_path / "kafka", partitions=4).start()
    group, prefix = "chaos", "chaos-"
    settings = StreamingSettings(home=tmp_path, kafka_bootstrap=broker.bootstrap, group_id=group, topic_prefix=prefix,
                                 metrics_port=0, partitions=4, redis_connection=redis_server.connection)
    store = apply_definitions(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RTML_")}
    env.update(RTML_HOME=str(tmp_path), RTML_KAFKA_BOOTSTRAP=broker.bootstrap, RTML_GROUP_ID=group, RTML_TOPIC_PREFIX=prefix,
               RTML_METRICS_PORT="0", RTML_PARTITIONS="4", RTML_REDIS_CONNECTION=redis_server.connection,
               RTML_OFFLINE_FLUSH_S="0.5", RTML_MAX_BATCH_RECORDS="300", PYTHONPATH=str(REPO))
    topics = list(build_topology(SOURCES, AGGREGATIONS, settings.topic))
    procs: dict[str, subprocess.Popen] = {}

    def start(name: str) -> None:
        with open(tmp_path / f"{name}.log", "ab") as out:
            procs[name] = subprocess.Popen([sys.executable, "-m", "streaming"], cwd=REPO, env=env, stdout=out,
                                           stderr=subprocess.STDOUT)

    def restores(name: str) -> int:
        path = tmp_path / f"{name}.log"
        return path.read_text().count("rebuilt state from") if path.exists() else 0

    def wait_ready(*names: str, before: dict[str, int] | None = None) -> None:
        """Until each process has restored an assignment since ``before`` (slow starts on a busy machine)."""
        deadline = time.monotonic() + 180
        while any(restores(n) <= (before or {}).get(n, 0) for n in names):
            assert time.monotonic() < deadline, f"engines {names} never got partitions:\n{logs()}"
            assert all(procs[n].poll() is None for n in names), f"an engine died:\n{logs()}"
            time.sleep(0.5)

    def kill(name: str) -> None:
        procs[name].send_signal(signal.SIGKILL)
        procs[name].wait(timeout=20)

    def logs() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in tmp_path.glob("*.log") if p.name != "kafka.log")

    events = stream.events
    n1, n2 = int(len(events) * 0.35), int(len(events) * 0.65)
    # One partition of the transactions topic is held back during the middle third and sent with the backlog.
    held_partition = lambda e: e[0] == "transactions" and (murmur2(entity_key(e[1])) & 0x7FFFFFFF) % 4 == 0  # noqa: E731
    middle = [e for e in events[n1:n2] if not held_partition(e)]
    held = [e for e in events[n1:n2] if held_partition(e)]
    try:
        start("a")
        start("b")
        wait_ready("a", "b")
        first = threading.Thread(target=send, args=(settings, events[:n1]), kwargs={"rate": 1000})
        first.start()
        for victim in ("a", "b", "a"):  # kill -9 mid-stream, uncommitted work and all, and come back
            time.sleep(2.5)
            kill(victim)
            before = {victim: restores(victim)}
            start(victim)
            wait_ready(victim, before=before)
        first.join(timeout=180)
        broker.stop()  # a broker restart under both engines
        time.sleep(2)
        broker.start()
        second = threading.Thread(target=send, args=(settings, middle), kwargs={"rate": 1500})
        second.start()
        time.sleep(3)
        kill("b")
        before = {"b": restores("b")}
        start("b")
        wait_ready("b", before=before)
        second.join(timeout=180)
        kill("a")
        kill("b")
        send(settings, held + events[n2:])  # a backlog, unthrottled: both engines catch up in a burst
        start("a")
        start("b")
        deadline = time.monotonic() + 420
        while committed_lag(settings, group, topics) != 0:
            assert time.monotonic() < deadline, f"the engines did not catch up:\n{logs()}"
            assert all(p.poll() is None for p in procs.values()), f"an engine died:\n{logs()}"
            time.sleep(1)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()
    assert all(p.returncode == 0 for p in procs.values()), logs()
    # The faults happened: assignments after the kills rebuilt state from events others had processed.
    text = "".join(p.read_text() for p in tmp_path.glob("[ab].log"))
    rebuilt = [int(n) for n in re.findall(r"rebuilt state from (\d+) changelog records", text)]
    assert len(rebuilt) >= 6 and max(rebuilt) > 0, logs()

    tx = stream.tx.drop_duplicates(["transaction_id", "tx_us"]).reset_index(drop=True)
    # 1. The raw log holds every transaction once its readers de-duplicate.
    logged = read_table(settings.offline_path, TRANSACTIONS, key=["transaction_id"])
    assert set(logged["transaction_id"]) == set(tx["transaction_id"])

    # 2. Training rows: the training-set builder over the raw log equals the reference for every transaction.
    rows = point_in_time_features(settings.offline_path, logged).set_index("transaction_id")
    want = reference_vectors(stream.tx, stream.labels, tx.assign(t_us=tx["tx_us"])).set_axis(tx["transaction_id"])
    got = rows.loc[want.index, FEATURES].to_numpy(np.float32)
    bad = ~np.isclose(got, want.to_numpy(np.float32), rtol=2.0 ** -23, atol=0)  # equal up to float32 rounding
    assert not bad.any(), (f"training rows: {int(bad.any(axis=1).sum())} of {len(want)} differ, by feature "
                           f"{dict(zip(FEATURES, bad.sum(axis=0).tolist()))}")

    # 3. Served: the stored tiles merged at request times after both entities' newest events (idle gaps included),
    # and at the own times of the last hours' transactions (within the engine's grace, 1 day by default).
    last = tx.sort_values("tx_us").groupby("customer_id").tail(1)
    newest = np.maximum(last["tx_us"].to_numpy(), last["terminal_id"].map(tx.groupby("terminal_id")["tx_us"].max()).to_numpy())
    queries = pd.concat([last.assign(t_us=newest + gap) for gap in (0, 1, 2 * H_US, 36 * H_US, 8 * DAY_US, 20 * DAY_US)],
                        ignore_index=True)
    recent = tx[tx["tx_us"] > tx["tx_us"].max() - 20 * H_US]  # transactions scored at their own times
    queries = pd.concat([queries, recent.assign(t_us=recent["tx_us"])], ignore_index=True)
    assert_same(served_vectors(store, queries), reference_vectors(stream.tx, stream.labels, queries), "served vectors")


def test_served_vectors_equal_training_vectors_at_request_time(tmp_path, kafka_broker, unique):
    """Replay a stream up to a cut, then score over V2 REST: transactions already ingested, transactions of
    the open tile not ingested yet, and new transactions hours and days after each entity's last event.
    The input vector the transformer served (from the prediction log) equals the reference for every row."""

    stream = generate(seed=515, customers=50, terminals=70, days=40, start="2024-05-01", id_base=73_000_000)
    cut = stream.tx["tx_us"].quantile(0.85)
    cut = int(cut // H_US * H_US + H_US // 2)  # half way through a tile
    settings = StreamingSettings(home=tmp_path, kafka_bootstrap=kafka_broker.bootstrap, group_id=f"skew-{unique}",
                                 topic_prefix=f"skew-{unique}-", metrics_port=0, partitions=4)
    apply_definitions(settings)
    ingested = [e for e in stream.events if e[3] <= cut]
    send(settings, ingested)
    StreamRunner(settings).run(idle_timeout_s=5, max_seconds=180)
    tx_in = stream.tx[stream.tx["tx_us"] <= cut]
    labels_in = stream.labels[stream.labels["known_us"] <= cut]

    tx = stream.tx.drop_duplicates(["transaction_id", "tx_us"])
    already = tx[(tx["tx_us"] > cut - 20 * H_US) & (tx["tx_us"] <= cut)].assign(t_us=lambda d: d["tx_us"])
    open_tile = tx[(tx["tx_us"] > cut) & (tx["tx_us"] < cut // H_US * H_US + H_US)].assign(t_us=lambda d: d["tx_us"])
    last = tx_in.sort_values("tx_us").groupby("customer_id").tail(1)
    idle = pd.concat([last.assign(t_us=cut + gap, tx_amount=last["tx_amount"] + 1.0) for gap in (3 * H_US, 30 * H_US, 5 * DAY_US)])
    queries = pd.concat([already, open_tile, idle], ignore_index=True)
    queries["t_us"] = queries["t_us"] // 1_000_000 * 1_000_000  # requests carry epoch seconds
    assert len(already) > 20 and len(idle) > 100

    model_dir = make_model_dir(tmp_path / "registry" / "fraud-detector" / "3")
    topic = f"skew-predictions-{unique}"
    server = Server(tmp_path, tmp_path / "server.log", "--role", "all", "--storage-uri", str(model_dir),
                    env={"RTML_KAFKA_BOOTSTRAP": kafka_broker.bootstrap, "RTML_PREDICTION_LOG_TOPIC": topic}).wait_ready()
    probs = {}
    try:
        with httpx.Client(timeout=10) as client:
            for i, q in enumerate(queries.itertuples(index=False)):
                body = {"id": f"q{i}", "inputs": [
                    {"name": "customer_id", "shape": [1], "datatype": "INT64", "data": [int(q.customer_id)]},
                    {"name": "terminal_id", "shape": [1], "datatype": "INT64", "data": [int(q.terminal_id)]},
                    {"name": "tx_amount", "shape": [1], "datatype": "FP64", "data": [float(q.tx_amount)]},
                    {"name": "tx_datetime", "shape": [1], "datatype": "INT64", "data": [int(q.t_us // 1_000_000)]}]}
                r = client.post(f"http://{server.url}/v2/models/fraud-detector/infer", json=body)
                assert r.status_code == 200, r.text
                probs[f"q{i}"] = next(o["data"][0] for o in r.json()["outputs"] if o["name"] == "fraud_probability")
        consumer = make_consumer(settings, [topic], group_id=f"read-{unique}")
        served, deadline = {}, time.monotonic() + 60
        while len(served) < len(queries) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for m in batch:
                    rec = json.loads(m.value)
                    served[rec["request_id"]] = rec["features"]
        consumer.close()
    finally:
        server.stop()
    assert len(served) == len(queries)
    got = pd.DataFrame([served[f"q{i}"] for i in range(len(queries))])
    want = reference_vectors(tx_in, labels_in, queries)
    w32 = want.to_numpy(np.float32)
    bad = ~np.isclose(got[FEATURES].to_numpy(np.float32), w32, rtol=2.0 ** -23, atol=0)  # equal up to float32 rounding
    assert not bad.any(), f"{int(bad.any(axis=1).sum())} of {len(queries)} served vectors differ: {dict(zip(FEATURES, bad.sum(axis=0).tolist()))}"
    # and the model saw exactly that vector
    x = got.to_numpy(np.float32).tolist()
    np.testing.assert_allclose([probs[f"q{i}"] for i in range(len(queries))], reference_forward(model_dir, x), rtol=1e-5)


def test_bad_event_times_are_dead_lettered_and_change_nothing_else(tmp_path, kafka_broker, unique):
    """Year 9999, 2**64 epoch seconds and tomorrow's events go to the DLQ as 'range' / 'future'; the valid events
    after them are all applied (nothing becomes 'late'), and a restart that replays them does not crash."""
    stream = generate(seed=99, customers=30, terminals=40, days=35, start="2024-03-01", id_base=74_000_000)
    settings = StreamingSettings(home=tmp_path, kafka_bootstrap=kafka_broker.bootstrap, group_id=f"times-{unique}",
                                 topic_prefix=f"times-{unique}-", metrics_port=0, partitions=4)
    store = apply_definitions(settings)
    customer = int(stream.tx["customer_id"].iloc[0])  # same key, same partition as valid events
    bad = [{"transaction_id": 1, "tx_datetime": "9999-12-31T23:59:59Z", "customer_id": customer, "terminal_id": 5, "tx_amount": 1.0},
           {"transaction_id": 2, "tx_datetime": float(2 ** 64), "customer_id": customer, "terminal_id": 5, "tx_amount": 1.0},
           {"transaction_id": 3, "tx_datetime": time.time() + 86400, "customer_id": customer, "terminal_id": 5, "tx_amount": 1.0}]
    n = len(stream.events) // 3
    send(settings, stream.events[:n] + [("transactions", customer, b, 0) for b in bad] + stream.events[n:])
    stats = StreamRunner(settings).run(idle_timeout_s=5, max_seconds=180)
    assert stats.by_reason == {"range": 2, "future": 1}
    dlq = make_consumer(settings, [settings.topic("transactions") + ".dlq"], group_id=f"dlq-{unique}")
    reasons, deadline = [], time.monotonic() + 30
    while len(reasons) < 3 and time.monotonic() < deadline:
        for batch in dlq.poll(timeout_ms=500).values():
            reasons += [dict(m.headers)["rtml-dlq-reason"].decode().split(":")[0] for m in batch]
    dlq.close()
    assert sorted(reasons) == ["future", "range", "range"]
    # A second engine replays the same records on restore (different group: from the start) without crashing.
    again = StreamRunner(settings.model_copy(update={"group_id": f"times2-{unique}"})).run(idle_timeout_s=5, max_seconds=180)
    assert again.by_reason == {"range": 2, "future": 1}

    tx = stream.tx.drop_duplicates(["transaction_id", "tx_us"])
    logged = read_table(settings.offline_path, TRANSACTIONS, key=["transaction_id"])
    assert set(logged["transaction_id"]) == set(tx["transaction_id"])  # every valid event, none of the bad ones
    last = tx.sort_values("tx_us").groupby("customer_id").tail(1)
    queries = last.assign(t_us=tx["tx_us"].max() + 2 * H_US)
    assert_same(served_vectors(store, queries), reference_vectors(stream.tx, stream.labels, queries), "served vectors")
