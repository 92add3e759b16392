"""Declared event sources of the fraud use case: topic, schema and per-source preprocessing.

The streaming engine validates every event against its source's declaration; an event that
fails goes to ``<topic>.dlq`` with the reason. Nothing about these fields is hard-coded in
the consume loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class FieldSpec:
    """One field of an event: its type, whether it is required, its allowed range and default."""

    name: str
    type: str  # "int", "float", "bool", "str", "timestamp" (ISO 8601 or epoch seconds), "object" (kept as JSON text)
    required: bool = True
    minimum: float | None = None
    maximum: float | None = None
    default: object = None


@dataclass(frozen=True)
class EventSource:
    """A Kafka topic with a JSON schema and the preprocessing steps applied after validation.

    ``event_time`` names the timestamp field windows use. ``keep`` filters events (False =
    skip, counted but not dead-lettered: a filter is a decision, not an error).
    ``transform`` derives or normalises fields of a validated event.
    """

    name: str
    topic: str
    fields: tuple[FieldSpec, ...]
    event_time: str
    allow_unknown_fields: bool = False
    keep: Callable[[dict], bool] | None = None
    transform: Callable[[dict], dict] | None = None
    key_field: str | None = None
    log_time: str | None = None  # event_timestamp of the raw offline log; event_time when unset or missing
    extra: dict = field(default_factory=dict)


INT64_MAX = (1 << 63) - 1  # ids are int64 in Feast's entity keys and in the engine's window state
# Event times every store and the training path represent (epoch seconds, [TIME_MIN, TIME_MAX)): pandas'
# nanosecond timestamps end in April 2262; tiles count microseconds from the epoch. Outside: reason 'range'.
TIME_MIN = 0.0  # 1970-01-01T00:00:00Z
TIME_MAX = 9_183_110_400.0  # 2261-01-01T00:00:00Z


def _round_amount(event: dict) -> dict:
    event["tx_amount"] = round(event["tx_amount"], 2)
    return event


TRANSACTIONS = EventSource(
    name="transactions",
    topic="transactions",
    fields=(
        FieldSpec("transaction_id", "int", minimum=0, maximum=INT64_MAX),
        FieldSpec("tx_datetime", "timestamp"),
        FieldSpec("customer_id", "int", minimum=0, maximum=INT64_MAX),
        FieldSpec("terminal_id", "int", minimum=0, maximum=INT64_MAX),
        FieldSpec("tx_amount", "float", minimum=0.0, maximum=1_000_000.0),
    ),
    event_time="tx_datetime",
    transform=_round_amount,
    key_field="customer_id",
)

FRAUD_LABELS = EventSource(
    name="fraud_labels",
    topic="fraud-labels",
    fields=(
        FieldSpec("transaction_id", "int", minimum=0, maximum=INT64_MAX),
        FieldSpec("tx_datetime", "timestamp"),
        FieldSpec("customer_id", "int", minimum=0, maximum=INT64_MAX),
        FieldSpec("terminal_id", "int", minimum=0, maximum=INT64_MAX),
        FieldSpec("tx_fraud", "int", minimum=0, maximum=1),
        FieldSpec("label_datetime", "timestamp", required=False),
    ),
    event_time="tx_datetime",
    key_field="terminal_id",
    log_time="label_datetime",
)

PREDICTIONS = EventSource(
    name="predictions",
    topic="predictions",
    fields=(
        FieldSpec("request_id", "str"),
        FieldSpec("model_name", "str"),
        FieldSpec("model_version", "str"),
        FieldSpec("customer_id", "int", minimum=0, maximum=INT64_MAX),
        FieldSpec("terminal_id", "int", minimum=0, maximum=INT64_MAX),
        FieldSpec("tx_amount", "float"),
        FieldSpec("tx_datetime", "timestamp"),
        FieldSpec("fraud_probability", "float", minimum=0.0, maximum=1.0),
        FieldSpec("is_fraud", "bool"),
        FieldSpec("scored_at", "timestamp"),
        FieldSpec("features", "object", required=False),
    ),
    # The serving path's prediction log: landed in the offline store for monitoring and drift
    # analysis (no aggregation reads it).
    event_time="scored_at",
    key_field="customer_id",
)

SOURCES: tuple[EventSource, ...] = (TRANSACTIONS, FRAUD_LABELS, PREDICTIONS)
