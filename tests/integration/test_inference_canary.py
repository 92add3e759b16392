"""The local canary split (issue 5): `python -m inference` serving a champion and a candidate by weight.

Two model versions ("1" and "2", different weights) score the same transaction differently,
so every response shows which one answered; the split, the responses and the per-version
metrics must all agree.
"""

from __future__ import annotations

import math
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from feature_repo.store import FeatureStoreSettings, apply_definitions
from tests.integration.inference_fixtures import Server, make_model_dir
from tests.integration.triton_grpc_calls import grpc_calls

pytestmark = pytest.mark.integration

MODEL = "fraud-detector"
TX = [("customer_id", "INT64", [42]), ("terminal_id", "INT64", [7]), ("tx_amount", "FP64", [120.0]), ("tx_datetime", "INT64", [1714791600])]


def body(request_id: str) -> dict:
    return {"id": request_id, "inputs": [{"name": n, "shape": [1], "datatype": dt, "data": d} for n, dt, d in TX]}


def champion_and_candidate(home: Path) -> tuple[str, str]:
    """A feature store under ``home`` and two model versions that score differently: "1" (registry) and "2"."""
    apply_definitions(FeatureStoreSettings(home=home))
    v1 = make_model_dir(home / "registry" / MODEL / "1", version="1", seed=1)
    v2 = make_model_dir(home / "candidates" / "2", version="2", seed=2)
    return str(v1), str(v2)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("rtml_home")
    v1, v2 = champion_and_candidate(home)
    return {"home": home, "logs": tmp_path_factory.mktemp("logs"), "v1": v1, "v2": v2}


def start(env, name: str, *args: str, extra_env: dict | None = None) -> Server:
    return Server(env["home"], env["logs"] / f"{name}.log", *args, env=extra_env)


@pytest.fixture(scope="module")
def servers(env):
    """30% in one process (flags), 0% in one process (environment), 100% over two remote predictors."""
    started = {
        "split30": start(env, "split30", "--storage-uri", env["v1"], "--candidate-storage-uri", env["v2"], "--canary-percent", "30"),
        "split0": start(env, "split0", extra_env={"RTML_STORAGE_URI": env["v1"], "RTML_CANDIDATE_STORAGE_URI": env["v2"], "RTML_CANARY_PERCENT": "0"}),
        "p1": start(env, "p1", "--role", "predictor", "--storage-uri", env["v1"]),
        "p2": start(env, "p2", "--role", "predictor", "--storage-uri", env["v2"]),
    }
    try:
        for s in started.values():
            s.wait_ready(timeout_s=300)  # four servers importing torch at once on two shared cores
        started["remote100"] = start(
            env,
            "remote100",
            "--role", "transformer",
            "--storage-uri", env["v1"], "--predictor-host", started["p1"].url,
            "--candidate-storage-uri", env["v2"], "--candidate-predictor-host", started["p2"].url,
            "--canary-percent", "100",
        ).wait_ready(timeout_s=300)
        yield started
    finally:
        for s in started.values():
            s.stop()


def score_many(server: Server, n: int, prefix: str) -> list[dict]:
    with httpx.Client(timeout=10) as c:
        out = []
        for i in range(n):
            r = c.post(f"http://{server.url}/v2/models/{MODEL}/infer", json=body(f"{prefix}-{i}"))
            assert r.status_code == 200, r.text
            out.append(r.json())
        return out


def probability(response: dict) -> float:
    return next(o["data"][0] for o in response["outputs"] if o["name"] == "fraud_probability")


def samples(server: Server, metric: str) -> dict[tuple, float]:
    """{(model_version, status or ''): value} of one sample name (rtml's model only)."""
    text = httpx.get(f"http://{server.url}/metrics", timeout=5).text
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == metric and s.labels.get("model") == MODEL:
                found[(s.labels["model_version"], s.labels.get("status", ""))] = s.value
    return found


COUNTED = ("rtml_inference_requests_total", "rtml_inference_request_duration_seconds_count", "rtml_inference_score_count")


def test_thirty_percent_split_serves_each_version_by_weight_and_counts_it(servers):
    n = 400
    before = {m: samples(servers["split30"], m) for m in COUNTED}
    responses = score_many(servers["split30"], n, "canary")
    by_version: dict[str, list[float]] = {}
    for r in responses:
        assert r["outputs"][2]["data"] == [r["model_version"]]  # the per-row version output agrees
        by_version.setdefault(r["model_version"], []).append(probability(r))
    assert set(by_version) == {"1", "2"}
    share = len(by_version["2"]) / n
    assert abs(share - 0.30) <= 4 * math.sqrt(0.3 * 0.7 / n), share
    # Each version always gives its own answer to the same transaction, and the two differ.
    assert len(set(by_version["1"])) == 1 and len(set(by_version["2"])) == 1
    assert by_version["1"][0] != by_version["2"][0]

    # gRPC requests take the same split and are counted under the version that served them.
    grpc = grpc_calls(
        f"127.0.0.1:{servers['split30'].grpc_port}",
        [{"op": "infer", "model": MODEL, "request_id": f"g-{i}", "inputs": [{"name": n_, "datatype": dt, "data": d} for n_, dt, d in TX]} for i in range(20)],
    )
    grpc_counts = {v: sum(g["model_version"] == v for g in grpc) for v in ("1", "2")}
    assert sum(grpc_counts.values()) == 20

    for metric in COUNTED:
        after = samples(servers["split30"], metric)
        for version in ("1", "2"):
            key = (version, "" if metric == "rtml_inference_score_count" else "200")
            assert after[key] - before[metric].get(key, 0.0) == len(by_version[version]) + grpc_counts[version], (metric, version)


def test_the_same_request_id_always_meets_the_same_version(servers):
    first = score_many(servers["split30"], 30, "sticky")
    again = score_many(servers["split30"], 30, "sticky")
    assert [r["model_version"] for r in first] == [r["model_version"] for r in again]


def test_zero_percent_serves_only_the_champion(servers):
    responses = score_many(servers["split0"], 50, "zero")
    assert {r["model_version"] for r in responses} == {"1"}
    assert set(samples(servers["split0"], "rtml_inference_requests_total")) == {("1", "200")}


def test_hundred_percent_over_remote_predictors_serves_only_the_candidate(servers):
    responses = score_many(servers["remote100"], 50, "all")
    assert {r["model_version"] for r in responses} == {"2"}
    assert samples(servers["remote100"], "rtml_inference_requests_total") == {("2", "200"): 50.0}
    # The remote candidate answers exactly what the in-process candidate answers.
    in_process = [r for r in score_many(servers["split30"], 40, "cmp") if r["model_version"] == "2"]
    assert in_process and {probability(r) for r in responses} == {probability(in_process[0])}
