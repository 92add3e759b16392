"""The real serving path: `python -m inference` subprocesses, a real Feast SQLite store holding tiles, tritonclient and httpx.

One server runs both models in one process (the local default); a predictor plus two
transformers calling it over V2 REST and gRPC (the Kubernetes layout) must give the same answers: the
model on the inputs recomputed from the raw events at each request's time.
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime, timezone

import httpx
import numpy as np
import pytest
import tritonclient.http as thttp
from tritonclient.utils import InferenceServerException

from feature_repo.model_inputs import FEATURE_SERVICE, MODEL_INPUTS
from feature_repo.store import FeatureStoreSettings, apply_definitions
from rtml_common.kafka import make_consumer
from tests.integration.inference_fixtures import US, Server, make_model_dir, reference_forward, reference_vectors, write_events
from tests.integration.triton_grpc_calls import grpc_calls

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
CUSTOMERS, TERMINALS = [1, 2, 3], [10, 20]
SAT_NIGHT = int(datetime(2024, 5, 4, 3, 0, tzinfo=timezone.utc).timestamp())
MON_NOON = int(datetime(2024, 5, 6, 12, 0, tzinfo=timezone.utc).timestamp())
HOUR, DAY = 3600, 86400


def make_events() -> list[dict]:
    """Raw events of the known entities over the 45 days before MON_NOON and a day after it, some on tile
    boundaries and some inside the still-open tile of a request time (neither may count for that request)."""
    rng = np.random.default_rng(11)
    n = 900
    t = MON_NOON * US + rng.integers(-45 * DAY * US, DAY * US, n)
    t[:40] = t[:40] // (HOUR * US) * (HOUR * US)
    t[40:60] = MON_NOON * US + rng.integers(0, HOUR * US, 20)
    t[60:80] = SAT_NIGHT * US + rng.integers(0, HOUR * US, 20)
    return [{"customer_id": int(c), "terminal_id": int(k), "t_us": int(ts), "tx_amount": float(a), "fraud": bool(f)}
            for c, k, ts, a, f in zip(rng.choice(CUSTOMERS, n), rng.choice(TERMINALS, n), t, np.round(rng.gamma(2.0, 30.0, n), 2),
                                      rng.random(n) < 0.1)]


EVENTS = make_events()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("rtml_home")
    store = apply_definitions(FeatureStoreSettings(home=home))
    write_events(store, EVENTS)
    model_dir = make_model_dir(home / "registry" / MODEL / "3")
    return {"home": home, "store": store, "model_dir": model_dir}


@pytest.fixture(scope="module")
def server(env, tmp_path_factory):
    """Transformer and predictor in one process, the local default."""
    s = Server(env["home"], tmp_path_factory.mktemp("logs") / "all.log", "--role", "all", env={"RTML_MAX_REQUEST_BYTES": "65536"})
    try:
        yield s.wait_ready()
    finally:
        s.stop()


@pytest.fixture(scope="module")
def servers(env, tmp_path_factory):
    """A predictor and two transformers calling it, over V2 REST and over gRPC."""
    logs = tmp_path_factory.mktemp("logs")
    p = Server(env["home"], logs / "predictor.log", "--role", "predictor")
    started = {"predictor": p}
    try:
        for proto, port in (("v2", p.http_port), ("grpc-v2", p.grpc_port)):
            started[proto] = Server(
                env["home"], logs / f"{proto}.log", "--role", "transformer", "--predictor-host", f"127.0.0.1:{port}", "--predictor-protocol", proto
            )
        for s in started.values():
            s.wait_ready()
        yield started
    finally:
        for s in started.values():
            s.stop()


BATCH = dict(customers=[1, 2, 3, 1], terminals=[10, 20, 10, 20], amounts=[12.5, 80.0, 3.25, 400.0], epochs=[SAT_NIGHT, MON_NOON, MON_NOON, SAT_NIGHT])


def expected(env, customers, terminals, amounts, epochs) -> np.ndarray:
    """The model's own forward pass on the inputs recomputed from the raw events at each request's time."""
    rows = reference_vectors(EVENTS, zip(customers, terminals, amounts, epochs))
    return np.array(reference_forward(env["model_dir"], rows.tolist()), dtype=np.float32)


def test_the_store_holds_tiles_the_reference_is_not_trivial(env):
    """Feast serves the tiles written through its provider; the requests below meet non-empty windows."""
    store = env["store"]
    online = store.get_online_features(features=store.get_feature_service(FEATURE_SERVICE), full_feature_names=True,
                                       entity_rows=[{"customer_id": c, "terminal_id": t} for c, t in zip(CUSTOMERS, TERMINALS * 2)]).to_dict()
    assert all(isinstance(b, bytes) and len(b) > 8 for col in ("customer_spending__tiles", "terminal_risk__tiles") for b in online[col])
    x = reference_vectors(EVENTS, zip(*BATCH.values()))
    assert (x[:, 3:] > 0).mean() > 0.9  # windows with events in them, risk ratios included


def triton_inputs(customers, terminals, amounts, epochs, binary=True, iso=False):
    n = len(customers)
    if iso:
        dt = np.array([datetime.fromtimestamp(e, timezone.utc).isoformat().encode() for e in epochs], dtype=object)
    else:
        dt = np.array(epochs, dtype=np.int64)
    values = {
        "customer_id": np.array(customers, dtype=np.int64),
        "terminal_id": np.array(terminals, dtype=np.int64),
        "tx_amount": np.array(amounts, dtype=np.float32),
        "tx_datetime": dt,
    }
    inputs = []
    for name, v in values.items():
        inp = thttp.InferInput(name, [n], "BYTES" if v.dtype == object else {np.int64: "INT64", np.float32: "FP32"}[v.dtype.type])
        inp.set_data_from_numpy(v, binary_data=binary)
        inputs.append(inp)
    return inputs


def v2_body(**tensors) -> dict:
    return {"id": "req-1", "inputs": [{"name": n, "shape": [len(d)], "datatype": dt, "data": d} for n, (dt, d) in tensors.items()]}


GOOD = dict(customer_id=("INT64", [1]), terminal_id=("INT64", [10]), tx_amount=("FP64", [12.5]), tx_datetime=("INT64", [MON_NOON]))


def test_health_and_metadata_over_http(server):
    c = thttp.InferenceServerClient(server.url)
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready(MODEL)
    assert c.get_server_metadata()["name"]
    meta = c.get_model_metadata(MODEL)
    assert [i["name"] for i in meta["inputs"]] == ["customer_id", "terminal_id", "tx_amount", "tx_datetime"]
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("fraud_probability", "FP32"), ("is_fraud", "BOOL"), ("model_version", "BYTES")]
    pred = c.get_model_metadata(MODEL + "-predictor")
    assert pred["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 15]}]


def test_health_and_metadata_over_grpc(server):
    health, meta = grpc_calls(f"127.0.0.1:{server.grpc_port}", [{"op": "health", "model": MODEL}, {"op": "metadata", "model": MODEL}])
    assert health == {"live": True, "ready": True, "model_ready": True}
    assert [o["name"] for o in meta["outputs"]] == ["fraud_probability", "is_fraud", "model_version"]


@pytest.mark.parametrize("binary", [False, True])
def test_http_batch_matches_the_models_forward_pass(env, server, binary):
    c = thttp.InferenceServerClient(server.url)
    res = c.infer(MODEL, triton_inputs(**BATCH, binary=binary), request_id="batch-1")
    want = expected(env, **BATCH)
    np.testing.assert_allclose(res.as_numpy("fraud_probability"), want, rtol=1e-5, atol=1e-6)
    assert res.as_numpy("is_fraud").tolist() == (want >= 0.5).tolist()
    assert res.as_numpy("model_version").tolist() == [b"3"] * 4
    response = res.get_response()
    assert response["id"] == "batch-1" and response["model_name"] == MODEL and response["model_version"] == "3"


def grpc_infer(customers, terminals, amounts, epochs, model=MODEL, request_id="", drop=()) -> dict:
    tensors = [("customer_id", "INT64", customers), ("terminal_id", "INT64", terminals), ("tx_amount", "FP32", amounts), ("tx_datetime", "INT64", epochs)]
    inputs = [{"name": n, "datatype": dt, "data": d} for n, dt, d in tensors if n not in drop]
    return {"op": "infer", "model": model, "inputs": inputs, "request_id": request_id}


def test_grpc_batch_matches_the_models_forward_pass(env, server):
    (res,) = grpc_calls(f"127.0.0.1:{server.grpc_port}", [grpc_infer(**BATCH, request_id="grpc-1")])
    np.testing.assert_allclose(res["outputs"]["fraud_probability"], expected(env, **BATCH), rtol=1e-5, atol=1e-6)
    assert res["id"] == "grpc-1" and res["model_version"] == "3" and res["outputs"]["model_version"] == ["3"] * 4


def test_iso_datetimes_score_like_epoch_seconds(server):
    c = thttp.InferenceServerClient(server.url)
    by_epoch = c.infer(MODEL, triton_inputs(**BATCH)).as_numpy("fraud_probability")
    by_iso = c.infer(MODEL, triton_inputs(**BATCH, iso=True)).as_numpy("fraud_probability")
    np.testing.assert_array_equal(by_epoch, by_iso)


def missing_count(server) -> float:
    text = httpx.get(f"http://{server.url}/metrics").text
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith("rtml_inference_missing_entities_total{"))


def test_unknown_entities_are_scored_with_empty_windows_and_counted(env, server):
    before = missing_count(server)
    tx = dict(customers=[999, 1], terminals=[10, 777], amounts=[50.0, 5.0], epochs=[MON_NOON, MON_NOON])
    res = thttp.InferenceServerClient(server.url).infer(MODEL, triton_inputs(**tx))
    np.testing.assert_allclose(res.as_numpy("fraud_probability"), expected(env, **tx), rtol=1e-5, atol=1e-6)
    assert missing_count(server) == before + 2


@pytest.mark.parametrize("mode", ["v2", "grpc-v2"])
def test_transformer_calling_a_remote_predictor_gives_the_same_answers(env, servers, mode):
    res = thttp.InferenceServerClient(servers[mode].url).infer(MODEL, triton_inputs(**BATCH), request_id="remote")
    np.testing.assert_allclose(res.as_numpy("fraud_probability"), expected(env, **BATCH), rtol=1e-5, atol=1e-6)
    assert res.get_response()["model_version"] == "3" and res.get_response()["id"] == "remote"


@pytest.mark.parametrize(
    "tensors, status, message",
    [
        (dict(GOOD, customer_id=("INT64", [1, 2])), 400, "different numbers of rows"),
        (dict(GOOD, customer_id=("FP32", [1.0])), 400, "datatype 'FP32' is not accepted"),
        ({k: v for k, v in GOOD.items() if k != "tx_amount"}, 400, "missing input(s) ['tx_amount']"),
        (dict(GOOD, tx_amount=("FP64", ["lots"])), 400, "must be numbers, got 'lots'"),
        (dict(GOOD, extra=("INT64", [1])), 400, "unknown input 'extra'"),
        (dict(GOOD, tx_datetime=("BYTES", ["tomorrow"])), 400, "not an ISO-8601"),
    ],
)
def test_bad_requests_get_400_naming_the_problem(server, tensors, status, message):
    r = httpx.post(f"http://{server.url}/v2/models/{MODEL}/infer", json=v2_body(**tensors))
    assert r.status_code == status and message in r.json()["error"]


def test_wrong_shape_over_tritonclient_is_400(server):
    inputs = triton_inputs(**BATCH)
    inputs[0] = thttp.InferInput("customer_id", [2, 2], "INT64")
    inputs[0].set_data_from_numpy(np.array([[1, 2], [3, 1]], dtype=np.int64))
    with pytest.raises(InferenceServerException, match="does not match the declared shape"):
        thttp.InferenceServerClient(server.url).infer(MODEL, inputs)


def test_grpc_errors_keep_their_status(server):
    n = 20000
    big = dict(customers=list(range(n)), terminals=[10] * n, amounts=[1.0] * n, epochs=[MON_NOON] * n)
    missing, unknown, oversized, now = grpc_calls(
        f"127.0.0.1:{server.grpc_port}",
        [grpc_infer(**BATCH, drop=("tx_amount",)), grpc_infer(**BATCH, model="no-such-model"), grpc_infer(**big),
         grpc_infer(**BATCH, drop=("tx_datetime",))],
    )
    assert missing["error"]["status"] == "StatusCode.INVALID_ARGUMENT" and "tx_amount" in missing["error"]["message"]
    assert "error" not in now and len(now["outputs"]["fraud_probability"]) == len(BATCH["customers"])  # windows at the request time
    assert unknown["error"]["status"] == "StatusCode.NOT_FOUND"
    assert oversized["error"]["status"] == "StatusCode.RESOURCE_EXHAUSTED"


def test_unknown_model_is_404(server):
    r = httpx.post(f"http://{server.url}/v2/models/no-such-model/infer", json=v2_body(**GOOD))
    assert r.status_code == 404 and "no-such-model" in r.json()["error"]
    with pytest.raises(InferenceServerException, match="no-such-model"):
        thttp.InferenceServerClient(server.url).get_model_metadata("no-such-model")


def test_oversized_body_is_413(server):
    big = dict(GOOD, customer_id=("INT64", list(range(20000))))
    r = httpx.post(f"http://{server.url}/v2/models/{MODEL}/infer", json=v2_body(**big))
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]


def test_plain_json_with_and_without_content_type(server):
    body = json.dumps(v2_body(**GOOD)).encode()
    url = f"http://{server.url}/v2/models/{MODEL}/infer"
    for headers in ({"content-type": "application/json"}, {}, {"content-type": "application/x-www-form-urlencoded"}):
        req = httpx.Request("POST", url, content=body, headers=headers)
        assert req.headers.get("content-type") == headers.get("content-type")  # none at all in the first case
        r = httpx.Client().send(req)
        assert r.status_code == 200, (headers, r.text)
        out = r.json()
        assert out["id"] == "req-1" and out["model_name"] == MODEL
        assert [o["name"] for o in out["outputs"]] == ["fraud_probability", "is_fraud", "model_version"]


def test_malformed_bodies_never_get_a_5xx(server):
    url = f"http://{server.url}/v2/models/{MODEL}/infer"
    rng = random.Random(7)
    junk = [None, "x", -1, 1.5, [], {}, [[1]], True, "2024-13-45", 2**70]
    bodies = [b"", b"{", b"[]", b"null", b'{"inputs": 5}', b'{"inputs": [{"name": "customer_id"}]}']
    for _ in range(120):
        body = v2_body(**GOOD)
        inp = rng.choice(body["inputs"])
        inp[rng.choice(["name", "shape", "datatype", "data"])] = rng.choice(junk)
        bodies.append(json.dumps(body).encode())
    rejected = 0
    with httpx.Client() as c:
        for body in bodies:
            r = c.post(url, content=body)
            # Some mutations stay valid (nested data, a bool id): never a 5xx, and every 4xx says why.
            assert r.status_code == 200 or (400 <= r.status_code < 500 and r.json()["error"]), (body, r.status_code, r.text)
            rejected += r.status_code != 200
        assert rejected >= len(bodies) // 2
        binary = c.post(url, content=b'{"inputs": 1}xx', headers={"inference-header-content-length": "13"})
        assert binary.status_code == 400


def test_the_prediction_log_carries_the_served_vector(env, kafka_settings, unique, tmp_path):
    """The vectors served (as logged) are the reference's, input by input: the probabilities alone barely
    react to some inputs (the tiny model hardly weighs the risk ratios)."""
    topic = f"predictions-{unique}"
    s = Server(env["home"], tmp_path / "log.log", "--role", "all",
               env={"RTML_KAFKA_BOOTSTRAP": kafka_settings.kafka_bootstrap, "RTML_PREDICTION_LOG_TOPIC": topic}).wait_ready()
    try:
        thttp.InferenceServerClient(s.url).infer(MODEL, triton_inputs(**BATCH), request_id="logged")
        consumer = make_consumer(kafka_settings, [topic], group_id=f"t-{unique}")
        records, deadline = [], time.monotonic() + 60
        while len(records) < len(BATCH["customers"]) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records += [json.loads(m.value) for m in batch]
        consumer.close()
    finally:
        s.stop()
    rows = reference_vectors(EVENTS, zip(*BATCH.values()))
    want = {(c, t, e): row for c, t, e, row in zip(BATCH["customers"], BATCH["terminals"], BATCH["epochs"], rows)}
    assert len(records) == len(want)
    for r in records:
        served = np.array([r["features"][name] for name in MODEL_INPUTS])
        np.testing.assert_allclose(served, want[(r["customer_id"], r["terminal_id"], r["tx_datetime"])], rtol=1e-6)


def test_metrics_are_exposed(server):
    httpx.post(f"http://{server.url}/v2/models/{MODEL}/infer", json=v2_body(**GOOD))
    text = httpx.get(f"http://{server.url}/metrics").text
    assert f'rtml_inference_requests_total{{model="{MODEL}",model_version="3",status="200"}}' in text
    for name in ("rtml_inference_request_duration_seconds_bucket", "rtml_feature_fetch_duration_seconds_bucket", "rtml_inference_batch_size_bucket"):
        assert name in text
