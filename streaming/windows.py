"""Per-entity window state and the features computed from it. Pure Python, no I/O.

State keeps each event of the entity's horizon (longest window + delay + grace) in event-time
order, so every window is exact at any reference time and memory per entity is bounded by
the horizon. Events are identified by (id, event time): a replayed event (at-least-once delivery) is a
no-op, which makes the online store converge to the batch recomputation.

This module is the reference implementation. ``streaming/_windows_compiled.pyx`` is its compiled
twin (same rules, C arrays), built at install time where a C compiler is present;
``windows_implementation`` picks one of the two for the engine.
"""

from __future__ import annotations

import logging
from array import array
from bisect import bisect_left, bisect_right
from functools import partial, reduce
from operator import add
from typing import Callable, NamedTuple

from feature_repo.aggregations import EntityAggregation
from streaming.compiled import load as load_compiled

DAY_S = 86400.0


class _Timeline:
    """Events sorted by time in three flat arrays (time, value, id): 24 bytes an event.

    An event is identified by (id, time): a replay carries both, so it is found by searching
    the ids of the events stamped with its time, with no per-event index to keep.
    """

    __slots__ = ("times", "values", "ids")

    def __init__(self) -> None:
        self.times = array("d")
        self.values = array("d")
        self.ids = array("q")

    def add(self, event_id: int, ts: float, value: float) -> bool:
        times = self.times
        if not times or ts > times[-1]:  # the common case: a new latest event
            self.ids.append(event_id)  # first: an id that is no int64 raises before anything changed
            times.append(ts)
            self.values.append(value)
            return True
        lo = bisect_left(times, ts)
        hi = bisect_right(times, ts, lo)
        ids = self.ids
        for i in range(lo, hi):
            if ids[i] == event_id:
                return False
        ids.insert(hi, event_id)  # first: an id that is no int64 raises before anything changed
        times.insert(hi, ts)
        self.values.insert(hi, value)
        return True

    def span(self, lo: float, hi: float) -> tuple[int, int]:
        """Index range of events with lo < time <= hi."""
        return bisect_right(self.times, lo), bisect_right(self.times, hi)

    def prune(self, before: float) -> None:
        cut = bisect_right(self.times, before)
        if cut:
            del self.times[:cut]
            del self.values[:cut]
            del self.ids[:cut]


class EntityState:
    """Window state of one entity (customer, terminal, ...) for one aggregation."""

    __slots__ = ("events", "_labels", "last_event_time", "latest")

    def __init__(self) -> None:
        self.events = _Timeline()
        self._labels: _Timeline | None = None  # most entities never see a label: allocate on the first
        self.last_event_time: float | None = None
        # The features at last_event_time as the engine last computed them (values first), kept
        # until the next online write needs them; None once anything else changed the state.
        self.latest: list | None = None

    @property
    def labels(self) -> _Timeline:
        return self._labels if self._labels is not None else _NO_LABELS

    def add_event(self, event_id: int, ts: float, value: float = 0.0) -> bool:
        added = self.events.add(event_id, ts, value)
        if added and (self.last_event_time is None or ts > self.last_event_time):
            self.last_event_time = ts
        return added

    def add_label(self, event_id: int, ts: float, value: float) -> bool:
        # A negative label carries no information for the risk ratio, but is remembered so
        # that a replay of it stays a no-op.
        if self._labels is None:
            self._labels = _Timeline()
        return self._labels.add(event_id, ts, value)

    def prune(self, horizon_s: float) -> None:
        if self.last_event_time is not None:
            cutoff = self.last_event_time - horizon_s
            self.events.prune(cutoff)
            if self._labels is not None:
                self._labels.prune(cutoff)

    def maybe_prune(self, horizon_s: float) -> None:
        """Prune once enough events have expired to pay for moving the arrays (amortised O(1))."""
        times = self.events.times
        cutoff = self.last_event_time - horizon_s
        if times[0] <= cutoff:
            cut = bisect_right(times, cutoff)
            if cut >= PRUNE_MIN or 4 * cut >= len(times):
                self.prune(horizon_s)

    def fold_event(self, event_id: int, ts: float, value: float, kernel: Callable, horizon_s: float, entity_id) -> list | None:
        """Add one event; its offline row (features at ``ts``, then entity id and ``ts``), or None for a replay."""
        if not self.add_event(event_id, ts, value):
            return None
        row = kernel(self, ts)  # a fresh list
        row.append(entity_id)
        row.append(ts)
        # The newest event's row is also the entity's next online value (see drain_online_values).
        self.latest = row if ts == self.last_event_time else None
        self.maybe_prune(horizon_s)
        return row


PRUNE_MIN = 16
_NO_LABELS = _Timeline()


class FeaturePlan:
    """An aggregation's windows compiled for the hot path: feature names and (delay, length) in seconds."""

    __slots__ = ("names", "bounds")

    def __init__(self, agg: EntityAggregation):
        self.names: tuple[str, ...] = tuple(agg.feature_names())
        self.bounds: tuple[tuple[float, float], ...] = tuple(
            (w.delay.total_seconds(), w.length.total_seconds()) for w in agg.windows)


class EntityRoute:
    """Feeds one aggregation input (the events, or the labels, of one stream) into its entities' window states.

    ``apply(event, out, known_time)`` folds one validated event in and tells whether it changed
    anything (False for a replay). An event appends its offline row to ``out[view]`` (a buffer
    made by ``new_buffer``, with ``append(row)``) and the entity is marked dirty for the next
    online drain; a label also records when it became known (``known``: entity -> latest such time).
    """

    __slots__ = ("view", "join_key", "is_event", "time_field", "id_field", "value_field", "known_field", "kernel",
                 "new_state", "new_buffer", "states", "dirty", "known", "horizon")

    def __init__(self, view: str, join_key: str, is_event: bool, time_field: str, id_field: str, value_field: str | None,
                 known_field: str | None, kernel: Callable, new_state: Callable, new_buffer: Callable, states: dict,
                 dirty: set, known: dict, horizon: float):
        self.view, self.join_key, self.is_event = view, join_key, is_event
        self.time_field, self.id_field, self.value_field = time_field, id_field, value_field
        self.known_field = known_field  # when a label became known (its source's log time)
        self.kernel, self.new_state, self.new_buffer = kernel, new_state, new_buffer
        self.states, self.dirty, self.known, self.horizon = states, dirty, known, horizon

    def apply(self, event: dict, out: dict, known_time: float | None) -> bool:
        entity_id = event[self.join_key]
        st = self.states.get(entity_id)
        if st is None:
            st = self.states[entity_id] = self.new_state()
        ts = event[self.time_field]
        if self.is_event:
            row = st.fold_event(event[self.id_field], ts, float(event[self.value_field]) if self.value_field else 0.0,
                                self.kernel, self.horizon, entity_id)
            if row is None:  # a replay: already counted
                return False
            buffer = out.get(self.view)
            if buffer is None:
                buffer = out[self.view] = self.new_buffer()
            buffer.append(row)
        else:
            if not st.add_label(event[self.id_field], ts, float(event[self.value_field])):
                return False
            st.latest = None
            if known_time is None:
                known_time = (event.get(self.known_field) or ts) if self.known_field else ts
            known = self.known
            known[entity_id] = max(known.get(entity_id, 0.0), known_time)
        self.dirty.add(entity_id)
        return True


def drain_rows(dirty: set, states: dict, kernel: Callable, width: int, known: dict, written: dict) -> list:
    """The online rows ``(entity_id, stamp, values)`` of the dirty entities of one feature view; clears ``dirty``.

    Windows are evaluated at the entity's last event time t, but the row is stamped with when
    its content was known (a later label) and strictly after the previous write (``written``):
    online stores such as Feast's Redis keep a row only if its timestamp is newer.
    """
    rows = []
    for entity_id in dirty:
        st = states[entity_id]
        t = st.last_event_time
        if t is None:
            continue  # labels for an entity whose events we have not seen yet
        latest = st.latest
        if latest is not None:  # computed for the offline row of its newest event, nothing changed since
            st.latest = None
            current = latest[:width]
        else:
            current = kernel(st, t)
        stamp = max(t, known.get(entity_id, t), written.get(entity_id, -1.0) + 0.001)
        written[entity_id] = stamp
        rows.append((entity_id, stamp, current))
    dirty.clear()
    return rows


# Window sums add left to right (reduce), not with sum(): from Python 3.12 sum() compensates
# float rounding, and the compiled twin must give the same floats on every supported Python.
def _count_avg(bounds, state: EntityState, t: float) -> list:
    """Count and average of event values in (t - length - delay, t - delay] for each window."""
    out: list = []
    times, values = state.events.times, state.events.values
    last_delay = hi = None
    for delay, length in bounds:
        hi_t = t - delay
        if delay != last_delay:  # windows sharing a delay share their right edge
            hi, last_delay = bisect_right(times, hi_t), delay
        lo = bisect_right(times, hi_t - length, 0, hi)
        n = hi - lo
        out.append(n)
        out.append(reduce(add, values[lo:hi], 0.0) / n if n else 0.0)
    return out


def _count_risk(bounds, state: EntityState, t: float) -> list:
    """Count of events and share of them labelled positive, in (t - (length+delay), t - delay]."""
    out: list = []
    times, lab = state.events.times, state.labels
    ltimes, lvalues = lab.times, lab.values
    last_delay = hi = lhi = None
    for delay, length in bounds:
        hi_t = t - delay
        if delay != last_delay:
            hi, lhi, last_delay = bisect_right(times, hi_t), bisect_right(ltimes, hi_t), delay
        lo_t = hi_t - length
        lo = bisect_right(times, lo_t, 0, hi)
        n = hi - lo
        out.append(n)
        out.append(reduce(add, lvalues[bisect_right(ltimes, lo_t, 0, lhi):lhi], 0.0) / n if n else 0.0)
    return out


FEATURE_FUNCTIONS = {"count_avg": _count_avg, "count_risk": _count_risk}
_PLANS: dict[EntityAggregation, FeaturePlan] = {}


def plan_for(agg: EntityAggregation) -> FeaturePlan:
    """The compiled plan of ``agg`` (cached: aggregations are frozen)."""
    plan = _PLANS.get(agg)
    if plan is None:
        plan = _PLANS[agg] = FeaturePlan(agg)
    return plan


class WindowImplementation(NamedTuple):
    """One implementation of the engine's per-event work: entity state, kernels, routes and the online drain."""

    name: str
    state: Callable[[], EntityState]  # a new, empty entity state
    kernel: Callable[[str, tuple], Callable[[EntityState, float], list]]  # (kind, bounds) -> values(state, t)
    route: type  # EntityRoute or its compiled twin
    drain: Callable[..., list]  # drain_rows or its compiled twin

    def features_at(self, state, t: float, agg: EntityAggregation) -> dict:
        """The aggregation's features of ``state`` (of this implementation) at ``t``, by feature name."""
        plan = plan_for(agg)
        return dict(zip(plan.names, self.kernel(agg.kind, plan.bounds)(state, t)))


# A Python kernel is its function with the bounds bound by partial: no Python frame between the two.
PYTHON_WINDOWS = WindowImplementation("python", EntityState, lambda kind, bounds: partial(FEATURE_FUNCTIONS[kind], bounds),
                                      EntityRoute, drain_rows)


def _compiled_windows() -> WindowImplementation | None:
    """The compiled twin, if it was built from the ``.pyx`` as it is now (``streaming.compiled``)."""
    compiled = load_compiled("_windows_compiled")
    if compiled is None:
        return None
    return WindowImplementation("compiled", compiled.EntityState, compiled.Kernel, compiled.EntityRoute, compiled.drain_rows)


COMPILED_WINDOWS = _compiled_windows()


def windows_implementation(compiled: bool = True) -> WindowImplementation:
    """The compiled windows when asked for and built, the Python ones otherwise."""
    if compiled and COMPILED_WINDOWS is None:
        logging.getLogger(__name__).info("compiled windows not built: using the Python implementation")
    return COMPILED_WINDOWS if compiled and COMPILED_WINDOWS is not None else PYTHON_WINDOWS
