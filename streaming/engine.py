"""The feature engine core: validated events in, raw offline rows and online tiles out. No I/O.

The Kafka runner (``streaming.runner``) feeds it; tests and the restore path feed it
directly. Which events feed which entity's tiles is read from the feature repo's declarations
(``feature_repo.aggregations`` and ``feature_repo.sources``); they are compiled once into
routes so the per-event path does no lookups by name.

The engine computes no features: it folds events into tiles (``streaming.windows``), the
transformer merges them at each request's time (``feature_repo.tiles``), and training sets are
computed from the raw event log the engine appends to.

Times are epoch seconds (floats) in events and rows: converting to datetimes is the writers'
job, once per batch (``streaming.offline``, ``streaming.online``); tile arithmetic is in integer
microseconds.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Iterable

from feature_repo.aggregations import AGGREGATIONS, EntityAggregation
from feature_repo.sources import SOURCES, EventSource
from feature_repo.tiles import TILES_FEATURE, layout_for
from streaming.changelog import DAY_US, finish, merge_chunk, pack_chunk
from streaming.topology import Stream
from streaming.windows import EntityRoute, EntityState, drain_rows, keep_tiles

EVENT_TIMESTAMP = "event_timestamp"
ONLINE_FEATURES = (TILES_FEATURE,)  # the values of every online row, in order: the entity's packed tiles
SWEEP_EVERY = 1_000_000  # events between two full prunes of the remembered events of every entity


class FeatureEngine:
    """Keeps the tiles of every (aggregation, entity) and logs raw events.

    ``apply(stream, event, out)`` folds one event into the tiles it feeds and appends the raw
    event to ``out[table]`` (a list of dicts, with ``event_timestamp`` set to its log time);
    ``drain_online_values()`` returns the packed tiles of every entity whose tiles changed since
    the last call (one row per entity), ready for the online store.

    A stream is what the engine is fed: by default one per source, feeding every aggregation
    and logging raw events; the Kafka runner passes its topology's streams instead
    (``streaming.topology``), where a repartition stream feeds some aggregations and logs nothing.

    ``grace_s``: how much older than an entity's newest event a request may be and still find
    every tile its windows need; tiles and remembered events are kept that much longer
    (``streaming.windows.keep_tiles``). ``track_changes`` keeps the (entity, chunk) pairs each
    event changes for the state changelog (``take_changes``, ``streaming.changelog``; chunks span
    ``chunk_days`` of event time).
    """

    def __init__(self, aggregations: tuple[EntityAggregation, ...] = AGGREGATIONS,
                 sources: tuple[EventSource, ...] = SOURCES, streams: Iterable[Stream] | None = None, grace_s: float = 0.0,
                 track_changes: bool = False, chunk_days: int = 7):
        self.aggregations = aggregations
        self.sources = {s.name: s for s in sources}
        self.layouts = {a.feature_view: layout_for(a) for a in aggregations}
        self.keep = {view: keep_tiles(layout, grace_s) for view, layout in self.layouts.items()}
        self.state: dict[str, dict[int, EntityState]] = {a.feature_view: {} for a in aggregations}
        self._dirty: dict[str, set[int]] = {a.feature_view: set() for a in aggregations}
        self._changes: dict[str, set] | None = {a.feature_view: set() for a in aggregations} if track_changes else None
        self.chunk_us = chunk_days * DAY_US
        if streams is None:
            streams = [Stream(s.name, s.topic, s, tuple(a.feature_view for a in aggregations), is_source=True) for s in sources]
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
                        changes = self._changes[view] if self._changes is not None else None
                        self._routes[stream.name].append(
                            EntityRoute(agg, inp, self.state[view], self._dirty[view], self.keep[view], changes, self.chunk_us))
        self._since_sweep = 0
        self.changed = False  # whether the last ``apply`` changed anything (False: every route saw a replay)

    def timestamp_columns(self, table: str) -> tuple[str, ...]:
        """Columns of an offline table that hold epoch seconds (the writer turns them into UTC timestamps)."""
        spec = self.sources.get(table)
        fields = tuple(f.name for f in spec.fields if f.type == "timestamp") if spec else ()
        return fields + (EVENT_TIMESTAMP,)

    def apply(self, stream: str, event: dict, out: dict | None = None) -> dict:
        """Fold one validated event into the tiles; appends its raw row to ``out`` (by table) and returns it.

        ``changed`` says afterwards whether it changed anything: False when no tile changed and
        the stream logs nothing (a replay on a repartition stream).
        """
        if out is None:
            out = {}
        raw_log = self._raw_log[stream]
        changed = raw_log is not None
        if raw_log is not None:
            table, log_time, event_time = raw_log
            raw = dict(event)
            # Labels are logged at the time they became known, so training can tell what was known when.
            raw[EVENT_TIMESTAMP] = (event.get(log_time) or event[event_time]) if log_time else event[event_time]
            rows = out.get(table)
            if rows is None:
                rows = out[table] = []
            rows.append(raw)
        for route in self._routes[stream]:
            if route.apply(event):
                changed = True
        self.changed = changed
        self._since_sweep += 1
        if self._since_sweep >= SWEEP_EVERY:
            self.prune()
        return out

    def pending_online(self) -> int:
        """Entities touched since the last drain (the rows the next drain returns)."""
        return sum(len(d) for d in self._dirty.values())

    def drain_online_values(self) -> dict[str, list[tuple[int, float, list]]]:
        """The packed tiles of each entity changed since the last drain, by feature view.

        Rows are ``(entity_id, stamp, [tiles])``: ``tiles`` is ``TileLayout.encode`` of the entity's
        tiles after pruning (see ``streaming.windows.drain_rows``), ``stamp`` strictly increases
        per entity.
        """
        out: dict[str, list[tuple[int, float, list]]] = {}
        for agg in self.aggregations:
            view = agg.feature_view
            dirty = self._dirty[view]
            if dirty:
                out[view] = drain_rows(self.layouts[view], dirty, self.state[view], self.keep[view])
        return out

    def take_changes(self) -> dict[str, list[tuple[object, int, bytes]]]:
        """The chunks changed since the last call, by feature view: ``(entity, chunk, packed chunk)``."""
        out: dict[str, list[tuple[object, int, bytes]]] = {}
        for view, changes in (self._changes or {}).items():
            if changes:
                states, tile_us = self.state[view], self.layouts[view].tile_us
                span = self.chunk_us
                out[view] = [(e, c, pack_chunk(states[e], c, tile_us, span)) for e, c in changes if e in states]
                changes.clear()
        return out

    def restore_chunk(self, view: str, entity, chunk: bytes) -> None:
        """Merge one changelog chunk into an entity's state (``finish_restore`` once all are in)."""
        st = self.state[view].get(entity)
        if st is None:
            st = self.state[view][entity] = EntityState()
        merge_chunk(st, chunk)

    def finish_restore(self) -> None:
        """Order and prune restored states; they are in the online store already, so nothing is dirty."""
        for view, states in self.state.items():
            keep, tile_us = self.keep[view], self.layouts[view].tile_us
            for st in states.values():
                finish(st)
                st.prune(keep, tile_us, force=True)

    def prune(self) -> None:
        """Drop every entity's tiles and remembered events beyond its horizon (idle entities included)."""
        self._since_sweep = 0
        for agg in self.aggregations:
            keep, tile_us = self.keep[agg.feature_view], self.layouts[agg.feature_view].tile_us
            for st in self.state[agg.feature_view].values():
                st.prune(keep, tile_us, force=True)

    def reset(self) -> None:
        """Forget all state (partitions were revoked; ``streaming.restore`` rebuilds what is reassigned)."""
        for view in self.state:
            self.state[view].clear()
            self._dirty[view].clear()
            if self._changes is not None:
                self._changes[view].clear()
        self._since_sweep = 0

    def state_bytes(self) -> int:
        """``sys.getsizeof`` of every object of the tile state (dicts, keys, states, arrays, scalars): a
        measurement for benchmarks, without the allocator's overhead."""
        size = sys.getsizeof
        total = 0
        for states in self.state.values():
            total += size(states)
            for key, st in states.items():
                total += size(key) + size(st) + size(st.keys) + size(st.rows) + size(st.max_tile)
                total += size(st.last_time) + size(st.known) + size(st.written)
                for timeline in (st.events, st.labels):
                    if timeline is not None:
                        total += size(timeline) + size(timeline.times) + size(timeline.ids)
        return total

    def entity_count(self) -> int:
        return sum(len(s) for s in self.state.values())

    def tile_count(self) -> int:
        """Tiles held over every entity and aggregation."""
        return sum(len(st.keys) for s in self.state.values() for st in s.values())
