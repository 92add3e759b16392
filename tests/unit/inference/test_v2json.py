"""The REST fast path's codec: V2 JSON envelopes in, InvalidInput naming the problem, statuses out."""

from __future__ import annotations

import pytest
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady

from inference.tensors import BadRequest
from inference.v2json import error_status, parse_infer_request
from rtml_common.errors import NotReadyError, PayloadTooLargeError


def test_a_full_request_is_decoded():
    body = b'{"id": "r-9", "parameters": {"binary_data_output": true}, "inputs": [{"name": "a", "shape": [2], "datatype": "INT64", "data": [1, 2]}], "outputs": [{"name": "p"}]}'
    req = parse_infer_request(body, "m")
    assert req.id == "r-9" and req.model_name == "m" and req.use_binary_outputs
    assert [(i.name, i.shape, i.datatype, i.data) for i in req.inputs] == [("a", [2], "INT64", [1, 2])]
    assert [o.name for o in req.request_outputs] == ["p"]
    assert not req.from_grpc


@pytest.mark.parametrize(
    "body, message",
    [
        (b"{", "not JSON"),
        (b"[]", "JSON object"),
        (b"{}", "'inputs' must be a list"),
        (b'{"inputs": [], "id": 5}', "'id' must be a string"),
        (b'{"inputs": [1]}', "inputs[0] must be an object"),
        (b'{"inputs": [{"name": "a", "datatype": "INT64", "shape": 2, "data": [1]}]}', "needs 'name'"),
        (b'{"inputs": [{"name": "a", "datatype": "INT64", "shape": [1]}]}', "'a' has no 'data'"),
        (b'{"inputs": [], "outputs": [{"x": 1}]}', "'outputs' must be"),
        (b'{"inputs": [], "parameters": []}', "'parameters' must be an object"),
    ],
)
def test_malformed_envelopes_are_invalid_input(body, message):
    with pytest.raises(InvalidInput) as err:
        parse_infer_request(body, "m")
    assert message in str(err.value)


def test_error_statuses():
    assert error_status(BadRequest("x")) == 400
    assert error_status(InvalidInput("x")) == 400
    assert error_status(ModelNotFound("m")) == 404
    assert error_status(ModelNotReady("m")) == 503
    assert error_status(NotReadyError("x")) == 503
    assert error_status(PayloadTooLargeError("x")) == 413
    assert error_status(RuntimeError("x")) == 500
