"""What the transformer and the predictor share: V2 metadata from specs, gRPC request accounting."""

from __future__ import annotations

import time

from kserve import Model
from kserve.protocol.infer_type import InferRequest

from inference import metrics
from inference.tensors import BadRequest, TensorSpec


class V2Model(Model):
    """A kserve Model declaring its tensors through ``input_specs``/``output_specs``.

    REST requests are counted and timed by the HTTP middleware (it sees every status, also
    rejections before the model); gRPC has no such hook in kserve's server, so gRPC requests
    are counted here. Either way the ``model_version`` label is the version that answered
    (``metrics.note_served_version``), which under a canary split is not always ``self.version``.
    """

    input_specs: list[TensorSpec] = []
    output_specs: list[TensorSpec] = []

    def __init__(self, name: str):
        super().__init__(name)
        self.version = ""

    def get_input_types(self) -> list[dict]:
        return [s.metadata() for s in self.input_specs]

    def get_output_types(self) -> list[dict]:
        return [s.metadata() for s in self.output_specs]

    async def __call__(self, body, headers=None, verb=None):
        if not (isinstance(body, InferRequest) and body.from_grpc):
            return await super().__call__(body, headers)
        start = time.perf_counter()
        status = "500"
        served, token = metrics.open_version_slot()
        try:
            result = await super().__call__(body, headers)
            status = "200"
            return result
        except BadRequest:
            status = "400"
            raise
        finally:
            metrics.close_version_slot(token)
            labels = (self.name, served[-1] if served else self.version, status)
            metrics.REQUESTS.labels(*labels).inc()
            metrics.REQUEST_DURATION.labels(*labels).observe(time.perf_counter() - start)
