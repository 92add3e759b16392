"""Request validation against declared tensors: every malformed request is a BadRequest naming the problem."""

from __future__ import annotations

import numpy as np
import pytest
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from inference.predictor import INPUT_SPECS as PREDICTOR_INPUTS
from inference.tensors import BadRequest, outputs, validate_inputs
from inference.transformer import INPUT_SPECS as TRANSFORMER_INPUTS
from rtml_common.errors import InvalidInputError


def req(*inputs: InferInput, from_grpc: bool = False) -> InferRequest:
    return InferRequest("m", list(inputs), request_id="r", from_grpc=from_grpc)


def tx_inputs(n=2, **override):
    base = {
        "customer_id": ([n], "INT64", list(range(n))),
        "terminal_id": ([n], "INT64", list(range(10, 10 + n))),
        "tx_amount": ([n], "FP64", [1.5] * n),
        "tx_datetime": ([n], "INT64", [1_700_000_000] * n),
    }
    base.update(override)
    return [InferInput(name, shape, dt, data) for name, (shape, dt, data) in base.items() if data is not None]


def test_valid_transformer_request_converts_each_input():
    arrays = validate_inputs(req(*tx_inputs()), TRANSFORMER_INPUTS)
    assert arrays["customer_id"].dtype == np.int64 and arrays["customer_id"].tolist() == [0, 1]
    assert arrays["tx_amount"].dtype == np.float64
    assert arrays["tx_datetime"].shape == (2,)


def test_tx_datetime_is_optional():
    arrays = validate_inputs(req(*tx_inputs(tx_datetime=([2], "INT64", None))), TRANSFORMER_INPUTS)
    assert set(arrays) == {"customer_id", "terminal_id", "tx_amount"}


def test_bytes_datetime_is_accepted_as_objects():
    arrays = validate_inputs(req(*tx_inputs(tx_datetime=([2], "BYTES", ["2024-01-01T00:00:00Z"] * 2))), TRANSFORMER_INPUTS)
    assert arrays["tx_datetime"].dtype == object


def test_bad_request_is_400_on_both_edges():
    err = BadRequest("x")
    assert isinstance(err, InvalidInputError) and err.http_status == 400
    assert isinstance(err, InvalidInput) and err.reason == "x" and str(err) == "x"


@pytest.mark.parametrize(
    "inputs, message",
    [
        ([], "no inputs"),
        (tx_inputs(tx_amount=([2], "FP32", None)), "missing input(s) ['tx_amount']"),
        (tx_inputs() + [InferInput("extra", [2], "INT64", [1, 2])], "unknown input 'extra'"),
        (tx_inputs() + [InferInput("customer_id", [2], "INT64", [1, 2])], "more than once"),
        (tx_inputs(customer_id=([2], "FP32", [1.0, 2.0])), "datatype 'FP32' is not accepted"),
        (tx_inputs(customer_id=([3], "INT64", [1, 2])), "2 values do not match shape [3]"),
        (tx_inputs(customer_id=([2, 1], "INT64", [1, 2])), "does not match the declared shape [-1]"),
        (tx_inputs(customer_id=([-2], "INT64", [1, 2])), "non-negative integers"),
        (tx_inputs(customer_id=([2], "INT64", [1, "x"])), "INT64 data must be integers, got 'x'"),
        (tx_inputs(customer_id=([2], "INT64", [1, 2.5])), "must be integers, got 2.5"),
        (tx_inputs(tx_amount=([2], "FP64", ["a", "b"])), "must be numbers, got 'a'"),
        (tx_inputs(tx_amount=([2], "FP64", [1.0, float("nan")])), "NaN or infinity"),
        (tx_inputs(tx_amount=([2], "FP64", [[1.0], [2.0, 3.0]])), "not a regular array"),
        (tx_inputs(customer_id=([3], "INT64", [1, 2, 3])), "different numbers of rows"),
        (tx_inputs(n=0), "zero rows"),
        (tx_inputs(tx_datetime=([2], "BYTES", [1, 2])), "BYTES data must be strings"),
    ],
)
def test_malformed_requests_name_the_problem(inputs, message):
    with pytest.raises(BadRequest) as err:
        validate_inputs(req(*inputs), TRANSFORMER_INPUTS)
    assert message in str(err.value)


def test_predictor_checks_the_feature_width():
    ok = InferInput("features", [2, 15], "FP32", [0.0] * 30)
    assert validate_inputs(req(ok), PREDICTOR_INPUTS)["features"].shape == (2, 15)
    narrow = InferInput("features", [2, 14], "FP32", [0.0] * 28)
    with pytest.raises(BadRequest, match=r"shape \[2, 14\] does not match the declared shape \[-1, 15\]"):
        validate_inputs(req(narrow), PREDICTOR_INPUTS)


def test_raw_binary_inputs_are_size_checked():
    good = InferInput("features", [1, 15], "FP32")
    good.set_data_from_numpy(np.arange(15, dtype=np.float32).reshape(1, 15), binary_data=True)
    got = validate_inputs(req(good), PREDICTOR_INPUTS)["features"]
    assert got.tolist() == [list(range(15))]
    short = InferInput("features", [1, 15], "FP32")
    short._raw_data = b"\0" * 12
    with pytest.raises(BadRequest, match="12 raw bytes do not hold 15 FP32 values"):
        validate_inputs(req(short), PREDICTOR_INPUTS)


def test_outputs_are_encoded_for_grpc_only():
    probs = np.array([0.1, 0.9], dtype=np.float32)
    rest = outputs(req(), [("p", "FP32", probs)])[0]
    assert isinstance(rest.data, np.ndarray)
    grpc = outputs(req(from_grpc=True), [("p", "FP32", probs)])[0]
    assert grpc.data == pytest.approx([0.1, 0.9])
