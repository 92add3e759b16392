"""The processing topology read from the feature repo: which topic feeds which aggregation."""

from __future__ import annotations

import pytest

from feature_repo.aggregations import AGGREGATIONS, TERMINAL_RISK
from feature_repo.sources import FRAUD_LABELS, PREDICTIONS, SOURCES, TRANSACTIONS
from rtml_common.errors import ConfigurationError
from streaming.engine import FeatureEngine
from streaming.topology import build_topology, check_copartitioned, repartition_partitions


def test_terminal_windows_read_a_repartition_topic_keyed_by_terminal():
    topo = build_topology(SOURCES, AGGREGATIONS, topic=lambda t: "p-" + t)
    assert set(topo) == {"p-transactions", "p-fraud-labels", "p-predictions", "p-rtml-transactions-by-terminal_id"}
    tx = topo["p-transactions"]
    assert tx.is_source and tx.views == ("customer_spending",)
    assert [(f.topic, f.key_field) for f in tx.forwards] == [("p-rtml-transactions-by-terminal_id", "terminal_id")]
    rekeyed = topo["p-rtml-transactions-by-terminal_id"]
    assert not rekeyed.is_source and rekeyed.views == ("terminal_risk",) and rekeyed.source is TRANSACTIONS
    # Labels are keyed by terminal already: read directly, co-partitioned with the repartition topic.
    assert topo["p-fraud-labels"].views == ("terminal_risk",) and not topo["p-fraud-labels"].forwards
    assert topo["p-predictions"].views == () and not topo["p-predictions"].stateful


def test_without_repartition_every_aggregation_reads_its_sources_directly():
    topo = build_topology(SOURCES, AGGREGATIONS, repartition=False)
    assert set(topo) == {"transactions", "fraud-labels", "predictions"}
    assert topo["transactions"].views == ("customer_spending", "terminal_risk")


def test_repartition_topic_takes_the_partition_count_of_the_topics_it_joins():
    topo = build_topology(SOURCES, AGGREGATIONS)
    counts = {"transactions": 4, "fraud-labels": 6, "predictions": 2}
    assert repartition_partitions(topo, counts, default=3) == {"rtml-transactions-by-terminal_id": 6}
    check_copartitioned(topo, {**counts, "rtml-transactions-by-terminal_id": 6})
    with pytest.raises(ConfigurationError, match="terminal_risk"):
        check_copartitioned(topo, {**counts, "rtml-transactions-by-terminal_id": 4})


def test_engine_fed_by_topology_streams_logs_raw_events_once_and_splits_the_views():
    topo = build_topology(SOURCES, AGGREGATIONS)
    engine = FeatureEngine(streams=topo.values())
    event = {"transaction_id": 1, "tx_datetime": 1_000_000.0, "customer_id": 7, "terminal_id": 9, "tx_amount": 12.5}
    assert set(engine.apply("transactions", dict(event))) == {"transactions"}  # the raw log only
    assert set(engine.state["customer_spending"]) == {7} and not engine.state["terminal_risk"]
    assert engine.apply("transactions@terminal_id", dict(event)) == {}  # no second raw row
    assert set(engine.state["terminal_risk"]) == {9}
    label = {"transaction_id": 1, "tx_datetime": 1_000_000.0, "customer_id": 7, "terminal_id": 9, "tx_fraud": 1,
             "label_datetime": 1_000_000.0 + 7 * 86400}
    assert set(engine.apply("fraud_labels", label)) == {"fraud_labels"}
    drained = engine.drain_online_values()
    assert [r[0] for r in drained["customer_spending"]] == [7]
    # The terminal row is stamped when its label became known (after the transaction).
    assert [r[:2] for r in drained["terminal_risk"]] == [(9, label["label_datetime"])]
    engine.reset()
    assert engine.entity_count() == 0 and engine.pending_online() == 0


def test_a_source_lacking_the_join_key_is_a_configuration_error():
    no_terminal = type(PREDICTIONS)(name="tx_light", topic="tx-light", fields=TRANSACTIONS.fields[:3] + TRANSACTIONS.fields[4:],
                                    event_time="tx_datetime", key_field="customer_id")
    agg = type(TERMINAL_RISK)(**{**TERMINAL_RISK.__dict__,
                                 "inputs": (type(TERMINAL_RISK.inputs[0])("tx_light", "event"), TERMINAL_RISK.inputs[1])})
    with pytest.raises(ConfigurationError, match="terminal_id"):
        build_topology([no_terminal, FRAUD_LABELS], [agg])


def test_an_event_applied_at_its_source_makes_its_rekeyed_copy_a_replay():
    """The runner's repartition shortcut: same offline rows and online tiles, the copy changes nothing."""
    topo = build_topology(SOURCES, AGGREGATIONS)
    shortcut, plain = FeatureEngine(streams=topo.values()), FeatureEngine(streams=topo.values())
    events = [{"transaction_id": i, "tx_datetime": 1_000_000.0 + 600 * i, "customer_id": 7 + i % 2, "terminal_id": 9,
               "tx_amount": 10.0 * (i + 1)} for i in range(4)]
    rows_shortcut: dict = {}
    rows_plain: dict = {}
    for event in events:
        shortcut.apply("transactions", dict(event), rows_shortcut)
        shortcut.apply("transactions@terminal_id", dict(event), rows_shortcut)  # applied at its source
        assert shortcut.changed
        plain.apply("transactions", dict(event), rows_plain)
    for event in events:  # the copies, back from the repartition topic
        shortcut.apply("transactions@terminal_id", dict(event), rows_shortcut)
        assert not shortcut.changed
        plain.apply("transactions@terminal_id", dict(event), rows_plain)
        assert plain.changed
    assert rows_shortcut == rows_plain and len(rows_plain["transactions"]) == 4
    assert shortcut.drain_online_values() == plain.drain_online_values()
