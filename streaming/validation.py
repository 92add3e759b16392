"""Per-event validation against a declared source (feature_repo/sources.py). Pure functions.

Each source's declaration is compiled once into a decoder (one closure per field, type checks by
exact ``type`` so that JSON booleans never pass as numbers); ``decode_event`` looks it up.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Callable

import orjson

from feature_repo.sources import EventSource, FieldSpec
from rtml_common.errors import InvalidInputError

_isfinite = math.isfinite


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
        if not _isfinite(value):
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


def _range_checker(spec: FieldSpec) -> Callable[[object], None] | None:
    lo, hi, name = spec.minimum, spec.maximum, spec.name
    if lo is None and hi is None:
        return None

    def check(value) -> None:
        if lo is not None and value < lo:
            raise InvalidEvent("range", f"field '{name}' = {value} is below the minimum {lo}")
        if hi is not None and value > hi:
            raise InvalidEvent("range", f"field '{name}' = {value} is above the maximum {hi}")
    return check


def _field_checker(spec: FieldSpec) -> Callable[[object], object]:
    """A function validating and normalising one present (non-null) value of ``spec``."""
    name, in_range = spec.name, _range_checker(spec)
    if spec.type == "int":
        def check(value):
            if type(value) is not int:  # exact type: JSON true/false must not pass as 1/0
                raise InvalidEvent("type", f"field '{name}' must be an integer, got {value!r}"[:200])
            if in_range is not None:
                in_range(value)
            return value
    elif spec.type == "float":
        def check(value):
            kind = type(value)
            if kind is int:
                value = float(value)
            elif kind is not float:
                raise InvalidEvent("type", f"field '{name}' must be a number, got {value!r}"[:200])
            elif not _isfinite(value):
                raise InvalidEvent("type", f"field '{name}' must be finite, got {value!r}")
            if in_range is not None:
                in_range(value)
            return value
    elif spec.type == "timestamp":
        def check(value):
            value = parse_timestamp(value, name)
            if in_range is not None:
                in_range(value)
            return value
    elif spec.type == "str":
        def check(value):
            if type(value) is not str:
                raise InvalidEvent("type", f"field '{name}' must be a string, got {value!r}"[:200])
            return value
    elif spec.type == "bool":
        def check(value):
            if type(value) is not bool:
                raise InvalidEvent("type", f"field '{name}' must be true or false, got {value!r}"[:200])
            return value
    elif spec.type == "object":
        def check(value):
            # Kept as compact JSON text: one offline column, whatever the object's keys.
            if type(value) is not dict:
                raise InvalidEvent("type", f"field '{name}' must be a JSON object, got {type(value).__name__}")
            return orjson.dumps(value).decode()
    else:
        raise ValueError(f"field '{name}' of a source declares unknown type {spec.type!r}")
    return check


Decoder = Callable[[bytes | None], "dict | None"]


def compile_decoder(source: EventSource) -> Decoder:
    """The decoder of ``source``: payload bytes to the validated, preprocessed event (see ``decode_event``)."""
    fields = tuple((spec.name, spec.required, spec.default, _field_checker(spec)) for spec in source.fields)
    known = frozenset(spec.name for spec in source.fields)
    strict = not source.allow_unknown_fields
    keep, transform, source_name = source.keep, source.transform, source.name
    loads = orjson.loads

    def decode(payload: bytes | None) -> dict | None:
        if payload is None:
            raise InvalidEvent("unparseable", "empty message (tombstone)")
        try:
            raw = loads(payload)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent("unparseable", f"not JSON: {exc}") from None
        if type(raw) is not dict:
            raise InvalidEvent("unparseable", f"expected a JSON object, got {type(raw).__name__}")
        event = {}
        get = raw.get
        for name, required, default, check in fields:
            value = get(name)
            if value is None:
                if required:
                    raise InvalidEvent("missing", f"required field '{name}' is missing")
                event[name] = default
            else:
                event[name] = check(value)
        if strict and not known.issuperset(raw):
            unknown = sorted(set(raw) - known)
            raise InvalidEvent("unknown_field", f"unknown field(s) {unknown} for source '{source_name}'")
        if keep is not None and not keep(event):
            return None
        if transform is not None:
            event = transform(event)
        return event

    return decode


_DECODERS: dict[int, tuple[EventSource, Decoder]] = {}


def decoder_for(source: EventSource) -> Decoder:
    """The compiled decoder of ``source`` (compiled on first use)."""
    hit = _DECODERS.get(id(source))
    if hit is None or hit[0] is not source:
        hit = _DECODERS[id(source)] = (source, compile_decoder(source))
    return hit[1]


def decode_event(source: EventSource, payload: bytes | None) -> dict | None:
    """The validated, preprocessed event, ``None`` when the source's filter drops it.

    Raises ``InvalidEvent`` naming the first problem found. Timestamps come back as epoch seconds.
    """
    return decoder_for(source)(payload)
