"""Tiles: the intermediate representation the engine writes and the transformer merges at request time.

An aggregation's state per entity is a set of tiles (``feature_repo.aggregations``: tile
``k`` holds the events with ``k * tile <= e < (k + 1) * tile``), each a row of intermediate
values (IRs) laid out by ``TileLayout``: ``count`` first, then ``sum:<field>``, ``min:<field>``,
``max:<field>`` as the features need them, and ``labels`` (positive labels) for ratios.
Updates commute (add, min, max), so arrival order never changes a tile.

Online, an entity's tiles are one value: ``TileLayout.encode`` packs them into bytes (a small
header, then little-endian float64 rows ``[tile, ir...]``), stored as the ``tiles`` feature of
the aggregation's Feast feature view. ``TileLayout.features`` merges the tiles of many entities
at each one's request time, adds the current event to delay-0 windows and computes the
features. Pure numpy, no I/O.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Mapping, Sequence

import numpy as np

from feature_repo.aggregations import EntityAggregation, _us
from rtml_common.errors import InvalidInputError

TILES_FEATURE = "tiles"
_HEADER = struct.Struct("<4sHH")  # magic, IR width, layout fingerprint
_MAGIC = b"RTT1"
US = 1_000_000


class TileLayout:
    """How one aggregation's tiles are laid out, updated, packed and merged into features."""

    def __init__(self, agg: EntityAggregation):
        self.agg = agg
        self.tile_us = _us(agg.tile)
        self.label_delay_us = _us(agg.label_delay)
        cols: list[tuple[str, str | None]] = [("count", None)]
        for f in agg.features:
            needs = {"sum": ["sum"], "mean": ["sum"], "min": ["min"], "max": ["max"], "ratio": ["labels"]}.get(f.function, [])
            for kind in needs:
                col = (kind, f.field if kind != "labels" else None)
                if col not in cols:
                    cols.append(col)
        self.columns: tuple[tuple[str, str | None], ...] = tuple(cols)
        self.width = len(cols)
        self.index = {c: i for i, c in enumerate(cols)}
        self.labels_index = self.index.get(("labels", None))
        # Per event column: (IR index, kind, field) for everything but count and labels.
        self.event_columns = tuple((i, k, f) for i, (k, f) in enumerate(cols) if k in ("sum", "min", "max"))
        self.fields = tuple(sorted({f for _, _, f in self.event_columns}))
        # Windows in tiles: (length in tiles, delay in microseconds).
        self.windows = tuple((_us(w.length) // self.tile_us, _us(w.delay)) for w in agg.windows)
        self.horizon_tiles = max(n + d // self.tile_us for n, d in self.windows) + 1
        self.names = tuple(agg.feature_names())
        # Two layouts of the same width (other IRs, another tile size) must not read each other's bytes.
        self.fingerprint = zlib.crc32(repr((self.columns, self.tile_us)).encode()) & 0xFFFF

    # -- engine side -----------------------------------------------------------------------
    def tile_of(self, t_us: int) -> int:
        return t_us // self.tile_us

    def empty(self) -> list[float]:
        """A new tile's IRs: zeros, and +-inf for minima and maxima."""
        return [math.inf if k == "min" else -math.inf if k == "max" else 0.0 for k, _ in self.columns]

    def add_event(self, ir: list[float], event: Mapping) -> None:
        """Fold one (new) event into a tile's IRs."""
        ir[0] += 1.0
        for i, kind, field in self.event_columns:
            v = float(event[field])
            if kind == "sum":
                ir[i] += v
            elif kind == "min":
                if v < ir[i]:
                    ir[i] = v
            elif v > ir[i]:
                ir[i] = v

    def label_counts(self, event_us: int, known_us: int | None) -> bool:
        """Whether a positive label of an event at ``event_us``, known at ``known_us``, counts (on time)."""
        return (event_us if known_us is None else known_us) <= event_us + self.label_delay_us

    def encode(self, tiles: Mapping[int, Sequence[float]]) -> bytes:
        """One entity's tiles as the bytes stored online (tiles in ascending order)."""
        if not tiles:
            return _HEADER.pack(_MAGIC, self.width, self.fingerprint)
        keys = sorted(tiles)
        arr = np.empty((len(keys), 1 + self.width), dtype="<f8")
        arr[:, 0] = keys
        arr[:, 1:] = [tiles[k] for k in keys]
        return _HEADER.pack(_MAGIC, self.width, self.fingerprint) + arr.tobytes()

    def decode(self, blob: bytes | None) -> np.ndarray:
        """Bytes from ``encode`` (or None: no tiles) as a float64 array [tiles, 1 + width]."""
        if not blob:
            return np.empty((0, 1 + self.width))
        magic, width, fingerprint = _HEADER.unpack_from(blob)
        if (magic, width, fingerprint) != (_MAGIC, self.width, self.fingerprint) or (len(blob) - _HEADER.size) % (8 * (1 + width)):
            raise InvalidInputError(
                f"online tiles of '{self.agg.feature_view}' have layout {magic!r}/{width}/{fingerprint:04x}, expected "
                f"{_MAGIC!r}/{self.width}/{self.fingerprint:04x}: written by another version of the feature repo")
        return np.frombuffer(blob, dtype="<f8", offset=_HEADER.size).reshape(-1, 1 + width)

    # -- request side ----------------------------------------------------------------------
    def features(self, blobs: Sequence[bytes | None], t_us: np.ndarray,
                 current: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
        """Features [N, len(names)] of N entities from their tiles, each at its time ``t_us[i]``.

        ``current`` holds the event fields of the N events being evaluated (one value each per
        field in ``fields``); given, each counts once in the windows with delay 0.
        """
        n = len(blobs)
        t_us = np.asarray(t_us, dtype=np.int64)
        arrays = [self.decode(b) for b in blobs]
        lens = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=n)
        rows = np.repeat(np.arange(n), lens)
        tiles = np.concatenate(arrays) if n else np.empty((0, 1 + self.width))
        tile_idx = tiles[:, 0].astype(np.int64)
        out = np.zeros((n, len(self.names)))
        nf = len(self.agg.features)
        for wi, (length, delay_us) in enumerate(self.windows):
            end = np.floor_divide(t_us - delay_us, self.tile_us)
            start = end - length
            inside = (tile_idx >= start[rows]) & (tile_idx < end[rows])
            r, sel = rows[inside], tiles[inside]
            merged = np.empty((n, self.width))
            for ci, (kind, field) in enumerate(self.columns):
                if kind == "min":
                    col = np.full(n, np.inf)
                    np.minimum.at(col, r, sel[:, 1 + ci])
                elif kind == "max":
                    col = np.full(n, -np.inf)
                    np.maximum.at(col, r, sel[:, 1 + ci])
                else:
                    col = np.bincount(r, weights=sel[:, 1 + ci], minlength=n)
                if current is not None and delay_us == 0:
                    if kind == "count":
                        col = col + 1.0
                    elif kind == "sum":
                        col = col + np.asarray(current[field], dtype=np.float64)
                    elif kind == "min":
                        col = np.minimum(col, np.asarray(current[field], dtype=np.float64))
                    elif kind == "max":
                        col = np.maximum(col, np.asarray(current[field], dtype=np.float64))
                merged[:, ci] = col
            out[:, wi * nf:(wi + 1) * nf] = self.finish(merged)
        return out

    def finish(self, merged: np.ndarray) -> np.ndarray:
        """Features of one window from its merged IRs [N, width]: means and ratios after merging, 0 when empty."""
        count = merged[:, 0]
        empty = count == 0
        safe = np.where(empty, 1.0, count)
        cols = []
        for f in self.agg.features:
            if f.function == "count":
                v = count
            elif f.function == "ratio":
                v = merged[:, self.labels_index] / safe
            elif f.function == "mean":
                v = merged[:, self.index[("sum", f.field)]] / safe
            else:
                v = merged[:, self.index[(f.function, f.field)]]
            cols.append(np.where(empty, 0.0, v))
        return np.stack(cols, axis=1)


_LAYOUTS: dict[EntityAggregation, TileLayout] = {}


def layout_for(agg: EntityAggregation) -> TileLayout:
    """The (cached) tile layout of an aggregation."""
    layout = _LAYOUTS.get(agg)
    if layout is None:
        layout = _LAYOUTS[agg] = TileLayout(agg)
    return layout
