"""The feature engine core: validated events in, offline rows and online rows out. No I/O.

The Kafka runner (``streaming.runner``) feeds it; tests and the restore path feed it
directly. Which events feed which entity, and which features come out, is read from the
feature repo's declarations (``feature_repo.aggregations`` and ``feature_repo.sources``).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timezone

from feature_repo.aggregations import AGGREGATIONS, EntityAggregation
from feature_repo.sources import SOURCES, EventSource
from streaming.windows import EntityState, features_at

PRUNE_EVERY = 5000


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class FeatureEngine:
    """Keeps window state per (aggregation, entity) and derives feature rows from events.

    ``apply(source, event)`` updates state and returns offline rows for that event;
    ``drain_online()`` returns the latest features of every entity touched since the last
    call (one row per entity, at the entity's latest event time), ready for the online store.
    """

    def __init__(self, aggregations: tuple[EntityAggregation, ...] = AGGREGATIONS,
                 sources: tuple[EventSource, ...] = SOURCES, grace_s: float = 0.0):
        self.aggregations = aggregations
        self.sources = {s.name: s for s in sources}
        self.state: dict[str, dict[int, EntityState]] = {a.feature_view: defaultdict(EntityState) for a in aggregations}
        self._dirty: dict[str, set[int]] = {a.feature_view: set() for a in aggregations}
        self._horizon = {a.feature_view: a.horizon.total_seconds() + grace_s for a in aggregations}
        self._routes = defaultdict(list)  # source name -> [(aggregation, input)]
        for agg in aggregations:
            for inp in agg.inputs:
                self._routes[inp.source].append((agg, inp))
        self._since_prune = 0

    def apply(self, source: str, event: dict) -> dict[str, list[dict]]:
        """Fold one validated event into state; returns offline rows by table name."""
        rows: dict[str, list[dict]] = {source: [self._raw_row(source, event)]}
        for agg, inp in self._routes[source]:
            entity_id = event[agg.join_key]
            st = self.state[agg.feature_view][entity_id]
            ts = event[inp.time_field]
            if inp.role == "event":
                value = float(event[inp.value_field]) if inp.value_field else 0.0
                if not st.add_event(event[inp.id_field], ts, value):
                    continue  # a replay: already counted
                row = features_at(st, ts, agg)
                row[agg.join_key] = entity_id
                row["event_timestamp"] = _utc(ts)
                rows.setdefault(agg.feature_view, []).append(row)
            else:
                if not st.add_label(event[inp.id_field], ts, float(event[inp.value_field])):
                    continue
            self._dirty[agg.feature_view].add(entity_id)
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self.prune()
        return rows

    def drain_online(self) -> dict[str, list[dict]]:
        """Latest features of each entity touched since the last drain, by feature view."""
        out: dict[str, list[dict]] = {}
        for agg in self.aggregations:
            dirty = self._dirty[agg.feature_view]
            if not dirty:
                continue
            states = self.state[agg.feature_view]
            rows = []
            for entity_id in dirty:
                st = states[entity_id]
                if st.last_event_time is None:
                    continue  # labels for an entity whose events we have not seen yet
                row = features_at(st, st.last_event_time, agg)
                row[agg.join_key] = entity_id
                row["event_timestamp"] = _utc(st.last_event_time)
                rows.append(row)
            dirty.clear()
            if rows:
                out[agg.feature_view] = rows
        return out

    def prune(self) -> None:
        """Drop events older than each entity's horizon (bounded memory per entity)."""
        self._since_prune = 0
        for agg in self.aggregations:
            horizon = self._horizon[agg.feature_view]
            for st in self.state[agg.feature_view].values():
                st.prune(horizon)

    def entity_count(self) -> int:
        return sum(len(s) for s in self.state.values())

    def _raw_row(self, source: str, event: dict) -> dict:
        spec = self.sources[source]
        row = dict(event)
        for f in spec.fields:
            if f.type == "timestamp" and row.get(f.name) is not None:
                row[f.name] = _utc(row[f.name])
        # Labels are logged at the time they became known, so training can tell what was known when.
        row["event_timestamp"] = row.get(spec.log_time) or row[spec.event_time] if spec.log_time else row[spec.event_time]
        return row
