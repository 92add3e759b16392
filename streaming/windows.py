"""Per-entity tile state: events folded into the tiles of ``feature_repo.tiles``. Pure Python, no I/O.

Each (aggregation, entity) keeps

* the entity's events within its horizon, by (id, event time), so a replayed or duplicated
  event (at-least-once delivery, the repartition shortcut, a restore) is found and skipped;
* the positive, on-time labels counted so far, by the (id, event time) of the event they label;
* its tiles, kept exactly as ``TileLayout.encode`` packs them: one flat float64 array of rows
  ``[tile, ir...]`` in ascending tile order (plus the tile indexes as int64, for the search).
  A tile costs ``8 * (2 + width)`` bytes (32 for the fraud views) where a dict of IR lists
  costs about 200, and the online value is the header plus the array's bytes, no repacking.

Folding follows ``TileLayout.add_event`` (count, sums, minima, maxima) and the labels rules of
``feature_repo.aggregations``: a label counts once per labelled event (id, event time), when
positive and known no later than ``label_delay`` after the event, in the tile of the event's
time; the event itself is not looked up (as ``components.dataset`` counts them), so a label
counts before its event arrives, or without it. Counts, minima, maxima and labels do not depend
on arrival order; sums add in arrival order, so they can differ in the last bit between two
orders of the same events (a partition replays in its own order, so a restore rebuilds the same
bytes).

Bounded state: tiles older than ``max tile - keep`` (max tile: the newest tile of the entity's
events and labelled events; ``keep`` = ``horizon_tiles + 1`` plus the tiles of ``grace_s``, see
``keep_tiles``) are dropped at every online drain, and an event or label older than that is
ignored on arrival. No window evaluated at or after the newest event reaches them
(``TileLayout.horizon_tiles`` counts the open tile); the slack covers a request up to one tile
plus ``grace_s`` older than the entity's newest event (say, a transaction scored after newer
ones of its customer were ingested). The bound depends on the windows, never on the event rate.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left, bisect_right
from typing import Mapping

from feature_repo.aggregations import AggregationInput, EntityAggregation
from feature_repo.tiles import TileLayout, layout_for

DAY_US = 86_400_000_000
PRUNE_MIN = 16  # timeline entries worth moving the arrays for (amortised pruning)
_NEVER = -(1 << 62)  # a "newest tile" below every real one: nothing is older than the horizon yet
_LITTLE_ENDIAN = sys.byteorder == "little"


def keep_tiles(layout: TileLayout, grace_s: float = 0.0) -> int:
    """Tiles an entity keeps below its newest one: the windows' reach (``horizon_tiles``), one tile of
    slack, and ``grace_s`` rounded up to whole tiles."""
    return layout.horizon_tiles + 1 + -(-round(grace_s * 1_000_000) // layout.tile_us)


class _Timeline:
    """(id, event time) pairs sorted by time in two flat int64 arrays (16 bytes a pair); times in microseconds.

    A replay carries both id and time, so it is found by searching the ids stamped with its time,
    with no per-event index to keep.
    """

    __slots__ = ("times", "ids")

    def __init__(self) -> None:
        self.times = array("q")
        self.ids = array("q")

    def __len__(self) -> int:
        return len(self.times)

    def add(self, event_id: int, t_us: int) -> bool:
        """Record (id, time); False when it is there already."""
        times = self.times
        if not times or t_us > times[-1]:  # the common case: a new latest event
            self.ids.append(event_id)  # first: an id that is no int64 raises before anything changed
            times.append(t_us)
            return True
        lo = bisect_left(times, t_us)
        hi = bisect_right(times, t_us, lo)
        ids = self.ids
        for i in range(lo, hi):
            if ids[i] == event_id:
                return False
        ids.insert(hi, event_id)  # first: an id that is no int64 raises before anything changed
        times.insert(hi, t_us)
        return True

    def prune(self, before_us: int, force: bool = False) -> None:
        """Forget entries older than ``before_us``; unless ``force``, only once enough expired to pay for the move."""
        times = self.times
        if times and times[0] < before_us:
            cut = bisect_left(times, before_us)
            if force or cut >= PRUNE_MIN or 4 * cut >= len(times):
                del times[:cut]
                del self.ids[:cut]


class EntityState:
    """Tile state of one entity (customer, terminal, ...) for one aggregation; see the module docstring."""

    __slots__ = ("events", "labels", "keys", "rows", "max_tile", "last_time", "known", "written")

    def __init__(self) -> None:
        self.events = _Timeline()
        self.labels: _Timeline | None = None  # most entities never see a label: allocated on the first
        self.keys = array("q")  # tile indexes, ascending
        self.rows = array("d")  # [tile, ir...] per tile, in the order of ``keys`` (TileLayout.encode's rows)
        self.max_tile = _NEVER  # newest tile of an event or a labelled event
        self.last_time = float("-inf")  # newest event time (epoch seconds)
        self.known = float("-inf")  # newest time a counted label became known
        self.written = float("-inf")  # stamp of the last online row (see drain_rows)

    def tiles(self) -> dict[int, list[float]]:
        """The tiles as ``{tile: [ir...]}`` (for tests and tools; the engine never builds this)."""
        w1 = len(self.rows) // len(self.keys) if self.keys else 1
        return {k: self.rows[i * w1 + 1:(i + 1) * w1].tolist() for i, k in enumerate(self.keys)}

    def tile_offset(self, k: int, layout: TileLayout, create: bool) -> int:
        """Offset in ``rows`` of tile ``k``'s first IR; a new empty tile when ``create`` (else -1 if absent)."""
        keys, rows = self.keys, self.rows
        w1 = layout.width + 1
        if keys and keys[-1] >= k:
            if keys[-1] == k:  # the newest tile: most events of a live stream
                return len(rows) - layout.width
            i = bisect_left(keys, k)
            if keys[i] == k:
                return i * w1 + 1
            if not create:
                return -1
            keys.insert(i, k)
            rows[i * w1:i * w1] = array("d", [float(k)] + layout.empty())
            return i * w1 + 1
        if not create:
            return -1
        keys.append(k)
        rows.append(float(k))
        rows.extend(layout.empty())
        return len(rows) - layout.width

    def prune(self, keep_tiles: int, tile_us: int, force: bool = False) -> None:
        """Drop tiles (and remembered events and labels) older than ``max_tile - keep_tiles``."""
        cutoff = self.max_tile - keep_tiles
        keys = self.keys
        if keys and keys[0] < cutoff:
            cut = bisect_left(keys, cutoff)
            w1 = len(self.rows) // len(keys)
            del keys[:cut]
            del self.rows[:cut * w1]
        self.events.prune(cutoff * tile_us, force)
        if self.labels is not None:
            self.labels.prune(cutoff * tile_us, force)

    def blob(self, header: bytes) -> bytes:
        """The tiles as ``TileLayout.encode`` packs them (``header`` is its empty encoding)."""
        if _LITTLE_ENDIAN:
            return header + self.rows.tobytes()
        rows = array("d", self.rows)
        rows.byteswap()
        return header + rows.tobytes()


class EntityRoute:
    """Feeds one aggregation input (the events, or the labels, of one stream) into its entities' tiles.

    ``apply(event)`` folds one validated event (epoch-second times) in and tells whether it changed
    any tile (False for a replay, an event older than the entity's horizon, or a negative or late
    label); a change marks the entity dirty for the next online drain.
    """

    __slots__ = ("join_key", "is_event", "time_field", "id_field", "value_field", "known_field", "layout",
                 "tile_us", "keep", "columns", "labels_index", "states", "dirty", "changes", "chunk_us")

    def __init__(self, agg: EntityAggregation, inp: AggregationInput, states: dict, dirty: set, keep: int,
                 changes: set | None = None, chunk_us: int = DAY_US):
        self.layout = layout = layout_for(agg)
        self.join_key, self.is_event = agg.join_key, inp.role == "event"
        self.time_field, self.id_field, self.value_field, self.known_field = inp.time_field, inp.id_field, inp.value_field, inp.known_field
        self.tile_us = layout.tile_us
        self.keep = keep  # tiles kept below the newest one (keep_tiles)
        self.columns = layout.event_columns  # (IR index, kind, field) of sums, minima, maxima
        self.labels_index = layout.labels_index
        self.states, self.dirty = states, dirty
        self.changes = changes  # (entity, chunk) changed, for the state changelog (None: not kept)
        self.chunk_us = chunk_us  # the changelog's chunk span

    def apply(self, event: Mapping) -> bool:
        t = event[self.time_field]
        t_us = round(t * 1_000_000)  # integer µs, rounded as the offline log rounds event times
        if not self.is_event:
            if self.labels_index is None or event[self.value_field] != 1:
                return False  # a negative label changes no tile (a positive one of the same event may still come)
            known = event.get(self.known_field) if self.known_field else None
            if not self.layout.label_counts(t_us, None if known is None else round(known * 1_000_000)):
                return False  # known too late to count
        entity_id = event[self.join_key]
        st = self.states.get(entity_id)
        if st is None:
            st = self.states[entity_id] = EntityState()
        k = t_us // self.tile_us
        if k < st.max_tile - self.keep:
            return False  # no window at or after the entity's newest (labelled) event reaches it
        if self.is_event:
            if not st.events.add(event[self.id_field], t_us):
                return False  # a replay: counted already
            rows, keys = st.rows, st.keys
            if keys and keys[-1] == k:  # the newest tile: most events of a live stream (tile_offset's first case, inlined)
                off = len(rows) - self.layout.width
            else:
                off = st.tile_offset(k, self.layout, True)
            rows[off] += 1.0
            for i, kind, field in self.columns:  # TileLayout.add_event on the flat row
                v = float(event[field])
                if kind == "sum":
                    rows[off + i] += v
                elif kind == "min":
                    if v < rows[off + i]:
                        rows[off + i] = v
                elif v > rows[off + i]:
                    rows[off + i] = v
            if t > st.last_time:
                st.last_time = t
        else:
            labels = st.labels
            if labels is None:
                labels = st.labels = _Timeline()
            if not labels.add(event[self.id_field], t_us):
                return False  # this event's positive label was counted already
            st.rows[st.tile_offset(k, self.layout, True) + self.labels_index] += 1.0
            known = t if known is None else known
            if known > st.known:
                st.known = known
        if k > st.max_tile:
            st.max_tile = k
        self.dirty.add(entity_id)
        changes = self.changes
        if changes is not None:  # streaming.changelog's chunks: the event's, and its tile's when the tile straddles two
            chunk = t_us // self.chunk_us
            changes.add((entity_id, chunk))
            tile_chunk = k * self.tile_us // self.chunk_us
            if tile_chunk != chunk:
                changes.add((entity_id, tile_chunk))
        return True


def drain_rows(layout: TileLayout, dirty: set, states: dict, keep: int) -> list[tuple]:
    """The online rows ``(entity_id, stamp, [blob])`` of the dirty entities of one aggregation; clears ``dirty``.

    Each entity's tiles are pruned first to ``keep`` tiles below its newest (``keep_tiles``: bounded
    bytes per entity). The row is stamped with the entity's newest event time, or when its newest
    counted label became known if later, and always strictly after its previous row: online stores
    such as Feast's Redis keep a row only if its timestamp is newer.
    """
    header = layout.encode({})
    tile_us = layout.tile_us
    rows = []
    for entity_id in dirty:
        st = states[entity_id]
        st.prune(keep, tile_us)
        stamp = max(st.last_time, st.known, st.written + 0.001)
        st.written = stamp
        rows.append((entity_id, stamp, [st.blob(header)]))
    dirty.clear()
    return rows
