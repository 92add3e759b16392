"""Test helpers of the engine: a naive reference of the declared windows, and real online rows.

``NaiveWindows`` is written from ``feature_repo.aggregations``' module docstring: it loops over
raw (decoded) events at every evaluation, with no tiles and no state. Tests compare the engine's
tiles, merged by ``TileLayout.features``, with it; integration tests use it too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Iterable, Mapping

from hypothesis import strategies as st

from feature_repo.aggregations import EntityAggregation
from feature_repo.tiles import layout_for
from streaming.engine import FeatureEngine
from streaming.windows import drain_rows


def us(seconds: float) -> int:
    """Epoch seconds as integer microseconds (the offline log's rounding)."""
    return round(seconds * 1_000_000)


def _td_us(td: timedelta) -> int:
    return (td.days * 86400 + td.seconds) * 1_000_000 + td.microseconds


class NaiveWindows:
    """The features of one aggregation from raw events and labels (engine inputs: epoch-second times).

    Events are distinct by (id, event time). A label counts, in the window holding its event's time
    (its own ``time_field``), iff its value is 1 and it became known (``known_field``, else its event
    time) no later than ``label_delay`` after the event; several labels of one (entity, id, time)
    count once. The event itself is not looked up.
    """

    def __init__(self, agg: EntityAggregation, events: Iterable[Mapping], labels: Iterable[Mapping] = ()):
        self.agg = agg
        labels = list(labels)
        ev = agg.event_input
        self.by_entity: dict[object, dict[tuple[int, int], Mapping]] = {}
        for e in events:
            self.by_entity.setdefault(e[agg.join_key], {}).setdefault((e[ev.id_field], us(e[ev.time_field])), e)
        self.positive: set[tuple[object, int, int]] = set()
        delay = _td_us(agg.label_delay)
        for inp in (i for i in agg.inputs if i.role == "label"):
            for lab in labels:
                if inp.value_field not in lab:
                    continue
                t = us(lab[inp.time_field])
                known = lab.get(inp.known_field) if inp.known_field else None
                known = t if known is None else us(known)
                if lab[inp.value_field] == 1 and known <= t + delay:
                    self.positive.add((lab[agg.join_key], lab[inp.id_field], t))

    def entities(self) -> list:
        return list(self.by_entity)

    def last_event_us(self, entity) -> int:
        return max(t for _, t in self.by_entity[entity])

    def features(self, entity, t_us: int, current: Mapping | None = None) -> list[float]:
        """Every feature of ``entity`` at ``t_us``, window by window as ``agg.feature_names()``;
        ``current`` (an event's fields) counts once in the windows with delay 0."""
        agg = self.agg
        tile = _td_us(agg.tile)
        events = self.by_entity.get(entity, {})
        out: list[float] = []
        for w in agg.windows:
            end = (t_us - _td_us(w.delay)) // tile * tile
            start = end - _td_us(w.length)
            inside = [(key, e) for key, e in events.items() if start <= key[1] < end]
            if current is not None and w.delay == timedelta(0):
                inside.append((None, current))
            n = len(inside)
            labelled = sum(1 for e, _, t in self.positive if e == entity and start <= t < end)
            for f in agg.features:
                values = [float(e[f.field]) for _, e in inside] if f.field else []
                if n == 0:
                    out.append(0.0)
                elif f.function == "count":
                    out.append(float(n))
                elif f.function == "sum":
                    out.append(sum(values))
                elif f.function == "mean":
                    out.append(sum(values) / n)
                elif f.function == "min":
                    out.append(min(values))
                elif f.function == "max":
                    out.append(max(values))
                else:  # ratio
                    out.append(labelled / n)
        return out


def engine_rows(t0: float) -> dict[str, list]:
    """Online rows of a real engine: packed tiles of 40 customers and 37 terminals, labels included."""
    engine = FeatureEngine()
    for i in range(400):
        t = t0 - 20 * 86400 + i * 3000.0
        event = {"transaction_id": i, "tx_datetime": t, "customer_id": 1 + i % 40, "terminal_id": 1 + i % 37, "tx_amount": 0.37 * i}
        engine.apply("transactions", event)
        if i % 5 == 0:
            engine.apply("fraud_labels", {**event, "tx_fraud": 1, "label_datetime": t + 3600})
    return engine.drain_online_values()


# -- generated engine inputs (hypothesis) -------------------------------------------------------
DAY = 86400.0
HOUR = 3600.0
BASE = 1_522_540_800.0  # 2018-04-01T00:00:00Z


def tx(i: int, t: float, amount: float = 10.0, customer: int = 1, terminal: int = 2) -> dict:
    return {"transaction_id": i, "tx_datetime": t, "customer_id": customer, "terminal_id": terminal, "tx_amount": amount}


def label(event: dict, fraud: int = 1, known: float | None = None) -> dict:
    lab = {k: event[k] for k in ("transaction_id", "tx_datetime", "customer_id", "terminal_id")}
    return {**lab, "tx_fraud": fraud, "label_datetime": known}


def feed(engine: FeatureEngine, stream: list[tuple[str, dict]], drains: frozenset[int] = frozenset()) -> None:
    """Apply every (source, event); drain the online rows after the positions in ``drains``."""
    for pos, (source, event) in enumerate(stream):
        engine.apply(source, dict(event))
        if pos in drains:
            engine.drain_online_values()


def blobs(engine: FeatureEngine) -> dict[str, dict]:
    """Every entity's packed tiles as the next online write would have them (all entities, pruned)."""
    out = {}
    for agg in engine.aggregations:
        states = engine.state[agg.feature_view]
        rows = drain_rows(layout_for(agg), set(states), states, engine.keep[agg.feature_view])
        out[agg.feature_view] = {entity: values[0] for entity, _, values in rows if states[entity].keys}
    return out


# -- generated streams --------------------------------------------------------------------------
# Amounts are multiples of 1/4 below 2**20: their float sums are exact in any order, so tiles must
# be bit-identical whatever the order (sums of arbitrary floats differ in the last bit by order).
_events = st.lists(st.tuples(st.integers(0, 80 * 24 * 4), st.sampled_from([0.0, 0.25, 0.5]), st.integers(0, 4000),
                             st.integers(1, 3), st.integers(1, 3)), min_size=1, max_size=40)
# Label known offsets: none (known at the event time), on time (up to exactly the 7-day delay), late.
_known = st.sampled_from([None, 0.0, HOUR, 7 * DAY, 7 * DAY + 1e-6, 7 * DAY + 1, 9 * DAY])


@st.composite
def streams(draw):
    """(source, event) pairs: transactions over 80 days, labels of some of them, duplicates of some of both."""
    events = [tx(i, BASE + q * 900 + frac, amount / 4, c, term) for i, (q, frac, amount, c, term) in enumerate(draw(_events))]
    labels = [label(events[i], fraud, None if off is None else events[i]["tx_datetime"] + off)
              for i, fraud, off in draw(st.lists(st.tuples(st.integers(0, len(events) - 1), st.integers(0, 1), _known), max_size=30))]
    stream = [("transactions", e) for e in events] + [("fraud_labels", lab) for lab in labels]
    stream += [stream[i] for i in draw(st.lists(st.integers(0, len(stream) - 1), max_size=10))]
    return stream


