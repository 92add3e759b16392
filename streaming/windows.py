"""Per-entity window state and the features computed from it. Pure Python, no I/O.

State keeps each event of the entity's horizon (longest window + delay + grace) in event-time
order, so every window is exact at any reference time and memory per entity is bounded by
the horizon. Events are identified by id: a replayed event (at-least-once delivery) is a
no-op, which makes the online store converge to the batch recomputation.
"""

from __future__ import annotations

from bisect import bisect_right, insort

from feature_repo.aggregations import EntityAggregation

DAY_S = 86400.0


class _Timeline:
    """Sorted (time, value) pairs with an id set for de-duplication."""

    __slots__ = ("times", "values", "ids")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.values: list[float] = []
        self.ids: dict[int, float] = {}

    def add(self, event_id: int, ts: float, value: float) -> bool:
        if event_id in self.ids:
            return False
        self.ids[event_id] = ts
        if not self.times or ts >= self.times[-1]:
            self.times.append(ts)
            self.values.append(value)
        else:
            i = bisect_right(self.times, ts)
            self.times.insert(i, ts)
            self.values.insert(i, value)
        return True

    def span(self, lo: float, hi: float) -> tuple[int, int]:
        """Index range of events with lo < time <= hi."""
        return bisect_right(self.times, lo), bisect_right(self.times, hi)

    def prune(self, before: float) -> None:
        cut = bisect_right(self.times, before)
        if cut:
            del self.times[:cut]
            del self.values[:cut]
            self.ids = {k: t for k, t in self.ids.items() if t > before}


class EntityState:
    """Window state of one entity (customer, terminal, ...) for one aggregation."""

    __slots__ = ("events", "labels", "last_event_time")

    def __init__(self) -> None:
        self.events = _Timeline()
        self.labels = _Timeline()
        self.last_event_time: float | None = None

    def add_event(self, event_id: int, ts: float, value: float = 0.0) -> bool:
        added = self.events.add(event_id, ts, value)
        if added and (self.last_event_time is None or ts > self.last_event_time):
            self.last_event_time = ts
        return added

    def add_label(self, event_id: int, ts: float, value: float) -> bool:
        # A negative label carries no information for the risk ratio, but is remembered so
        # that a replay of it stays a no-op.
        return self.labels.add(event_id, ts, value)

    def prune(self, horizon_s: float) -> None:
        if self.last_event_time is not None:
            cutoff = self.last_event_time - horizon_s
            self.events.prune(cutoff)
            self.labels.prune(cutoff)


def count_avg(state: EntityState, t: float, agg: EntityAggregation) -> list[float]:
    """Count and average of event values in (t - length, t] for each window."""
    out: list[float] = []
    ev = state.events
    for w in agg.windows:
        delay = w.delay.total_seconds()
        lo, hi = ev.span(t - delay - w.length.total_seconds(), t - delay)
        n = hi - lo
        out.append(n)
        out.append(sum(ev.values[lo:hi]) / n if n else 0.0)
    return out


def count_risk(state: EntityState, t: float, agg: EntityAggregation) -> list[float]:
    """Count of events and share of them labelled positive, in (t - (length+delay), t - delay]."""
    out: list[float] = []
    ev, lab = state.events, state.labels
    for w in agg.windows:
        delay = w.delay.total_seconds()
        lo_t, hi_t = t - delay - w.length.total_seconds(), t - delay
        lo, hi = ev.span(lo_t, hi_t)
        n = hi - lo
        llo, lhi = lab.span(lo_t, hi_t)
        positives = sum(lab.values[llo:lhi])
        out.append(n)
        out.append(positives / n if n else 0.0)
    return out


FEATURE_FUNCTIONS = {"count_avg": count_avg, "count_risk": count_risk}


def features_at(state: EntityState, t: float, agg: EntityAggregation) -> dict[str, float]:
    """The aggregation's features of ``state`` at reference time ``t``, by feature name."""
    values = FEATURE_FUNCTIONS[agg.kind](state, t, agg)
    return dict(zip(agg.feature_names(), values))
