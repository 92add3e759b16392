"""Declared windowed aggregations: the one definition both executions run.

The streaming engine folds events into *tiles* of this declaration (``feature_repo.tiles``),
the transformer merges the tiles at each request's time, and the training-set builder
(``components.dataset``) computes the same windows from the raw event log with DuckDB. A new
use case declares its own aggregations here; no engine code changes.

Semantics (every execution implements exactly these):

* **Tiles.** Event time is cut into tiles of ``tile`` (an aggregation's resolution, 1 hour for
  the fraud use case); an event at time ``e`` belongs to tile ``floor(e / tile)``, with ``e`` in
  integer microseconds since the epoch (UTC).
* **Windows are hopped on tiles.** A window of ``length`` L and ``delay`` D evaluated at time t
  covers the whole tiles in ``[end - L, end)`` with ``end = floor((t - D) / tile) * tile``:
  events with ``end - L <= e < end``. It moves one tile at a time (Chronon's hops, Tecton's and
  Feast's tiles): the events of the still-open tile are not in it. L and D are multiples of
  ``tile``.
* **The current event.** Windows with delay 0 also counts the event being evaluated (the
  transaction being scored, or the training row's own transaction), exactly once: it is never
  inside ``[end - L, end)`` because ``end <= t``.
* **Intermediate representations.** Tiles keep count, sums, minima, maxima and positive labels;
  means and ratios are computed after merging. An empty window gives 0 for every feature.
* **Events are identified by (id, event time).** A replayed or duplicated event counts once.
* **Labels.** A label marks an earlier event of the same entity (named by ``id_field`` and its
  event time) as positive. It counts in the tile of that event time (whether or not the event
  itself was seen: labels come from the system of record) iff its value is 1 and it became
  known (``known_field``, the event time when absent) no later than ``label_delay`` after the
  event; a later label is ignored by the features (it still labels the training row). Several
  labels of one event count once: positive if any on-time label is. Windows of an aggregation
  with a ``ratio`` feature must have ``delay >= label_delay``: every label they count was known
  at t, online and in training alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from rtml_common.errors import ConfigurationError

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
FUNCTIONS = ("count", "sum", "mean", "min", "max", "ratio")


def _us(td: timedelta) -> int:
    return (td.days * 86400 + td.seconds) * 1_000_000 + td.microseconds


def duration_label(td: timedelta) -> str:
    """``1day``, ``6h``, ``15min``, ``30s``: the largest unit that divides the duration."""
    us = _us(td)
    for unit, name in ((86400, "day"), (3600, "h"), (60, "min"), (1, "s")):
        if us % (unit * 1_000_000) == 0:
            return f"{us // (unit * 1_000_000)}{name}"
    raise ConfigurationError(f"window length {td} is not a whole number of seconds")


@dataclass(frozen=True)
class Window:
    """One hopped event-time window: tiles in ``[end - length, end)``, ``end`` = tile start at or before t - delay."""

    length: timedelta
    delay: timedelta = timedelta(0)

    @property
    def suffix(self) -> str:
        """Name part of its features: ``1day_window``, ``15min_window``, ..."""
        return f"{duration_label(self.length)}_window"


@dataclass(frozen=True)
class Feature:
    """One aggregate per window: ``name`` is a template with ``{window}`` (the window's suffix).

    ``function``: ``count`` (events), ``sum``/``mean``/``min``/``max`` of the event field ``field``,
    or ``ratio`` (events labelled positive / events).
    """

    name: str
    function: str
    field: str | None = None


@dataclass(frozen=True)
class AggregationInput:
    """Which events of a source feed an aggregation.

    ``role`` is ``event`` (counted, its fields aggregated) or ``label`` (marks an earlier event,
    found by ``id_field`` and ``time_field``, positive when ``value_field`` is 1; ``known_field``
    says when it became known). ``time_field`` places the event (or the labelled event) in tiles.
    """

    source: str
    role: str
    value_field: str | None = None
    time_field: str = "tx_datetime"
    id_field: str = "transaction_id"
    known_field: str | None = None


@dataclass(frozen=True)
class EntityAggregation:
    """An entity's windows and the features of each, fed by ``inputs`` and kept as ``tile``-sized tiles.

    ``key_type`` is the join key's type (``int`` or ``str``). ``label_delay`` is how late a label
    may become known and still count (see the module docstring).
    """

    entity: str
    join_key: str
    feature_view: str
    windows: tuple[Window, ...]
    features: tuple[Feature, ...]
    inputs: tuple[AggregationInput, ...]
    tile: timedelta = HOUR
    label_delay: timedelta = timedelta(0)
    key_type: str = "int"

    def __post_init__(self) -> None:
        tile = _us(self.tile)
        if tile <= 0:
            raise ConfigurationError(f"{self.feature_view}: tile must be positive, got {self.tile}")
        for w in self.windows:
            if _us(w.length) <= 0 or _us(w.length) % tile or _us(w.delay) < 0 or _us(w.delay) % tile:
                raise ConfigurationError(
                    f"{self.feature_view}: window {w} must have a positive length and a delay >= 0, both multiples of the tile {self.tile}")
        for f in self.features:
            if f.function not in FUNCTIONS:
                raise ConfigurationError(f"{self.feature_view}: feature {f.name!r} has unknown function {f.function!r} ({FUNCTIONS})")
            if (f.function in ("sum", "mean", "min", "max")) != (f.field is not None):
                raise ConfigurationError(f"{self.feature_view}: feature {f.name!r}: {f.function} {'needs' if f.field is None else 'takes no'} field")
        if self.key_type not in ("int", "str"):
            raise ConfigurationError(f"{self.feature_view}: key_type must be 'int' or 'str', not {self.key_type!r}")
        roles = [i.role for i in self.inputs]
        if roles.count("event") != 1 or any(r not in ("event", "label") for r in roles):
            raise ConfigurationError(f"{self.feature_view}: needs exactly one 'event' input and optional 'label' inputs, got {roles}")
        if self.uses_labels:
            if "label" not in roles:
                raise ConfigurationError(f"{self.feature_view}: a ratio feature needs a 'label' input")
            early = [w for w in self.windows if w.delay < self.label_delay]
            if early:
                raise ConfigurationError(
                    f"{self.feature_view}: windows {early} have a delay below the label delay {self.label_delay}: "
                    "their ratio would count labels not yet known at request time")

    @property
    def uses_labels(self) -> bool:
        return any(f.function == "ratio" for f in self.features)

    @property
    def event_input(self) -> AggregationInput:
        return next(i for i in self.inputs if i.role == "event")

    def feature_names(self) -> list[str]:
        """Every feature, window by window, in declaration order."""
        return [f.name.format(window=w.suffix) for w in self.windows for f in self.features]

    @property
    def horizon(self) -> timedelta:
        """How far back of t a window reaches (longest length + delay, plus the open tile)."""
        return max(w.length + w.delay for w in self.windows) + self.tile


LABEL_DELAY = timedelta(days=7)

CUSTOMER_SPENDING = EntityAggregation(
    entity="customer",
    join_key="customer_id",
    feature_view="customer_spending",
    windows=(Window(1 * DAY), Window(7 * DAY), Window(30 * DAY)),
    features=(Feature("customer_id_nb_tx_{window}", "count"),
              Feature("customer_id_avg_amount_{window}", "mean", "tx_amount")),
    inputs=(AggregationInput("transactions", "event"),),
)

TERMINAL_RISK = EntityAggregation(
    entity="terminal",
    join_key="terminal_id",
    feature_view="terminal_risk",
    windows=(Window(1 * DAY, LABEL_DELAY), Window(7 * DAY, LABEL_DELAY), Window(30 * DAY, LABEL_DELAY)),
    features=(Feature("terminal_id_nb_tx_{window}", "count"), Feature("terminal_id_risk_{window}", "ratio")),
    inputs=(
        AggregationInput("transactions", "event"),
        AggregationInput("fraud_labels", "label", value_field="tx_fraud", known_field="label_datetime"),
    ),
    label_delay=LABEL_DELAY,
)

AGGREGATIONS: tuple[EntityAggregation, ...] = (CUSTOMER_SPENDING, TERMINAL_RISK)
