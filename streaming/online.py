"""Writing the engine's online rows to the Feast online store, off the consume loop.

A row is one entity's packed tiles (``FeatureEngine.drain_online_values``): the ``tiles`` feature
(Feast type ``Bytes``) of the aggregation's feature view. By default rows go through a native
writer (``streaming.online_native``) that stores, in Feast's own SQLite or Redis layout, the very
bytes Feast's ``online_write_batch`` stores, at a fraction of its cost per row; Feast's readers
read them unchanged. Other online stores, and ``mode="feast"``, use Feast's provider API
(``Provider.online_write_batch``: the call that ``FeatureStore.write_to_online_store`` ends in)
with Feast protos built with Feast's own type table, which skips only the pandas -> arrow ->
proto detour of a DataFrame per batch.

The write runs on one background thread: SQLite and Redis clients release the GIL while
they wait, so the consume loop keeps decoding and folding events meanwhile. At most one
write is in flight; the poll loop coalesces touched entities until the writer is free
(``streaming.online_schedule``).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Callable, Literal

from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE

from feature_repo.aggregations import AGGREGATIONS, EntityAggregation
from rtml_common.errors import ConfigurationError
from streaming.engine import ONLINE_FEATURES
from streaming.online_native import Rows, ViewSpec, native_writer

WriteListener = Callable[[float, list[int]], None]


def _value_maker(value_type, what: str) -> Callable[[object], ValueProto]:
    try:
        field, convert, _ = PYTHON_SCALAR_VALUE_TYPE_TO_PROTO_VALUE[value_type]
    except KeyError:
        raise ConfigurationError(f"{what} has type {value_type.name}, which the streaming engine cannot write") from None
    return lambda x: ValueProto(**{field: convert(x)})


class _ViewEncoder:
    """Turns one feature view's engine rows into Feast's online-write tuples."""

    def __init__(self, store, agg: EntityAggregation):
        self.view = store.get_feature_view(agg.feature_view)
        names = ONLINE_FEATURES
        dtypes = {f.name: f.dtype.to_value_type() for f in self.view.features}
        missing = [n for n in names if n not in dtypes]
        if missing:
            raise ConfigurationError(f"feature view '{agg.feature_view}' lacks features {missing} that the engine writes "
                                     "(a registry applied from another version of the feature repo?)")
        self.features = [(n, _value_maker(dtypes[n], f"feature '{agg.feature_view}:{n}'")) for n in names]
        keys = {c.name: c.dtype.to_value_type() for c in self.view.entity_columns}
        if list(keys) != [agg.join_key]:
            raise ConfigurationError(f"feature view '{agg.feature_view}' has join keys {list(keys)}, expected ['{agg.join_key}']")
        self.join_keys = [agg.join_key]
        self.key_value = _value_maker(keys[agg.join_key], f"join key '{agg.join_key}'")
        self.spec = ViewSpec(self.view, agg.join_key, keys[agg.join_key], [(n, dtypes[n]) for n in names])

    def encode(self, rows: Rows) -> list:
        features, join_keys, key_value, utc = self.features, self.join_keys, self.key_value, timezone.utc
        out = []
        for entity_id, t, values in rows:
            key = EntityKeyProto(join_keys=join_keys, entity_values=[key_value(entity_id)])
            out.append((key, {name: make(v) for (name, make), v in zip(features, values)},
                        datetime.fromtimestamp(t, tz=utc), None))
        return out


def _tune_sqlite(provider, config) -> None:
    """WAL journal for Feast's local SQLite store: a write commits without fsyncs of a rollback
    journal (seconds on a busy disk), and readers no longer block the writer. A 64 MiB page cache
    (allocated as used) instead of 2 MiB: entity keys spread evenly over the key indexes, so a batch
    touches pages all over them; with 10k entities of 6 scalar features (15 MB) the larger cache
    halved the CPU time of the upserts. Redis: nothing to do."""
    online = getattr(provider, "online_store", None)
    if type(online).__name__ == "SqliteOnlineStore":
        conn = online._get_conn(config)  # Feast's own connection, the one its writes and reads use
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA cache_size=-65536")


class OnlineWriter:
    """Background writer of drained engine rows into the online store; one write in flight at most.

    ``submit`` hands over a batch (waiting for the previous one first) and returns its ticket,
    ``busy`` says whether a write is running, ``wait(ticket)`` blocks until that write (default:
    everything submitted) is stored and re-raises a failed write's error.
    ``listener(done_at, record_timestamps_ms)`` hears each finished write.
    ``mode`` ``native`` writes Feast's layout directly where ``streaming.online_native`` knows the
    store (SQLite, Redis) and through Feast elsewhere; ``feast`` always writes through Feast.
    ``kind`` says which path writes: ``native-sqlite``, ``native-redis`` or ``feast``.
    """

    def __init__(self, store, aggregations: tuple[EntityAggregation, ...] = AGGREGATIONS,
                 listener: WriteListener | None = None, on_written: Callable[[str, int, float], None] | None = None,
                 mode: Literal["native", "feast"] = "native"):
        if mode not in ("native", "feast"):
            raise ConfigurationError(f"online writer mode must be 'native' or 'feast', not {mode!r}")
        self.config = store.config
        # Provider.online_write_batch is the public provider interface write_to_online_store ends in.
        self.provider = store._get_provider()
        self.encoders = {a.feature_view: _ViewEncoder(store, a) for a in aggregations}
        _tune_sqlite(self.provider, self.config)
        self.native = None
        if mode == "native":
            self.native = native_writer(self.provider, self.config, {v: e.spec for v, e in self.encoders.items()})
        self.kind = self.native.kind if self.native is not None else "feast"
        self.listener = listener
        self.on_written = on_written
        self.last_duration_s = 0.0
        self._cv = threading.Condition()
        self._job: tuple[dict[str, Rows], list[int]] | None = None
        self.last_ticket = 0  # number of writes submitted; wait(ticket) waits for the first ``ticket``
        self._done_tickets = 0
        self._running = False
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="online-writer", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._running or self._job is not None

    def write_now(self, rows_by_view: dict[str, Rows]) -> int:
        """Write synchronously on the calling thread; returns the number of rows."""
        written = 0
        for view, rows in rows_by_view.items():
            t0 = time.perf_counter()
            if self.native is not None:
                self.native.write(view, rows)
            else:
                enc = self.encoders[view]
                self.provider.online_write_batch(self.config, enc.view, enc.encode(rows), progress=None)
            if self.on_written is not None:
                self.on_written(view, len(rows), time.perf_counter() - t0)
            written += len(rows)
        return written

    def submit(self, rows_by_view: dict[str, Rows], record_ts_ms: list[int]) -> int:
        """Queue a write once the last one is done; returns its ticket (see ``wait``)."""
        with self._cv:
            while self.busy and self._error is None:
                self._cv.wait()
            self._raise_error()
            self._job = (rows_by_view, record_ts_ms)
            self.last_ticket += 1
            self._cv.notify_all()
            return self.last_ticket

    def wait(self, ticket: int | None = None) -> None:
        """Wait until write ``ticket`` (default: every write submitted so far) is stored; re-raises a write error."""
        with self._cv:
            target = self.last_ticket if ticket is None else ticket
            while self._done_tickets < target and self._error is None:
                self._cv.wait()
            self._raise_error()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout=60)

    def _raise_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._job is None and not self._closed:
                    self._cv.wait()
                if self._job is None:
                    return
                job, self._job = self._job, None
                self._running = True
            t0 = time.perf_counter()
            try:
                self.write_now(job[0])
                if self.listener is not None:
                    self.listener(time.time(), job[1])
            except BaseException as exc:  # handed to the consume loop, which stops without committing
                with self._cv:
                    self._error = exc
            finally:
                self.last_duration_s = time.perf_counter() - t0
                with self._cv:
                    self._running = False
                    self._done_tickets += 1
                    self._cv.notify_all()
