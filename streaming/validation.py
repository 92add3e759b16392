"""Per-event validation against a declared source (feature_repo/sources.py). Pure functions.

Each source's declaration is compiled once into a decoder (one closure per field, type checks by
exact ``type`` so that JSON booleans never pass as numbers); ``decode_event`` looks it up.

``batch_decoder_for`` gives the same decisions for a whole poll of payloads: it checks the batch
column by column with C-level loops (``map``, ``min``, ``set``), ~5x cheaper per event, and when
any check fails it decodes the batch again one event at a time, so every rejection carries the
per-event decoder's exact reason.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from itertools import repeat
from operator import attrgetter, methodcaller
from typing import Callable

import orjson

from feature_repo.sources import TIME_MAX, TIME_MIN, EventSource, FieldSpec
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
    """Epoch seconds from ISO 8601 (naive = UTC) or a number of epoch seconds, inside [TIME_MIN, TIME_MAX)."""
    if isinstance(value, bool):
        raise InvalidEvent("type", f"field '{name}' must be an ISO 8601 timestamp or epoch seconds, got {value!r}")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not _isfinite(value):
            raise InvalidEvent("type", f"field '{name}' is not a finite number")
        secs = float(value) if -1e18 < value < 1e18 else math.copysign(1e18, value)  # no OverflowError on huge ints
    elif isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent("type", f"field '{name}' is not an ISO 8601 timestamp: {value[:40]!r}") from None
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        try:
            secs = ts.timestamp()
        except (OverflowError, ValueError):  # an offset that moves year 1 or 9999 out of datetime's range
            raise InvalidEvent("range", f"field '{name}' = {value[:40]!r} is outside the supported time range") from None
    else:
        raise InvalidEvent("type", f"field '{name}' must be an ISO 8601 timestamp or epoch seconds, got {type(value).__name__}")
    if not TIME_MIN <= secs < TIME_MAX:
        raise InvalidEvent("range", f"field '{name}' = {str(value)[:40]} is outside the supported time range "
                                    "[1970-01-01, 2261-01-01) UTC")
    return secs


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


_COMPILED: dict[tuple[int, Callable], tuple[EventSource, Callable]] = {}


def _compiled(source: EventSource, compile_: Callable[[EventSource], Callable]) -> Callable:
    """``compile_(source)``, once per source (sources are frozen)."""
    key = (id(source), compile_)
    hit = _COMPILED.get(key)
    if hit is None or hit[0] is not source:
        hit = _COMPILED[key] = (source, compile_(source))
    return hit[1]


def decoder_for(source: EventSource) -> Decoder:
    """The compiled decoder of ``source`` (compiled on first use)."""
    return _compiled(source, compile_decoder)


def decode_event(source: EventSource, payload: bytes | None) -> dict | None:
    """The validated, preprocessed event, ``None`` when the source's filter drops it.

    Raises ``InvalidEvent`` naming the first problem found. Timestamps come back as epoch seconds.
    """
    return decoder_for(source)(payload)


BatchDecoder = Callable[[list], list]
_NONE = type(None)
_tzinfo = attrgetter("tzinfo")
_as_utc = methodcaller("replace", tzinfo=timezone.utc)


class _Fallback(Exception):
    """The batch's column checks found something: decode it one event at a time."""


def _column_checker(spec: FieldSpec) -> Callable[[list], list] | None:
    """Checks and normalises one field's column of a batch (``None`` = absent); None when no columnar check exists.

    Raises ``_Fallback`` on anything the per-event decoder would reject or treat specially.
    """
    name, lo, hi, required, default = spec.name, spec.minimum, spec.maximum, spec.required, spec.default
    if spec.type == "timestamp":  # the supported time range (per event: parse_timestamp)
        lo = TIME_MIN if lo is None else max(lo, TIME_MIN)
        hi = TIME_MAX - 1e-6 if hi is None else min(hi, TIME_MAX - 1e-6)
    kinds = {"int": {int}, "float": {int, float}, "timestamp": {str, int, float}, "str": {str}, "bool": {bool}}.get(spec.type)
    if kinds is None:
        return None

    def check(column: list) -> list:
        types = set(map(type, column))
        if _NONE in types:
            if required:
                raise _Fallback(name)
            types.discard(_NONE)
            present = [v for v in column if v is not None]
        else:
            present = column
        if not types <= kinds:
            raise _Fallback(name)
        if spec.type == "timestamp":
            if types == {str}:
                parsed = list(map(datetime.fromisoformat, present))  # ValueError: per event, with its reason
                zones = set(map(_tzinfo, parsed))
                if None in zones:
                    if len(zones) > 1:
                        raise _Fallback(name)
                    parsed = map(_as_utc, parsed)
                present = list(map(datetime.timestamp, parsed))
            elif str in types:
                raise _Fallback(name)
            else:
                present = list(map(float, present))
                if not all(map(_isfinite, present)):
                    raise _Fallback(name)
        elif spec.type == "float":
            if int in types:
                present = list(map(float, present))
            if not all(map(_isfinite, present)):
                raise _Fallback(name)
        if present and ((lo is not None and min(present) < lo) or (hi is not None and max(present) > hi)):
            raise _Fallback(name)
        if present is column:
            return column
        if len(present) == len(column):
            return present
        values = iter(present)
        return [default if v is None else next(values) for v in column]
    return check


def compile_batch_decoder(source: EventSource) -> BatchDecoder:
    """The batch decoder of ``source``: payloads to one result each, the event, None (filtered) or the ``InvalidEvent``."""
    decode = decoder_for(source)
    checks = [_column_checker(spec) for spec in source.fields]
    names = tuple(spec.name for spec in source.fields)
    known = frozenset(names)
    strict = not source.allow_unknown_fields
    keep, transform, loads = source.keep, source.transform, orjson.loads
    columnar = all(c is not None for c in checks)

    def one_by_one(payloads: list) -> list:
        out = []
        for payload in payloads:
            try:
                out.append(decode(payload))
            except InvalidEvent as exc:
                out.append(exc)
        return out

    def decode_batch(payloads: list) -> list:
        if not columnar or not payloads:
            return one_by_one(payloads)
        try:
            raws = list(map(loads, payloads))
            if set(map(type, raws)) != {dict}:
                raise _Fallback("shape")
            as_declared = set(map(tuple, raws)) == {names}  # every field, in the declared order, nothing else
            if strict and not as_declared and not all(map(known.issuperset, raws)):
                raise _Fallback("shape")
            taken = [list(map(dict.get, raws, repeat(name))) for name in names]
            columns = [(name, column, check(column)) for name, column, check in zip(names, taken, checks)]
        except (_Fallback, orjson.JSONDecodeError, TypeError, ValueError, OverflowError):
            return one_by_one(payloads)
        if as_declared:  # the parsed dicts are the events once normalised columns are written back
            for name, column, checked in columns:
                if checked is not column:
                    any(map(dict.__setitem__, raws, repeat(name), checked))
            events = raws
        else:
            events = list(map(dict, map(zip, repeat(names), zip(*[checked for _, _, checked in columns]))))
        if keep is not None:
            events = [e if keep(e) else None for e in events]
        if transform is not None:
            events = [None if e is None else transform(e) for e in events]
        return events

    return decode_batch


def batch_decoder_for(source: EventSource) -> BatchDecoder:
    """The compiled batch decoder of ``source`` (compiled on first use)."""
    return _compiled(source, compile_batch_decoder)
