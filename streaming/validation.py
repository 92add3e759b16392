"""Per-event validation against a declared source (feature_repo/sources.py). Pure functions."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

from feature_repo.sources import EventSource, FieldSpec
from rtml_common.errors import InvalidInputError


class InvalidEvent(InvalidInputError):
    """An event that cannot be used; ``category`` is a bounded metric label, ``message`` the detail."""

    def __init__(self, category: str, message: str):
        super().__init__(message)
        self.category = category

    @property
    def reason(self) -> str:
        return f"{self.category}: {self.message}"


def parse_timestamp(value: object, name: str) -> float:
    """Epoch seconds from ISO 8601 (naive = UTC) or a number of epoch seconds."""
    if isinstance(value, bool):
        raise InvalidEvent("type", f"field '{name}' must be an ISO 8601 timestamp or epoch seconds, got {value!r}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise InvalidEvent("type", f"field '{name}' is not a finite number")
        return float(value)
    if isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent("type", f"field '{name}' is not an ISO 8601 timestamp: {value[:40]!r}") from None
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        return ts.timestamp()
    raise InvalidEvent("type", f"field '{name}' must be an ISO 8601 timestamp or epoch seconds, got {type(value).__name__}")


def _check_field(spec: FieldSpec, value: object) -> object:
    if spec.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidEvent("type", f"field '{spec.name}' must be an integer, got {value!r}"[:200])
    elif spec.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidEvent("type", f"field '{spec.name}' must be a number, got {value!r}"[:200])
        if not math.isfinite(value):
            raise InvalidEvent("type", f"field '{spec.name}' must be finite, got {value!r}")
        value = float(value)
    elif spec.type == "timestamp":
        value = parse_timestamp(value, spec.name)
    elif spec.type == "str":
        if not isinstance(value, str):
            raise InvalidEvent("type", f"field '{spec.name}' must be a string, got {value!r}"[:200])
        return value
    if spec.minimum is not None and value < spec.minimum:
        raise InvalidEvent("range", f"field '{spec.name}' = {value} is below the minimum {spec.minimum}")
    if spec.maximum is not None and value > spec.maximum:
        raise InvalidEvent("range", f"field '{spec.name}' = {value} is above the maximum {spec.maximum}")
    return value


def decode_event(source: EventSource, payload: bytes | None) -> dict | None:
    """The validated, preprocessed event, ``None`` when the source's filter drops it.

    Raises ``InvalidEvent`` naming the first problem found. Timestamps come back as epoch seconds.
    """
    if payload is None:
        raise InvalidEvent("unparseable", "empty message (tombstone)")
    try:
        raw = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent("unparseable", f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidEvent("unparseable", f"expected a JSON object, got {type(raw).__name__}")
    event: dict = {}
    for spec in source.fields:
        value = raw.get(spec.name)
        if value is None:
            if spec.required:
                raise InvalidEvent("missing", f"required field '{spec.name}' is missing")
            event[spec.name] = spec.default
            continue
        event[spec.name] = _check_field(spec, value)
    if not source.allow_unknown_fields:
        unknown = sorted(set(raw) - {f.name for f in source.fields})
        if unknown:
            raise InvalidEvent("unknown_field", f"unknown field(s) {unknown} for source '{source.name}'")
    if source.keep is not None and not source.keep(event):
        return None
    if source.transform is not None:
        event = source.transform(event)
    return event
