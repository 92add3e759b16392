"""Native online-store writers: Feast's own storage layout, without Feast's per-row overhead.

Feast's ``online_write_batch`` builds a protobuf message per value, serializes the entity key
anew for every row and (SQLite) runs one ``execute`` per value. The writers here store the very
same bytes, laid out as Feast's ``SqliteOnlineStore`` and ``RedisOnlineStore`` lay them out, so
Feast's readers (``get_online_features``) read them unchanged:

* values: ``feast.types.Value`` protobuf messages; ``bytes_val`` (the engine's packed tiles,
  Feast type ``Bytes``) is framed here (tag, length, the bytes: what protobuf writes), every
  other type is built and serialized by protobuf with Feast's own conversion;
* entity keys: Feast's ``serialize_entity_key`` layout (see ``entity_key_serializer``);
* SQLite: multi-row upserts of up to 1,024 entities each (powers of two), one transaction per
  view and batch, on Feast's own connection;
* Redis: one buffer of ``HSET`` commands per batch (plus ``EXPIRE`` when Feast's config sets a key TTL),
  framed as RESP here and sent over one of the client's pooled connections; a cluster client
  gets them through its pipeline.

Unlike Feast's default Redis path there is no read of the stored timestamp before a write: the
engine stamps each entity's rows strictly increasing in time (``FeatureEngine.drain_online_values``).
The one difference it leaves: after a restart, rows replayed from the last Kafka commit are
written again (with their original, older stamps) where Feast would skip them, until the replay
catches up; Feast's SQLite path overwrites unconditionally too.
Stores or options these writers do not reproduce byte for byte make ``native_writer`` return
``None``, and the caller keeps Feast's provider path.
"""

from __future__ import annotations

import sqlite3
import struct
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from feast.infra.key_encoding_utils import serialize_entity_key
from feast.infra.online_stores.helpers import _mmh3, compute_table_id, compute_versioned_name, extract_text_and_num
from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE
from feast.value_type import ValueType
from redis import Redis

from rtml_common.errors import ConfigurationError

Rows = list[tuple[Any, float, list]]  # (entity id, stamp in epoch seconds, feature values in the view's order)
Codec = Callable[[object], tuple[bytes, str | None]]  # python value -> (Value proto bytes, Feast's SQLite value_text)
BytesCodec = Callable[[object], bytes]  # python value -> Value proto bytes

KEY_CACHE_MAX = 1 << 20  # entity keys cached per view where Feast serializes them; starts over beyond (bounded memory)
_UTC = timezone.utc
_U64 = (1 << 64) - 1


def _tag(field: str, wire_type: int) -> int:
    return ValueProto.DESCRIPTOR.fields_by_name[field].number << 3 | wire_type


def _varint(n: int) -> bytes:
    """Protobuf base-128 varint of ``n`` >= 0; unrolled up to 5 bytes (timestamps, nanos, lengths)."""
    if n < 1 << 14:
        return bytes((n,)) if n < 0x80 else bytes((n & 0x7F | 0x80, n >> 7))
    if n < 1 << 21:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    if n < 1 << 28:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21))
    if n < 1 << 35:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14 & 0x7F | 0x80, n >> 21 & 0x7F | 0x80, n >> 28))
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _proto_codec(value_type: ValueType, what: str, text: bool) -> Codec | BytesCodec:
    """Any type: Feast's own conversion, serialized by protobuf (value_text as Feast's SQLite store computes it)."""
    try:
        field, convert, _ = PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE[value_type]
    except KeyError:
        raise ConfigurationError(f"{what} has type {value_type.name}, which the streaming engine cannot write") from None

    def codec(x):
        val = ValueProto(**{field: convert(x)})
        return (val.SerializeToString(), extract_text_and_num(val, False)[0]) if text else val.SerializeToString()

    return codec


def _bytes_codec(what: str, text: bool) -> Codec | BytesCodec:
    """``bytes_val``: tag, varint length, the bytes (a oneof member is on the wire even when empty);
    Feast's SQLite store keeps no value_text for bytes. Anything but ``bytes`` goes through protobuf,
    which raises as Feast's writer would."""
    tag = bytes([_tag("bytes_val", 2)])
    other = _proto_codec(ValueType.BYTES, what, text)

    def codec(x):
        if x.__class__ is not bytes:
            return other(x)
        b = tag + _varint(len(x)) + x
        return (b, None) if text else b

    return codec


def value_codec(value_type: ValueType, what: str = "value", text: bool = True) -> Codec | BytesCodec:
    """The encoder of one feature type: python value -> serialized ``Value`` proto, paired with
    Feast's SQLite ``value_text`` of it when ``text`` (Redis stores no text)."""
    if value_type == ValueType.BYTES:
        return _bytes_codec(what, text)
    return _proto_codec(value_type, what, text)


def split_time(t: float) -> tuple[int, int]:
    """(seconds, microseconds) of epoch time ``t`` exactly as ``datetime.fromtimestamp`` rounds it:
    CPython splits with modf and rounds the fraction's microseconds half to even, carrying into seconds."""
    s = int(t)
    us = round((t - s) * 1e6)
    if us >= 1_000_000:
        return s + 1, us - 1_000_000
    if us < 0:
        return s - 1, us + 1_000_000
    return s, us


def timestamp_proto_bytes(t: float) -> bytes:
    """``google.protobuf.Timestamp`` bytes of epoch time ``t``, as Feast's Redis store serializes
    ``Timestamp.FromDatetime(datetime.fromtimestamp(t, timezone.utc))`` (zero fields are not on the wire)."""
    seconds, micros = split_time(t)
    out = b"\x08" + _varint(seconds & _U64) if seconds else b""
    if micros:
        out += b"\x10" + _varint(micros * 1000)
    return out


def sqlite_event_ts() -> Callable[[float], object]:
    """What Feast's SQLite store puts in ``event_ts`` for epoch time ``t``: its naive UTC datetime through
    the ``datetime`` adapter registered with ``sqlite3``. Feast registers epoch seconds,
    ``int(naive.timestamp())``, which reads the naive time as local time; with the local zone UTC that
    is the whole seconds, computed here without building a datetime (checked against the adapter)."""
    from feast.infra.online_stores import sqlite as feast_sqlite  # imported with the SQLite store: registers the adapters

    adapt = sqlite3.adapters.get((datetime, sqlite3.PrepareProtocol))

    def exact(t: float):
        naive = datetime.fromtimestamp(t, tz=_UTC).replace(tzinfo=None)
        return adapt(naive) if adapt is not None else naive

    if adapt is not feast_sqlite.adapt_datetime_epoch or time.timezone or time.altzone or time.daylight:
        return exact

    def fast(t: float):
        s = split_time(t)[0]
        return s if 0 <= s < 1 << 32 else exact(t)  # int() truncates negatives towards zero; far future loses precision

    probes = (0.0, 1.0, 1522541276.5, 1522541276.9999996, 1700000000.0000004, 4294967295.999, -1.5)
    return fast if all(fast(t) == exact(t) for t in probes) else exact


@dataclass(frozen=True)
class ViewSpec:
    """What a native writer needs of one feature view: the view, its join key and feature types in row order."""

    view: Any  # feast FeatureView, as the registry returns it (its projection names the table)
    join_key: str
    key_type: ValueType
    features: list[tuple[str, ValueType]]


def entity_key_serializer(join_key: str, key_type: ValueType, version: int) -> Callable[[object], bytes]:
    """Feast's ``serialize_entity_key`` of a one-column entity key, by entity id.

    INT64 keys (the repo's) are a constant prefix and the id's 8 little-endian bytes: built so,
    once the layout is checked against Feast's serializer at start-up (~50x cheaper than Feast's,
    which also made first writes of new entities slow). Other keys: Feast's serializer, cached.
    """
    field, convert, _ = PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE[key_type]

    def feast_key(entity_id) -> bytes:
        value = ValueProto(**{field: convert(entity_id)})
        return serialize_entity_key(EntityKeyProto(join_keys=[join_key], entity_values=[value]),
                                    entity_key_serialization_version=version)

    if key_type == ValueType.INT64:
        prefix, pack = feast_key(0)[:-8], struct.Struct("<q").pack

        def from_template(entity_id) -> bytes:
            try:
                return prefix + pack(int(entity_id))
            except struct.error:
                raise ValueError(f"Value out of range: {entity_id}") from None  # what protobuf raises

        if all(from_template(i) == feast_key(i) for i in (0, 1, -1, 255, 1 << 31, (1 << 63) - 1, -(1 << 63))):
            return from_template

    cache: dict = {}

    def cached(entity_id) -> bytes:
        key = cache.get(entity_id)
        if key is None:
            key = feast_key(entity_id)
            if len(cache) >= KEY_CACHE_MAX:
                cache.clear()
            cache[entity_id] = key
        return key

    return cached


class _ViewCodec:
    def __init__(self, spec: ViewSpec, version: int, text: bool):
        self.keys = entity_key_serializer(spec.join_key, spec.key_type, version)
        self.codecs = [value_codec(t, f"feature '{spec.view.name}:{n}'", text) for n, t in spec.features]


def _sql_text(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


class SqliteNativeWriter:
    """Writes rows into Feast's SQLite online store tables exactly as ``SqliteOnlineStore.online_write_batch``.

    Columns ``entity_key, feature_name, value, value_text, event_ts, created_ts``; ``event_ts`` goes
    through the ``datetime`` adapter Feast registers with ``sqlite3`` (naive UTC in, stored as Feast stores it).
    Feast runs one upsert per feature value; here one multi-row upsert covers all features of up to
    ``chunk`` entities (a power of two, at most 1,024), in the same order (so even rowids match),
    with each entity key and timestamp bound once and the feature names as literals.
    """

    kind = "native-sqlite"

    def __init__(self, online_store, config, specs: dict[str, ViewSpec]):
        self.conn = online_store._get_conn(config)  # Feast's own connection, the one its reads use
        versioning = config.registry.enable_online_feature_view_versioning
        self.views = {name: _ViewCodec(s, config.entity_key_serialization_version, True) for name, s in specs.items()}
        self.tables = {name: (compute_table_id(config.project, s.view, versioning).replace('"', '""'), s.features)
                       for name, s in specs.items()}
        # Bound variables per entity: its key, its timestamp, and (value, value_text) per feature.
        self.per_entity = {name: 2 + 2 * len(s.features) for name, s in specs.items()}
        limit = self.conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if hasattr(self.conn, "getlimit") else _MAX_SQL_VARIABLES
        self.chunk = {name: _largest_power_of_two(min(_MAX_CHUNK_ENTITIES, max(1, limit // k))) for name, k in self.per_entity.items()}
        self._sql: dict[tuple[str, int], str] = {}  # (view, entities) -> statement
        self._event_ts = sqlite_event_ts()

    def _statement(self, view: str, entities: int) -> str:
        sql = self._sql.get((view, entities))
        if sql is None:
            table, features = self.tables[view]
            sql = self._sql[(view, entities)] = _upsert_sql(table, features, self.per_entity[view], entities)
        return sql

    def write(self, view: str, rows: Rows) -> None:
        vc = self.views[view]
        key_of, codecs, event_ts = vc.keys, vc.codecs, self._event_ts
        params: list = []
        width = len(codecs)
        for entity_id, t, values in rows:
            if len(values) != width:  # the statement binds one (value, value_text) pair per feature of the view
                raise ValueError(f"a row of entity {entity_id!r} has {len(values)} values for {width} features")
            params.append(key_of(entity_id))
            params.append(event_ts(t))
            for codec, v in zip(codecs, values):
                params += codec(v)
        # Few statements per write, not one per entity: sqlite3 lets go of the GIL for every
        # statement it steps, and winning it back from the busy consume loop costs up to a switch
        # interval (5 ms) each time, which made a 4,000-row write take a second. Chunks are powers
        # of two (the largest that fit, then the remainder's bits), so a handful of statements
        # are ever compiled and all of them stay in sqlite3's statement cache.
        n, chunk, per_entity = len(rows), self.chunk[view], self.per_entity[view]
        with self.conn:  # one transaction: committed on success, rolled back on error
            start = 0
            while start < n:
                k = min(chunk, _largest_power_of_two(n - start))
                self.conn.execute(self._statement(view, k), params[start * per_entity:(start + k) * per_entity])
                start += k


# SQLite's default limit on bound variables before 3.32 (later versions allow 32766; Python 3.11+ can ask).
_MAX_SQL_VARIABLES = 999
_MAX_CHUNK_ENTITIES = 1024  # entities per statement: SQL text of one value group per feature and entity, compiled once per size


def _largest_power_of_two(n: int) -> int:
    return 1 << (n.bit_length() - 1)


def _upsert_sql(table: str, features, per_entity: int, entities: int) -> str:
    """A multi-row upsert of ``entities`` entities, each one row per feature, in Feast's column order."""
    groups = []
    for e in range(entities):
        base = e * per_entity
        groups.extend(f"(?{base + 1}, {_sql_text(n)}, ?{base + 3 + 2 * i}, ?{base + 4 + 2 * i}, ?{base + 2}, NULL)"
                      for i, (n, _) in enumerate(features))
    return (f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, created_ts) VALUES {", ".join(groups)} '
            "ON CONFLICT(entity_key, feature_name) DO UPDATE SET value = excluded.value, "
            "value_text = excluded.value_text, event_ts = excluded.event_ts, created_ts = excluded.created_ts;")


class RedisNativeWriter:
    """Writes rows into Feast's Redis online store as ``RedisOnlineStore.online_write_batch`` lays them out.

    One hash per entity: key = serialized entity key + project, fields ``mmh3("<view>:<feature>")``
    -> ``Value`` proto and ``_ts:<view>`` -> ``Timestamp`` proto; ``EXPIRE`` when ``key_ttl_seconds`` is set.
    """

    kind = "native-redis"

    def __init__(self, online_store, config, specs: dict[str, ViewSpec]):
        self.client = online_store._get_client(config.online_store)  # Feast's own client (redis, cluster or sentinel)
        self.ttl = config.online_store.key_ttl_seconds
        self.project = config.project.encode("utf-8")
        versioning = config.registry.enable_online_feature_view_versioning
        self.views = {name: _ViewCodec(s, config.entity_key_serialization_version, False) for name, s in specs.items()}
        self.fields = {}
        for name, s in specs.items():
            fv = compute_versioned_name(s.view, versioning)
            self.fields[name] = (f"_ts:{fv}".encode("utf-8"), [_mmh3(f"{fv}:{n}") for n, _ in s.features])
        # A single-node client (plain or sentinel) gets the commands as one buffer of RESP, framed here
        # with the constant parts (command, field names) encoded once per view: redis-py's pipeline
        # spends more per HSET than framing it does. Cluster clients keep the pipeline.
        self._pool = getattr(self.client, "connection_pool", None) if isinstance(self.client, Redis) else None
        self._frames = {name: (b"*%d\r\n$4\r\nHSET\r\n" % (4 + 2 * len(fields)), _bulk(ts_field), [_bulk(f) for f in fields])
                        for name, (ts_field, fields) in self.fields.items()}
        self._expire = (b"*3\r\n$6\r\nEXPIRE\r\n", _bulk(str(self.ttl).encode())) if self.ttl else None

    def _frame(self, view: str, rows: Rows) -> bytes:
        """The batch's commands as one RESP buffer (every value encoded before anything is sent)."""
        vc = self.views[view]
        key_of, codecs, project, expire = vc.keys, vc.codecs, self.project, self._expire
        head, ts_field, fields = self._frames[view]
        width = len(fields)
        parts: list[bytes] = []
        add = parts.append
        for entity_id, t, values in rows:
            if len(values) != width:  # HSET's argument count is framed from the view, not the row
                raise ValueError(f"a row of entity {entity_id!r} has {len(values)} values for {width} features")
            key = _bulk(key_of(entity_id) + project)
            add(head)
            add(key)
            add(ts_field)
            add(_bulk(timestamp_proto_bytes(t)))
            for f, codec, v in zip(fields, codecs, values):
                add(f)
                add(_bulk(codec(v)))
            if expire is not None:  # EXPIRE <key> <ttl>
                add(expire[0])
                add(key)
                add(expire[1])
        return b"".join(parts)

    def _write_direct(self, view: str, rows: Rows) -> None:
        # Encoded before anything is sent: a bad value fails the batch without writing part of it.
        data = self._frame(view, rows)
        replies = len(rows) * (1 if self._expire is None else 2)
        conn = self._pool.get_connection()
        try:
            conn.send_packed_command([data])
            for _ in range(replies):
                conn.read_response()  # raises the first error reply
        except BaseException:
            conn.disconnect()  # replies may be left unread: never hand this connection out again as is
            raise
        finally:
            self._pool.release(conn)

    def write(self, view: str, rows: Rows) -> None:
        if self._pool is not None:
            self._write_direct(view, rows)
            return
        vc = self.views[view]
        key_of, codecs, project, ttl = vc.keys, vc.codecs, self.project, self.ttl
        ts_field, fields = self.fields[view]
        commands = []
        for entity_id, t, values in rows:
            args = [key_of(entity_id) + project, ts_field, timestamp_proto_bytes(t)]
            for f, codec, v in zip(fields, codecs, values):
                args += (f, codec(v))
            commands.append(args)
        # Encoded before the pipeline starts: a bad value fails the batch without writing part of it.
        with self.client.pipeline(transaction=False) as pipe:
            for args in commands:
                pipe.execute_command("HSET", *args)
                if ttl:
                    pipe.execute_command("EXPIRE", args[0], ttl)
            pipe.execute()


def _bulk(b: bytes) -> bytes:
    """A RESP bulk string."""
    return b"$%d\r\n%b\r\n" % (len(b), b)


def native_writer(provider, config, specs: dict[str, ViewSpec]) -> SqliteNativeWriter | RedisNativeWriter | None:
    """A native writer for the provider's online store, or ``None`` where Feast's own path must write."""
    online = getattr(provider, "online_store", None)
    kind = type(online).__name__
    oc = config.online_store
    if kind == "SqliteOnlineStore":
        # Vector columns and value_num (OpenAI-compatible store) change the row layout: left to Feast.
        if getattr(oc, "vector_enabled", False) or getattr(oc, "enable_openai_compatible_store", False):
            return None
        return SqliteNativeWriter(online, config, specs)
    if kind == "RedisOnlineStore":
        return RedisNativeWriter(online, config, specs)
    return None
