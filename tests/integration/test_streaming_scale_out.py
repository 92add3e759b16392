"""Scale-out: engine processes in one consumer group share 4 partitions; rebalances move state.

Two processes start; one is killed with SIGKILL mid-stream, a third joins later, so partitions
move twice while events keep arriving. The online tiles (Redis, as on Kubernetes) must end
giving exactly the naive windows of the events produced, with every source record committed once.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from feature_repo.store import apply_definitions
from rtml.simulator import generate_transactions, produce_events, to_events
from rtml_common.kafka import partition_counts
from tests.integration.group_offsets import group_lag
from streaming.settings import StreamingSettings
from streaming.topology import build_topology
from feature_repo.aggregations import AGGREGATIONS
from feature_repo.sources import SOURCES
from tests.integration.test_streaming_engine import assert_converged

pytestmark = pytest.mark.integration


def test_two_processes_share_four_partitions_and_rebalances_move_state(tmp_path, kafka_broker, redis_server, unique):
    data = generate_transactions(n_customers=150, n_terminals=300, n_days=45, start_date="2018-04-01", radius=12.0, seed=11)
    for col in ("CUSTOMER_ID", "TERMINAL_ID", "TRANSACTION_ID"):
        data[col] = data[col] + 40_000_000  # entities no other test writing to the shared Redis uses
    group = f"scale-{unique}"
    settings = StreamingSettings(home=tmp_path, kafka_bootstrap=kafka_broker.bootstrap, group_id=group,
                                 topic_prefix=f"{unique}-", metrics_port=0, partitions=4,
                                 redis_connection=redis_server.connection)
    apply_definitions(settings)
    env = dict(os.environ, RTML_HOME=str(tmp_path), RTML_KAFKA_BOOTSTRAP=kafka_broker.bootstrap, RTML_GROUP_ID=group,
               RTML_TOPIC_PREFIX=settings.topic_prefix, RTML_METRICS_PORT="0", RTML_PARTITIONS="4",
               RTML_REDIS_CONNECTION=redis_server.connection, RTML_OFFLINE_FLUSH_S="0.3", RTML_MAX_BATCH_RECORDS="200")
    events = list(to_events(data))
    topology = build_topology(SOURCES, AGGREGATIONS, settings.topic)
    sources = [t for t, s in topology.items() if s.is_source and s.stateful]

    procs: list[subprocess.Popen] = []

    def start(name: str) -> tuple[subprocess.Popen, str]:
        log = str(tmp_path / f"{name}.log")
        with open(log, "wb") as out:
            procs.append(subprocess.Popen([sys.executable, "-m", "streaming"], env=env, stdout=out, stderr=subprocess.STDOUT))
        return procs[-1], log

    def wait_for(what: str, check, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            assert all(p.poll() is None for p in procs if p is not a), f"an engine process died while waiting for {what}"
            time.sleep(0.5)

    def assigned(log: str) -> bool:
        return "rebuilt state from" in open(log).read()  # logged once an assignment's state is restored

    half = len(events) // 2
    first = threading.Thread(target=produce_events, args=(settings, events[:half]), kwargs={"rate": 1000})
    try:
        a, a_log = start("a")
        b, b_log = start("b")
        wait_for("both processes to join", lambda: assigned(a_log) and assigned(b_log))
        first.start()
        wait_for("a quarter of the stream to be committed",
                 lambda: sum(group_lag(settings, group, sources)[1].values()) > len(events) // 4)
        a.send_signal(signal.SIGKILL)  # mid-stream, with uncommitted work
        a.wait(timeout=10)
        first.join(timeout=180)
        c, c_log = start("c")  # partitions move again: state of the moved ones must come along
        wait_for("the third process to get partitions", lambda: assigned(c_log))
        produce_events(settings, events[half:], rate=1000)  # the rest of the stream, shared by b and c
        assert partition_counts(settings, list(topology)) == {t: 4 for t in topology}
        lag, committed = None, {}

        def drained() -> bool:
            nonlocal lag, committed
            lag, committed = group_lag(settings, group, list(topology))
            return lag == 0

        wait_for("every record to be committed", drained)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert sum(committed[t] for t in sources) == len(events)  # each source record committed exactly once

    logs = {name: open(path).read() for name, path in (("b", b_log), ("c", c_log))}
    for name, text in logs.items():
        assert b.returncode == 0 and c.returncode == 0, text[-2000:]
    # Assignments after the kill rebuilt state from what another process had processed and committed (its changelog).
    rebuilt = [int(n) for text in logs.values() for n in re.findall(r"rebuilt state from (\d+) changelog records", text)]
    assert max(rebuilt) > 0, logs
    consumed = [int(n) for text in logs.values() for n in re.findall(r"consumed=(\d+)", text)]
    assert len(consumed) == 2 and min(consumed) > 0  # both survivors did part of the work

    store = apply_definitions(settings)
    assert_converged(store, data)
