"""Turning raw transactions plus online tiles into the model's input (pure functions).

Every aggregation of ``feature_repo.aggregations.AGGREGATIONS`` is evaluated here, at request
time: its entity's packed tiles (``feature_repo.tiles``) are merged at the transaction's own time
t, and the transaction being scored is added to the delay-0 windows by the merge. That is the
definition training computes from the raw event log, so:

* the scored transaction counts exactly once whether or not the engine has ingested it yet
  (hopped windows never include the still-open tile of t, which is where it would be);
* an entity with no online row has empty windows (zeros, plus the current transaction in the
  delay-0 windows), exactly what training computes for an entity with no history. The model's
  ``defaults`` are therefore not used for window features.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Mapping

import numpy as np

from feature_repo.aggregations import AGGREGATIONS
from feature_repo.model_inputs import MODEL_INPUTS, REQUEST_FEATURES, calendar_features
from feature_repo.tiles import US, layout_for
from inference.tensors import BadRequest
from rtml_common.errors import ConfigurationError, InvalidInputError, RtmlError

LAYOUTS = tuple(layout_for(a) for a in AGGREGATIONS)
"""One tile layout per aggregation, in ``AGGREGATIONS`` order (the order of the tile columns)."""

ENTITY_KEYS: tuple[str, ...] = tuple(a.join_key for a in AGGREGATIONS)
"""Request inputs that key each aggregation's tiles, in ``AGGREGATIONS`` order."""

EVENT_FIELDS: tuple[str, ...] = tuple(sorted({f for layout in LAYOUTS for f in layout.fields}))
"""Request inputs the merge adds to delay-0 windows as the current transaction's fields."""

# Where each aggregation's features go in MODEL_INPUTS: the declaration, not this module, fixes the order.
_COLUMNS = tuple(np.array([MODEL_INPUTS.index(n) for n in layout.names], dtype=np.intp) for layout in LAYOUTS)
assert REQUEST_FEATURES == ["tx_amount", "tx_during_weekend", "tx_during_night"]
_AMOUNT, _WEEKEND, _NIGHT = (MODEL_INPUTS.index(n) for n in REQUEST_FEATURES)
assert sorted([MODEL_INPUTS.index(n) for n in REQUEST_FEATURES] + [i for c in _COLUMNS for i in c.tolist()]) == list(range(len(MODEL_INPUTS))), \
    "MODEL_INPUTS must be the request features plus every aggregation's features, each once"
# Requests carry whole epoch seconds; flooring them to a tile gives the tile of the exact event time
# only when tiles are whole seconds (1 hour here).
if any(layout.tile_us % US for layout in LAYOUTS):
    raise ConfigurationError("the transformer evaluates windows at whole-second request times: every aggregation's tile must be whole seconds")


def epoch_seconds(tx_datetime: np.ndarray) -> np.ndarray:
    """INT64 epoch seconds as they are, or BYTES ISO-8601 strings parsed (naive = UTC) to epoch seconds."""
    if tx_datetime.dtype.kind in "iu":
        return tx_datetime.astype(np.int64, copy=False)
    out = np.empty(len(tx_datetime), dtype=np.int64)
    for i, raw in enumerate(tx_datetime):
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        try:
            ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"input 'tx_datetime' row {i}: {text[:64]!r} is not an ISO-8601 date-time") from None
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        out[i] = int(ts.timestamp())
    return out


def assemble(request: Mapping[str, np.ndarray], epoch: np.ndarray, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model input rows [N, len(MODEL_INPUTS)] (float32) and which entities had no online row.

    ``request`` holds the request's columns: ``tx_amount`` and every event field a layout adds
    for the current transaction (``TileLayout.fields``). ``epoch`` is each row's request time in
    epoch seconds (the transaction's ``tx_datetime``). ``tiles`` is an object array
    [N, len(AGGREGATIONS)]: each entity's packed tiles (bytes), None where the store has no row.
    The missing mask has the same shape as ``tiles``.
    """
    epoch = np.asarray(epoch, dtype=np.int64)
    n = len(epoch)
    t_us = epoch * US
    amount = np.asarray(request["tx_amount"], dtype=np.float64)
    missing = np.equal(tiles, None).reshape(n, len(LAYOUTS))
    x = np.empty((n, len(MODEL_INPUTS)), dtype=np.float32)
    weekend, night = calendar_features(epoch)
    x[:, _AMOUNT], x[:, _WEEKEND], x[:, _NIGHT] = amount, weekend, night
    for j, (layout, cols) in enumerate(zip(LAYOUTS, _COLUMNS)):
        current = {f: request[f] for f in layout.fields}
        try:
            x[:, cols] = layout.features(tiles[:, j], t_us, current)
        except InvalidInputError as e:
            # Tiles of another layout are the deployment's fault (engine and transformer run different
            # feature repos), not the caller's: answer 500, not 400.
            raise RtmlError(e.message) from e
    return x, missing
