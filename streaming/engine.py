"""The feature engine core: validated events in, offline rows and online rows out. No I/O.

The Kafka runner (``streaming.runner``) feeds it; tests and the restore path feed it
directly. Which events feed which entity, and which features come out, is read from the
feature repo's declarations (``feature_repo.aggregations`` and ``feature_repo.sources``);
they are compiled once into routes so the per-event path does no lookups by name.

Times are epoch seconds (floats) everywhere in the engine, rows included: converting to
datetimes is the writers' job, once per batch (``streaming.offline``, ``streaming.online``).
"""

from __future__ import annotations

from collections import defaultdict
from functools import partial
from typing import Iterable

import pandas as pd

from feature_repo.aggregations import AGGREGATIONS, EntityAggregation
from feature_repo.sources import SOURCES, EventSource
from streaming.topology import Stream
from streaming.windows import EntityRoute, EntityState, WindowImplementation, plan_for, windows_implementation

EVENT_TIMESTAMP = "event_timestamp"
SWEEP_EVERY = 1_000_000  # full prune of idle entities; active ones are pruned when touched


class ColumnBuffer:
    """Offline rows of one feature view as columns (one list per column in ``columns``).

    No object per row: a row list kept until the next flush was the one container per event
    that survived long enough to be scanned by the cyclic GC again and again, and its columns
    would have to be transposed at the flush anyway.
    """

    __slots__ = ("columns", "lists")

    def __init__(self, names: tuple[str, ...]):
        self.columns: dict[str, list] = {name: [] for name in names}
        self.lists = tuple(self.columns.values())  # the same lists, in column order (the compiled route appends to them)

    def append(self, row: list) -> None:
        """Append one row (values in column order)."""
        any(map(list.append, self.lists, row))  # C-level loop; list.append returns None, so all run

    def __len__(self) -> int:
        return len(self.lists[0]) if self.lists else 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ColumnBuffer) and self.columns == other.columns

    __hash__ = None  # mutable


class FeatureEngine:
    """Keeps window state per (aggregation, entity) and derives feature rows from events.

    ``apply(stream, event, out)`` updates state and appends the event's offline rows to ``out`` by
    table (a list of dicts for raw events, a ``ColumnBuffer`` per feature view; ``offline_frame``
    turns either into a DataFrame);
    ``drain_online()`` returns the latest features of every entity touched since the last
    call (one row per entity, at the entity's latest event time), ready for the online store.

    A stream is what the engine is fed: by default one per source, feeding every aggregation
    and logging raw events; the Kafka runner passes its topology's streams instead
    (``streaming.topology``), where a repartition stream feeds some aggregations and logs nothing.

    ``windows`` is the window implementation (``streaming.windows``): the compiled one when built, by default.
    """

    def __init__(self, aggregations: tuple[EntityAggregation, ...] = AGGREGATIONS,
                 sources: tuple[EventSource, ...] = SOURCES, grace_s: float = 0.0, streams: Iterable[Stream] | None = None,
                 windows: WindowImplementation | None = None):
        self.aggregations = aggregations
        self.windows = windows = windows or windows_implementation()
        # values(state, t) per feature view, from the chosen implementation
        self._kernels = {a.feature_view: windows.kernel(a.kind, plan_for(a).bounds) for a in aggregations}
        self.sources = {s.name: s for s in sources}
        self.state: dict[str, dict[int, EntityState]] = {a.feature_view: {} for a in aggregations}
        self._dirty: dict[str, set[int]] = {a.feature_view: set() for a in aggregations}
        self._known_at: dict[str, dict[int, float]] = {a.feature_view: {} for a in aggregations}  # latest label arrival
        self._written_at: dict[str, dict[int, float]] = {a.feature_view: {} for a in aggregations}  # last online stamp
        self._horizon = {a.feature_view: a.horizon.total_seconds() + grace_s for a in aggregations}
        if streams is None:
            streams = [Stream(s.name, s.topic, s, tuple(a.feature_view for a in aggregations), is_source=True) for s in sources]
        self._view_columns = {a.feature_view: plan_for(a).names + (a.join_key, EVENT_TIMESTAMP) for a in aggregations}
        self._routes: dict[str, list[EntityRoute]] = defaultdict(list)
        # Raw-log recipe per stream: (table, log time field, event time field), None when it logs nothing.
        self._raw_log: dict[str, tuple[str, str | None, str] | None] = {}
        for stream in streams:
            src = stream.source
            self._raw_log[stream.name] = (src.name, src.log_time, src.event_time) if stream.is_source else None
            for agg in aggregations:
                if agg.feature_view not in stream.views:
                    continue
                for inp in agg.inputs:
                    if inp.source == src.name:
                        view = agg.feature_view
                        self._routes[stream.name].append(windows.route(
                            view, agg.join_key, inp.role == "event", inp.time_field, inp.id_field, inp.value_field,
                            src.log_time, self._kernels[view], windows.state, partial(ColumnBuffer, self._view_columns[view]),
                            self.state[view], self._dirty[view], self._known_at[view], self._horizon[view]))
        self._since_sweep = 0
        self.changed = False  # whether the last ``apply`` changed anything (False: every route saw a replay)

    def offline_columns(self, table: str) -> tuple[str, ...] | None:
        """Column names of a feature view's offline rows (features, join key, event time); None for raw tables."""
        return self._view_columns.get(table)

    @staticmethod
    def offline_frame(rows: "ColumnBuffer | list[dict]") -> pd.DataFrame:
        """Offline rows of one table as ``apply`` produced them, as a DataFrame (times still epoch seconds)."""
        return pd.DataFrame(rows.columns if isinstance(rows, ColumnBuffer) else rows)

    def timestamp_columns(self, table: str) -> tuple[str, ...]:
        """Columns of an offline table that hold epoch seconds (the writer turns them into UTC timestamps)."""
        spec = self.sources.get(table)
        fields = tuple(f.name for f in spec.fields if f.type == "timestamp") if spec else ()
        return fields + (EVENT_TIMESTAMP,)

    def apply(self, stream: str, event: dict, out: dict | None = None) -> dict:
        """Fold one validated event into state; appends its offline rows to ``out`` (by table) and returns it.

        ``changed`` says afterwards whether it changed anything: False when every route knew the event already.
        """
        if out is None:
            out = {}
        raw_log = self._raw_log[stream]
        known_time = None
        changed = raw_log is not None
        if raw_log is not None:
            table, log_time, event_time = raw_log
            raw = dict(event)
            # Labels are logged at the time they became known, so training can tell what was known when.
            known_time = raw[EVENT_TIMESTAMP] = (event.get(log_time) or event[event_time]) if log_time else event[event_time]
            rows = out.get(table)
            if rows is None:
                rows = out[table] = []
            rows.append(raw)
        for route in self._routes[stream]:
            if route.apply(event, out, known_time):
                changed = True
        self.changed = changed
        self._since_sweep += 1
        if self._since_sweep >= SWEEP_EVERY:
            self.prune()
        return out

    def pending_online(self) -> int:
        """Entities touched since the last drain (an upper bound on the rows the next drain returns)."""
        return sum(len(d) for d in self._dirty.values())

    def drain_online_values(self) -> dict[str, list[tuple[int, float, list]]]:
        """Latest feature values of each touched entity, by feature view: ``(entity_id, event_time, values)``."""
        out: dict[str, list[tuple[int, float, list]]] = {}
        for agg in self.aggregations:
            dirty = self._dirty[agg.feature_view]
            if not dirty:
                continue
            states, values, width = self.state[agg.feature_view], self._kernels[agg.feature_view], len(plan_for(agg).names)
            rows = self.windows.drain(dirty, states, values, width, self._known_at[agg.feature_view],
                                      self._written_at[agg.feature_view])
            if rows:
                out[agg.feature_view] = rows
        return out

    def drain_online(self) -> dict[str, list[dict]]:
        """Latest features of each entity touched since the last drain, by feature view (rows as dicts)."""
        out: dict[str, list[dict]] = {}
        drained = self.drain_online_values()
        for agg in self.aggregations:
            names = plan_for(agg).names
            rows = drained.get(agg.feature_view)
            if rows:
                out[agg.feature_view] = [
                    {**dict(zip(names, vals)), agg.join_key: entity_id, EVENT_TIMESTAMP: t} for entity_id, t, vals in rows]
        return out

    def prune(self) -> None:
        """Drop events older than each entity's horizon (bounded memory per entity)."""
        self._since_sweep = 0
        for agg in self.aggregations:
            horizon = self._horizon[agg.feature_view]
            for st in self.state[agg.feature_view].values():
                st.prune(horizon)

    def reset(self) -> None:
        """Forget all window state (partitions were revoked; ``streaming.restore`` rebuilds what is reassigned)."""
        for view in self.state:
            self.state[view].clear()
            self._dirty[view].clear()
            self._known_at[view].clear()
            self._written_at[view].clear()
        self._since_sweep = 0

    def entity_count(self) -> int:
        return sum(len(s) for s in self.state.values())
