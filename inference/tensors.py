"""V2 tensors in and out: declared specs, request validation, numpy conversion.

Every request is checked against the model's declared inputs before anything runs, so a
malformed request is answered 400 with a message naming the input and the problem
(the stock server answers many of them 500, or accepts unknown inputs).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest

from rtml_common.errors import InvalidInputError

_NUMPY = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "FP32": np.float32,
    "FP64": np.float64,
}


class BadRequest(InvalidInputError, InvalidInput):
    """400 on both edges: rtml's REST handler reads ``http_status``, kserve's gRPC interceptor maps InvalidInput."""

    def __init__(self, message: str):
        InvalidInputError.__init__(self, message)
        self.reason = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class TensorSpec:
    """A declared input or output: name, accepted datatypes (the first is advertised), shape (-1 = any) and
    whether a request may leave it out (``optional``: the handler supplies it)."""

    name: str
    datatypes: tuple[str, ...]
    shape: tuple[int, ...]
    optional: bool = False

    def metadata(self) -> dict:
        """The V2 model-metadata entry."""
        return {"name": self.name, "datatype": self.datatypes[0], "shape": list(self.shape)}


def validate_inputs(request: InferRequest, specs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """Check a request against ``specs`` and return each input as a numpy array (BYTES: object array).

    Raises BadRequest naming the problem: no inputs, a missing, unknown or repeated input, a
    wrong datatype, a shape that is not the declared one or does not match the data, data
    that is not of the declared type, rows of different lengths across inputs.
    """
    by_name = {s.name: s for s in specs}
    inputs = request.inputs or []
    if not inputs:
        raise BadRequest(f"the request has no inputs; expected {_names(specs)}")
    arrays: dict[str, np.ndarray] = {}
    for inp in inputs:
        spec = by_name.get(inp.name)
        if spec is None:
            raise BadRequest(f"unknown input {inp.name!r}; expected {_names(specs)}")
        if inp.name in arrays:
            raise BadRequest(f"input {inp.name!r} is given more than once")
        arrays[inp.name] = _to_array(inp, spec)
    missing = [s.name for s in specs if s.name not in arrays and not s.optional]
    if missing:
        raise BadRequest(f"missing input(s) {missing}; expected {_names(specs)}")
    rows = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(rows.values())) > 1:
        raise BadRequest(f"inputs have different numbers of rows: {rows}")
    if next(iter(rows.values())) == 0:
        raise BadRequest("the request has zero rows")
    return arrays


def _names(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.name} {'|'.join(s.datatypes)} {list(s.shape)}" for s in specs)


def _check_shape(inp: InferInput, spec: TensorSpec) -> tuple[int, ...]:
    shape = inp.shape
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(f"input {inp.name!r}: shape {shape!r} must be a list of non-negative integers")
    if len(shape) != len(spec.shape) or any(want not in (-1, got) for want, got in zip(spec.shape, shape)):
        raise BadRequest(f"input {inp.name!r}: shape {list(shape)} does not match the declared shape {list(spec.shape)}")
    return tuple(shape)


def _to_array(inp: InferInput, spec: TensorSpec) -> np.ndarray:
    if inp.datatype not in spec.datatypes:
        raise BadRequest(f"input {inp.name!r}: datatype {inp.datatype!r} is not accepted; use {' or '.join(spec.datatypes)}")
    shape = _check_shape(inp, spec)
    n = int(np.prod(shape)) if shape else 1
    raw = getattr(inp, "_raw_data", None)
    if raw is not None:
        arr = _from_raw(inp, raw, n)
    else:
        arr = _from_list(inp, n)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise BadRequest(f"input {inp.name!r}: data contains NaN or infinity")
    return arr.reshape(shape)


def _from_raw(inp: InferInput, raw: bytes, n: int) -> np.ndarray:
    if inp.datatype == "BYTES":
        try:
            arr = inp.as_numpy().reshape(-1)
        except Exception as e:  # a malformed length prefix: say so instead of a 500
            raise BadRequest(f"input {inp.name!r}: malformed BYTES raw data ({e})") from e
    else:
        dtype = np.dtype(_NUMPY[inp.datatype])
        if len(raw) != n * dtype.itemsize:
            raise BadRequest(f"input {inp.name!r}: {len(raw)} raw bytes do not hold {n} {inp.datatype} values")
        arr = np.frombuffer(raw, dtype=dtype)
    if arr.size != n:
        raise BadRequest(f"input {inp.name!r}: {arr.size} values do not match shape {list(inp.shape)}")
    return arr


def _from_list(inp: InferInput, n: int) -> np.ndarray:
    data = inp.data
    if data is None:
        raise BadRequest(f"input {inp.name!r} has no data")
    try:
        arr = np.asarray(data)
    except ValueError as e:  # ragged nesting
        raise BadRequest(f"input {inp.name!r}: data is not a regular array ({e})") from e
    arr = arr.reshape(-1)
    if arr.size != n:
        raise BadRequest(f"input {inp.name!r}: {arr.size} values do not match shape {list(inp.shape)}")
    if inp.datatype == "BYTES":
        if n and arr.dtype.kind not in "SUO":
            raise BadRequest(f"input {inp.name!r}: BYTES data must be strings")
        return arr.astype(object)
    kind = arr.dtype.kind
    want = np.dtype(_NUMPY[inp.datatype])
    if n == 0:
        return np.zeros(0, dtype=want)
    ok = {"b": "b", "i": "biu", "u": "bu", "f": "biuf"}[want.kind]
    if kind not in ok:
        what = "booleans" if want.kind == "b" else "integers" if want.kind in "iu" else "numbers"
        raise BadRequest(f"input {inp.name!r}: {inp.datatype} data must be {what}, got {_first_bad(data, want.kind)}")
    if want.kind == "u" and kind == "i" and (arr < 0).any():
        raise BadRequest(f"input {inp.name!r}: {inp.datatype} data must not be negative")
    try:
        return arr.astype(want)
    except (OverflowError, ValueError) as e:
        raise BadRequest(f"input {inp.name!r}: {e}") from e


def _first_bad(data, kind: str) -> str:
    """The first value of the wrong kind, for the error message."""
    stack = [data]
    while stack:
        v = stack.pop()
        if isinstance(v, (list, tuple)):
            stack.extend(reversed(v))
        elif kind == "b" and not isinstance(v, bool) or kind in "iu" and not isinstance(v, int) or not isinstance(v, (int, float)):
            return repr(v)[:64]
    return "values of another type"


def outputs(request: InferRequest, tensors: list[tuple[str, str, np.ndarray]]) -> list[InferOutput]:
    """InferOutputs for (name, datatype, array) triples, encoded for the protocol ``request`` came by.

    REST keeps numpy arrays (kserve's encoder honours the requested binary/JSON form per
    output); gRPC is encoded here because kserve's gRPC encoder cannot take numpy data.
    """
    result = []
    for name, datatype, values in tensors:
        out = InferOutput(name=name, shape=list(values.shape), datatype=datatype, data=values)
        if request.from_grpc:
            out.set_data_from_numpy(values, binary_data=request.use_binary_outputs)
        result.append(out)
    return result
