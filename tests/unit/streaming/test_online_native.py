"""The native online writer stores exactly the bytes Feast's own SQLite store writes (real Feast stores).

The Redis writer's counterpart lives in tests/integration/test_feature_store_redis.py (it needs a server).
"""

from __future__ import annotations

import math
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest
from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import extract_text_and_num
from feast.protos.feast.types.EntityKey_pb2 import EntityKey
from feast.protos.feast.types.Value_pb2 import Value
from feast.utils import to_naive_utc
from feast.value_type import ValueType
from google.protobuf.timestamp_pb2 import Timestamp

from feature_repo.aggregations import AGGREGATIONS
from feature_repo.store import PROJECT, FeatureStoreSettings, apply_definitions
from rtml_common.errors import ConfigurationError
from streaming.online import OnlineWriter
from streaming.online_native import entity_key_serializer, split_time, sqlite_event_ts, timestamp_proto_bytes, value_codec
from streaming.windows import plan_for

FLOATS = [0.0, -0.0, 1.0, 0.1, -123.456, 1 / 3, 1e-45, 1e-50, 16777217.0, 3.4028234e38, 3.4028235e38, 3.40282357e38,
          3.4028236e38, 1e40, -1e40, math.inf, -math.inf, math.nan, 7, "2.5"]
INTS = [0, 1, 127, 128, 300, 16383, 16384, (1 << 21) - 1, 1 << 21, (1 << 28) - 1, 1 << 28, (1 << 35) - 1, 1 << 35, 1 << 31,
        (1 << 63) - 1, -1, -300, -(1 << 63), 5.0, True]
TIMES = [0.0, 1.0, 0.5, 1522541276.5, 1522541276.25, 1522541276.0000004, 1522541276.0000005, 1522541276.0000015,
         1522541276.9999994, 1522541276.9999996, 1700000000.123456, 1764600000.001, 4102444800.9999, 1e-7, -1.5, -0.0000004]


def proto_of(value_type: ValueType, x) -> Value:
    field = {ValueType.FLOAT: ("float_val", float), ValueType.DOUBLE: ("double_val", float),
             ValueType.INT64: ("int64_val", int), ValueType.INT32: ("int32_val", int)}[value_type]
    return Value(**{field[0]: field[1](x)})


@pytest.mark.parametrize("value_type,values", [(ValueType.FLOAT, FLOATS), (ValueType.DOUBLE, FLOATS),
                                               (ValueType.INT64, INTS), (ValueType.INT32, [i for i in INTS if -(1 << 31) <= i < 1 << 31])])
def test_value_codec_matches_protobuf_and_feast_value_text(value_type, values):
    codec, bytes_only = value_codec(value_type), value_codec(value_type, text=False)
    for x in values:
        want = proto_of(value_type, x)
        assert codec(x) == (want.SerializeToString(), extract_text_and_num(want, False)[0]), x
        assert bytes_only(x) == want.SerializeToString(), x


def test_value_codec_rejects_what_protobuf_rejects():
    for value_type, bad in [(ValueType.INT64, 1 << 63), (ValueType.INT64, -(1 << 63) - 1), (ValueType.INT32, 1 << 31)]:
        with pytest.raises(ValueError):
            proto_of(value_type, bad)
        for text in (True, False):
            with pytest.raises(ValueError):
                value_codec(value_type, text=text)(bad)
    for text in (True, False):
        with pytest.raises(ValueError):
            value_codec(ValueType.FLOAT, text=text)("not a number")


def test_other_types_go_through_protobuf():
    for value_type, x in [(ValueType.STRING, "a'b"), (ValueType.BOOL, True), (ValueType.BOOL, False)]:
        field = "string_val" if value_type == ValueType.STRING else "bool_val"
        want = Value(**{field: x})
        assert value_codec(value_type)(x) == (want.SerializeToString(), extract_text_and_num(want, False)[0])
        assert value_codec(value_type, text=False)(x) == want.SerializeToString()


def test_times_match_datetime_timestamp_proto_and_feast_sqlite_event_ts():
    from feast.infra.online_stores import sqlite as feast_sqlite

    event_ts = sqlite_event_ts()
    for t in TIMES:
        dt = datetime.fromtimestamp(t, tz=timezone.utc)
        assert split_time(t) == ((dt - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(seconds=1), dt.microsecond), t
        ts = Timestamp()
        ts.FromDatetime(dt)
        assert timestamp_proto_bytes(t) == ts.SerializeToString(), t
        assert event_ts(t) == feast_sqlite.adapt_datetime_epoch(to_naive_utc(dt)), t


@pytest.mark.parametrize("key_type,ids", [(ValueType.INT64, [0, 1, -1, 255, 256, 1 << 40, (1 << 63) - 1, -(1 << 63), 7.0]),
                                          (ValueType.STRING, ["a", "customer-1", ""])])
def test_entity_keys_match_feast(key_type, ids):
    field = "int64_val" if key_type == ValueType.INT64 else "string_val"
    key_of = entity_key_serializer("customer_id", key_type, 3)
    for i in ids * 2:  # the second round hits the cache where there is one
        value = Value(**{field: int(i) if key_type == ValueType.INT64 else i})
        assert key_of(i) == serialize_entity_key(EntityKey(join_keys=["customer_id"], entity_values=[value]), 3), i


def _rows(agg, ids, t0, scale):
    names = plan_for(agg).names
    return [(i, t0 + i * 0.37, [(i * k * scale) % 50_000 if "_nb_tx_" in n else 0.1 * i * k * scale - 7.5 for k, n in enumerate(names)])
            for i in ids]


def _table(home, view):
    # A plain connection (no type detection): the raw column values and bytes as stored.
    with sqlite3.connect(home / "online.db") as conn:
        return conn.execute(f'SELECT rowid, * FROM "{PROJECT}_{view}" ORDER BY rowid').fetchall()


def _online(store, agg, ids):
    names = plan_for(agg).names
    got = store.get_online_features(features=[f"{agg.feature_view}:{n}" for n in names],
                                    entity_rows=[{agg.join_key: i} for i in ids]).to_dict()
    return {n: [("nan" if isinstance(v, float) and math.isnan(v) else v) for v in got[n]] for n in names}


def test_sqlite_native_writer_stores_feast_bytes(tmp_path):
    feast_store = apply_definitions(FeatureStoreSettings(home=tmp_path / "feast"))
    native_store = apply_definitions(FeatureStoreSettings(home=tmp_path / "native"))
    via_feast, native = OnlineWriter(feast_store, mode="feast"), OnlineWriter(native_store)
    assert (via_feast.kind, native.kind) == ("feast", "native-sqlite")
    t0 = time.time() - 3600  # recent: inside the views' TTL, so Feast's reads return the values
    edge = [0.0, -0.0, 3.4028236e38, 1e40, math.inf, math.nan]
    try:
        for writer in (via_feast, native):
            batch = {agg.feature_view: _rows(agg, range(1, 41), t0, 1) for agg in AGGREGATIONS}
            cust = AGGREGATIONS[0]
            batch[cust.feature_view].append((999, t0 + 0.9999996, [(1 << 40) + k if "_nb_tx_" in n else edge[k]
                                                                   for k, n in enumerate(plan_for(cust).names)]))
            assert writer.write_now(batch) == 2 * 40 + 1
        for agg in AGGREGATIONS:
            got, want = _table(tmp_path / "native", agg.feature_view), _table(tmp_path / "feast", agg.feature_view)
            assert len(got) == (41 if agg is AGGREGATIONS[0] else 40) * len(plan_for(agg).names)
            assert got == want

        # Newer values for some entities (overwrites) and new entities, in one batch of several statements.
        for writer in (via_feast, native):
            assert writer.write_now({agg.feature_view: _rows(agg, list(range(30, 201)) + [5], t0 + 600, 3) for agg in AGGREGATIONS}) == 344
        # 172 entities a view: statements of 128, 32, 8 and 4 entities (powers of two, compiled once each)
        assert {k for _, k in native.native._sql} >= {128, 32, 8, 4}
        for agg in AGGREGATIONS:
            assert _table(tmp_path / "native", agg.feature_view) == _table(tmp_path / "feast", agg.feature_view)

        # Feast's reader reads the native rows: the newest values, float32-rounded like Feast's own.
        for agg in AGGREGATIONS:
            ids = [1, 5, 29, 30, 45, 60, 150, 200, 999, 12345]
            got = _online(native_store, agg, ids)
            assert got == _online(feast_store, agg, ids)
            newest = {i: v for i, _, v in _rows(agg, range(1, 30), t0, 1) + _rows(agg, list(range(30, 201)) + [5], t0 + 600, 3)}
            for k, n in enumerate(plan_for(agg).names):
                for i, value in zip(ids, got[n]):
                    if i in newest:
                        assert value == pytest.approx(newest[i][k], rel=1e-6, abs=1e-6), (n, i)
                    elif i == 12345:
                        assert value is None  # never written
    finally:
        via_feast.close()
        native.close()


def test_sqlite_native_writer_writes_nothing_of_a_bad_batch(tmp_path):
    store = apply_definitions(FeatureStoreSettings(home=tmp_path))
    writer = OnlineWriter(store)
    agg = AGGREGATIONS[0]
    good = _rows(agg, range(1, 4), time.time(), 1)
    try:
        with pytest.raises(ValueError):
            writer.write_now({agg.feature_view: good + [(4, time.time(), ["not a number"] * len(good[0][2]))]})
        assert _table(tmp_path, agg.feature_view) == []
        writer.write_now({agg.feature_view: good})  # the writer stays usable
        assert len(_table(tmp_path, agg.feature_view)) == 3 * len(good[0][2])
    finally:
        writer.close()


def test_writer_mode_is_checked(tmp_path):
    store = apply_definitions(FeatureStoreSettings(home=tmp_path))
    with pytest.raises(ConfigurationError):
        OnlineWriter(store, mode="fast")
