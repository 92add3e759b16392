"""Runs tritonclient.grpc calls in a child process and prints their results as JSON.

tritonclient's grpc_service.proto and kserve's grpc_predict_v2.proto both define the
``inference`` protobuf package; one process cannot import both (protobuf refuses the
duplicate symbols), and the test process imports kserve. So gRPC client checks run here:
``python triton_grpc_calls.py < {"url": ..., "calls": [...]}``.
"""

from __future__ import annotations

import json
import subprocess
import sys

NUMPY_TYPES = {"INT64": "int64", "FP32": "float32", "FP64": "float64", "BYTES": "object"}


def run_calls(spec: dict) -> list:
    import numpy as np
    import tritonclient.grpc as tg
    from tritonclient.utils import InferenceServerException

    client = tg.InferenceServerClient(spec["url"])
    results = []
    for call in spec["calls"]:
        try:
            if call["op"] == "health":
                results.append({"live": client.is_server_live(), "ready": client.is_server_ready(), "model_ready": client.is_model_ready(call["model"])})
            elif call["op"] == "metadata":
                results.append(client.get_model_metadata(call["model"], as_json=True))
            else:
                inputs = []
                for t in call["inputs"]:
                    data = np.array([v.encode() if isinstance(v, str) else v for v in t["data"]], dtype=NUMPY_TYPES[t["datatype"]])
                    inp = tg.InferInput(t["name"], list(data.shape), t["datatype"])
                    inp.set_data_from_numpy(data)
                    inputs.append(inp)
                res = client.infer(call["model"], inputs, request_id=call.get("request_id", ""))
                outputs = {o.name: res.as_numpy(o.name).tolist() for o in res.get_response().outputs}
                outputs = {k: [x.decode() if isinstance(x, bytes) else x for x in v] for k, v in outputs.items()}
                resp = res.get_response()
                results.append({"id": resp.id, "model_name": resp.model_name, "model_version": resp.model_version, "outputs": outputs})
        except InferenceServerException as e:
            results.append({"error": {"status": e.status(), "message": e.message()}})
    return results


def grpc_calls(url: str, calls: list[dict], timeout_s: float = 60) -> list:
    """Run ``calls`` against the gRPC server at ``url`` in a child process; one result per call."""
    out = subprocess.run(
        [sys.executable, __file__], input=json.dumps({"url": url, "calls": calls}), capture_output=True, text=True, timeout=timeout_s
    )
    if out.returncode != 0:
        raise RuntimeError(f"gRPC client process failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout)


if __name__ == "__main__":
    print(json.dumps(run_calls(json.load(sys.stdin))))
