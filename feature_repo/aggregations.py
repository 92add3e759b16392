"""Declared windowed aggregations: the streaming engine executes exactly what is listed here.

Each window is a per-entity aggregate over event time. ``delay`` shifts the window into the past,
(t - (length + delay), t - delay], which is how the fraud handbook keeps terminal risk honest:
fraud labels arrive about a week after the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

DAY = timedelta(days=1)


@dataclass(frozen=True)
class Window:
    """One sliding event-time window of an entity's events."""

    length: timedelta
    delay: timedelta = timedelta(0)

    @property
    def suffix(self) -> str:
        return f"{int(self.length / DAY)}day_window"


@dataclass(frozen=True)
class AggregationInput:
    """Which events of a source feed an aggregation.

    ``role`` is ``event`` (counted and, for ``count_avg``, averaged over ``value_field``) or
    ``label`` (marks an earlier event, found by ``id_field``, with ``value_field`` = 1).
    ``time_field`` is the event time that places it in windows.
    """

    source: str
    role: str
    value_field: str | None = None
    time_field: str = "tx_datetime"
    id_field: str = "transaction_id"


@dataclass(frozen=True)
class EntityAggregation:
    """Which events feed an entity's state, and the features computed from it for each window.

    ``kind`` names the pure function in ``streaming`` that turns window state into features:
    ``count_avg`` gives ``<prefix>_nb_tx_<w>`` and ``<prefix>_avg_amount_<w>``;
    ``count_risk`` gives ``<prefix>_nb_tx_<w>`` and ``<prefix>_risk_<w>`` (labelled frauds / transactions).
    """

    entity: str
    join_key: str
    feature_view: str
    prefix: str
    kind: str
    windows: tuple[Window, ...]
    inputs: tuple[AggregationInput, ...] = ()

    def feature_names(self) -> list[str]:
        second = "avg_amount" if self.kind == "count_avg" else "risk"
        names = []
        for w in self.windows:
            names += [f"{self.prefix}_nb_tx_{w.suffix}", f"{self.prefix}_{second}_{w.suffix}"]
        return names

    @property
    def horizon(self) -> timedelta:
        """How far back state must reach to answer every window."""
        return max(w.length + w.delay for w in self.windows)


LABEL_DELAY = timedelta(days=7)

CUSTOMER_SPENDING = EntityAggregation(
    entity="customer",
    join_key="customer_id",
    feature_view="customer_spending",
    prefix="customer_id",
    kind="count_avg",
    windows=(Window(1 * DAY), Window(7 * DAY), Window(30 * DAY)),
    inputs=(AggregationInput("transactions", "event", value_field="tx_amount"),),
)

TERMINAL_RISK = EntityAggregation(
    entity="terminal",
    join_key="terminal_id",
    feature_view="terminal_risk",
    prefix="terminal_id",
    kind="count_risk",
    windows=(Window(1 * DAY, LABEL_DELAY), Window(7 * DAY, LABEL_DELAY), Window(30 * DAY, LABEL_DELAY)),
    inputs=(
        AggregationInput("transactions", "event"),
        AggregationInput("fraud_labels", "label", value_field="tx_fraud"),
    ),
)

AGGREGATIONS: tuple[EntityAggregation, ...] = (CUSTOMER_SPENDING, TERMINAL_RISK)
