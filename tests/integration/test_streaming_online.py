"""The engine's online writer stores exactly what Feast's own ``write_to_online_store`` stores (real SQLite store)."""

from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd
import pytest
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value

from feature_repo.aggregations import AGGREGATIONS
from feature_repo.store import FeatureStoreSettings, apply_definitions
from feature_repo.tiles import TILES_FEATURE
from streaming.online import OnlineWriter
from tests.unit.streaming.reference import engine_rows

pytestmark = pytest.mark.integration


def stored(store, agg, ids):
    view = store.get_feature_view(agg.feature_view)
    keys = [EntityKey(join_keys=[agg.join_key], entity_values=[Value(int64_val=i)]) for i in ids]
    return store._get_provider().online_read(store.config, view, keys)


def test_writer_matches_write_to_online_store(tmp_path):
    ours = apply_definitions(FeatureStoreSettings(home=tmp_path / "ours"))
    feast = apply_definitions(FeatureStoreSettings(home=tmp_path / "feast"))
    heard = []
    writer = OnlineWriter(ours, listener=lambda at, stamps: heard.append(stamps))
    t = 1522541276.5
    drained = engine_rows(t)  # real packed tiles of 40 customers and 37 terminals
    try:
        for agg in AGGREGATIONS:
            rows = drained[agg.feature_view]
            writer.submit({agg.feature_view: rows}, [123])
            writer.wait()
            df = pd.DataFrame([{TILES_FEATURE: v[0], agg.join_key: i, "event_timestamp": datetime.fromtimestamp(ts, tz=timezone.utc)}
                               for i, ts, v in rows])
            feast.write_to_online_store(agg.feature_view, df)
            ids = sorted(i for i, _, _ in rows)
            got, want = stored(ours, agg, ids), stored(feast, agg, ids)
            assert got == want and all(ts is not None for ts, _ in got)
    finally:
        writer.close()
    assert heard == [[123], [123]]


def test_writer_error_reaches_the_caller(tmp_path):
    store = apply_definitions(FeatureStoreSettings(home=tmp_path))
    writer = OnlineWriter(store)
    try:
        writer.submit({"customer_spending": [(1, 0.0, ["not bytes"])]}, [])
        with pytest.raises(TypeError):
            writer.wait()
        writer.wait()  # reported once; the writer stays usable
    finally:
        writer.close()


def test_wait_for_a_ticket_returns_once_that_write_is_stored(tmp_path):
    """A checkpoint waits for the write that covers its snapshot, not for writes submitted after it."""
    store = apply_definitions(FeatureStoreSettings(home=tmp_path))
    agg = AGGREGATIONS[0]
    writer = OnlineWriter(store)
    try:
        tickets = [writer.submit({agg.feature_view: [(i, 1522541276.0, [b"tiles %d" % i])]}, []) for i in (1, 2)]
        assert tickets == [1, 2] and writer.last_ticket == 2
        writer.wait(tickets[0])
        assert stored(store, agg, [1])[0][1] is not None  # the first write is in the store
        writer.wait()  # every write so far
        assert all(values is not None for _, values in stored(store, agg, [1, 2]))
    finally:
        writer.close()
