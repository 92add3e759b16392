"""The native online writer stores exactly the bytes Feast's own SQLite store writes (real Feast stores).

The Redis writer's counterpart lives in tests/integration/test_feature_store_redis.py (it needs a server).
"""

from __future__ import annotations

import random
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
from feature_repo.tiles import TILES_FEATURE, layout_for
from rtml_common.errors import ConfigurationError
from streaming.online import OnlineWriter
from streaming.online_native import entity_key_serializer, split_time, sqlite_event_ts, timestamp_proto_bytes, value_codec
from tests.unit.streaming.reference import engine_rows

TIMES = [0.0, 1.0, 0.5, 1522541276.5, 1522541276.25, 1522541276.0000004, 1522541276.0000005, 1522541276.0000015,
         1522541276.9999994, 1522541276.9999996, 1700000000.123456, 1764600000.001, 4102444800.9999, 1e-7, -1.5, -0.0000004]
# Lengths around every varint size boundary of the length prefix.
LENGTHS = [0, 1, 8, 127, 128, 300, 16383, 16384, (1 << 21) - 1, 1 << 21]


def test_bytes_codec_matches_protobuf_and_feast_value_text():
    rng = random.Random(3)
    codec, bytes_only = value_codec(ValueType.BYTES), value_codec(ValueType.BYTES, text=False)
    for n in LENGTHS:
        x = rng.randbytes(n)
        want = Value(bytes_val=x)
        assert codec(x) == (want.SerializeToString(), extract_text_and_num(want, False)[0]) == (want.SerializeToString(), None), n
        assert bytes_only(x) == want.SerializeToString(), n


def test_bytes_codec_rejects_what_protobuf_rejects():
    for bad in ("text", bytearray(b"ab"), 5):
        with pytest.raises(TypeError):
            Value(bytes_val=bad)
        for text in (True, False):
            with pytest.raises(TypeError):
                value_codec(ValueType.BYTES, text=text)(bad)
    assert value_codec(ValueType.BYTES, text=False)(None) == Value(bytes_val=None).SerializeToString() == b""  # unset


def test_other_types_go_through_protobuf():
    cases = [(ValueType.STRING, "string_val", "a'b"), (ValueType.BOOL, "bool_val", True), (ValueType.BOOL, "bool_val", False),
             (ValueType.INT64, "int64_val", -(1 << 63)), (ValueType.INT64, "int64_val", 16384), (ValueType.INT32, "int32_val", -5),
             (ValueType.DOUBLE, "double_val", 0.1), (ValueType.FLOAT, "float_val", 1e40), (ValueType.FLOAT, "float_val", 1 / 3)]
    for value_type, field, x in cases:
        want = Value(**{field: x})
        assert value_codec(value_type)(x) == (want.SerializeToString(), extract_text_and_num(want, False)[0]), x
        assert value_codec(value_type, text=False)(x) == want.SerializeToString(), x
    with pytest.raises(ValueError):
        value_codec(ValueType.INT64)(1 << 63)  # what protobuf raises
    with pytest.raises(ConfigurationError):
        value_codec(ValueType.UNIX_TIMESTAMP_LIST, "feature 'v:f'")


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


def random_rows(ids, t0: float, seed: int) -> list:
    """Rows of arbitrary bytes (lengths across varint boundaries) for ``ids``."""
    rng = random.Random(seed)
    return [(i, t0 + i * 0.37, [rng.randbytes(rng.choice(LENGTHS[:-2] + [rng.randrange(2000)]))]) for i in ids]


def _table(home, view):
    # A plain connection (no type detection): the raw column values and bytes as stored.
    with sqlite3.connect(home / "online.db") as conn:
        return conn.execute(f'SELECT rowid, * FROM "{PROJECT}_{view}" ORDER BY rowid').fetchall()


def _online(store, agg, ids) -> list:
    name = f"{agg.feature_view}__{TILES_FEATURE}"
    return store.get_online_features(features=[f"{agg.feature_view}:{TILES_FEATURE}"], entity_rows=[{agg.join_key: i} for i in ids],
                                     full_feature_names=True).to_dict()[name]


def test_sqlite_native_writer_stores_feast_bytes(tmp_path):
    feast_store = apply_definitions(FeatureStoreSettings(home=tmp_path / "feast"))
    native_store = apply_definitions(FeatureStoreSettings(home=tmp_path / "native"))
    via_feast, native = OnlineWriter(feast_store, mode="feast"), OnlineWriter(native_store)
    assert (via_feast.kind, native.kind) == ("feast", "native-sqlite")
    t0 = time.time() - 3600
    first = engine_rows(t0)
    assert {len(first[a.feature_view]) for a in AGGREGATIONS} == {40, 37}
    try:
        for writer in (via_feast, native):
            assert writer.write_now(first) == 77
        for agg in AGGREGATIONS:
            got, want = _table(tmp_path / "native", agg.feature_view), _table(tmp_path / "feast", agg.feature_view)
            assert len(got) == len(first[agg.feature_view]) and got == want

        # Newer values for some entities (overwrites) and new entities, in one batch of several statements.
        second = {agg.feature_view: random_rows(list(range(30, 201)) + [5], t0 + 600, k) for k, agg in enumerate(AGGREGATIONS)}
        for writer in (via_feast, native):
            assert writer.write_now(second) == 344
        # 172 entities a view: statements of 128, 32, 8 and 4 entities (powers of two, compiled once each)
        assert {k for _, k in native.native._sql} >= {128, 32, 8, 4}
        for agg in AGGREGATIONS:
            assert _table(tmp_path / "native", agg.feature_view) == _table(tmp_path / "feast", agg.feature_view)

        # Feast's reader reads the native rows: the newest bytes, which the layout decodes.
        for agg in AGGREGATIONS:
            ids = [1, 5, 29, 30, 36, 45, 200, 12345]
            got = _online(native_store, agg, ids)
            assert got == _online(feast_store, agg, ids)
            newest = {i: v[0] for rows in (first[agg.feature_view], second[agg.feature_view]) for i, _, v in rows}
            assert got == [newest.get(i) for i in ids]  # 12345: never written
            layout = layout_for(agg)
            assert layout.decode(got[ids.index(29)]).shape[1] == 1 + layout.width  # an engine row, never overwritten
    finally:
        via_feast.close()
        native.close()


def test_sqlite_native_writer_writes_nothing_of_a_bad_batch(tmp_path):
    store = apply_definitions(FeatureStoreSettings(home=tmp_path))
    writer = OnlineWriter(store)
    agg = AGGREGATIONS[0]
    good = random_rows(range(1, 4), time.time(), 1)
    try:
        with pytest.raises(TypeError):
            writer.write_now({agg.feature_view: good + [(4, time.time(), ["not bytes"])]})
        with pytest.raises(ValueError):
            writer.write_now({agg.feature_view: good + [(4, time.time(), [b"", b""])]})  # a row wider than the view
        assert _table(tmp_path, agg.feature_view) == []
        writer.write_now({agg.feature_view: good})  # the writer stays usable
        assert len(_table(tmp_path, agg.feature_view)) == 3
    finally:
        writer.close()


def test_writer_mode_is_checked(tmp_path):
    store = apply_definitions(FeatureStoreSettings(home=tmp_path))
    with pytest.raises(ConfigurationError):
        OnlineWriter(store, mode="fast")
