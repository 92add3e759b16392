"""The JSON body of a V2 infer request straight into kserve's InferRequest, and errors to statuses.

This is the REST fast path's codec: kserve's route validates the body with pydantic, then
converts it again, and serialises the response through FastAPI's generic encoder; for a
small fraud request that is most of the server's time. Decoding here checks only the
envelope; the tensors are checked by the model against its declared inputs.
"""

from __future__ import annotations

import orjson
from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady, ServerNotReady
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

from rtml_common.errors import RtmlError


def _bad(message: str) -> InvalidInput:
    return InvalidInput(f"invalid inference request: {message}")


def parse_infer_request(body: bytes, model_name: str) -> InferRequest:
    """Decode a V2 JSON infer request; InvalidInput naming the problem when it is not one."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise _bad(f"body is not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise _bad("body must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list):
        raise _bad("'inputs' must be a list of tensors")
    request_id = doc.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise _bad("'id' must be a string")
    parameters = doc.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _bad("'parameters' must be an object")
    inputs = []
    for i, t in enumerate(raw_inputs):
        if not isinstance(t, dict):
            raise _bad(f"inputs[{i}] must be an object")
        name, datatype, shape = t.get("name"), t.get("datatype"), t.get("shape")
        if not isinstance(name, str) or not isinstance(datatype, str) or not isinstance(shape, list):
            raise _bad(f"inputs[{i}] needs 'name' (string), 'datatype' (string) and 'shape' (list)")
        if "data" not in t:
            raise _bad(f"input {name!r} has no 'data'")
        params = t.get("parameters")
        inputs.append(InferInput(name, shape, datatype, t["data"], params if isinstance(params, dict) else None))
    outputs = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in raw_outputs):
            raise _bad("'outputs' must be a list of objects with a 'name'")
        outputs = [RequestedOutput(o["name"], o.get("parameters") if isinstance(o.get("parameters"), dict) else {}) for o in raw_outputs]
    return InferRequest(model_name, inputs, request_id=request_id, parameters=parameters, request_outputs=outputs)


def error_status(exc: BaseException) -> int:
    """The HTTP status an exception answers with (the same mapping as kserve's REST handlers plus RtmlError)."""
    if isinstance(exc, RtmlError):
        return exc.http_status
    if isinstance(exc, InvalidInput):
        return 400
    if isinstance(exc, ModelNotFound):
        return 404
    if isinstance(exc, (ModelNotReady, ServerNotReady)):
        return 503
    if isinstance(exc, NotImplementedError):
        return 501
    return 500
