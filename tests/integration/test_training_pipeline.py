"""The whole training pipeline through kfp.local on a simulated raw event log and a real Feast registry."""


import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from kfp import dsl
from kfp.dsl import Dataset, Model

from components.evaluate import random_scorer_metrics
from components.registry import LocalRegistry
from components.steps import evaluate_op, register_op
from feature_repo.model_inputs import MODEL_INPUTS
from feature_repo.offline_log import read_table
from feature_repo.store import FeatureStoreSettings, apply_definitions
from pipelines.run import PipelineRunError, _init_local, run_batch_scoring_local, run_local
from tests.integration.training_data import write_offline_log

pytestmark = pytest.mark.integration
TRAIN_START = "2018-04-12"
EPOCHS = 6


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("training")
    offline, home, registry = root / "offline", root / "home", root / "registry"
    write_offline_log(offline, n_customers=300, n_terminals=600, n_days=33, radius=15.0, seed=0)
    apply_definitions(FeatureStoreSettings(home=home, offline_dir=offline))
    first = run_local(home, offline, registry, TRAIN_START, max_epochs=EPOCHS)
    return {"root": root, "offline": offline, "home": home, "registry": registry, "first": first}


def test_pipeline_registers_a_model_that_loads_scores_and_beats_random(env):
    first, registry = env["first"], LocalRegistry(env["registry"])
    assert first["version"] == "1" and first["action"] == "promote"  # nothing to compare with: first champion
    assert registry.stages("fraud-detector") == {"1": "champion"}
    meta = registry.metadata("fraud-detector", "1")
    assert meta["inputs"] == MODEL_INPUTS and meta["lineage"]["data_window"]["train_start"] == TRAIN_START
    assert meta["lineage"]["feature_service"] == "fraud_detection_v1" and meta["lineage"]["code_version"]
    module = torch.jit.load(str(registry.model_path("fraud-detector", "1")))
    test = pd.read_parquet(first["artifacts"]["dataset-op/test_set"])
    with torch.no_grad():
        scores = module(torch.as_tensor(test[MODEL_INPUTS].to_numpy(np.float32))).numpy()
    assert scores.shape == (len(test),) and ((scores >= 0) & (scores <= 1)).all()
    ours, rand = first["metrics"]["candidate"], random_scorer_metrics(test)
    assert all(0 <= v <= 1 for v in ours.values())
    assert ours["auc_roc"] > 0.7 and ours["auc_roc"] > rand["auc_roc"] + 0.15
    assert ours["average_precision"] > rand["average_precision"] + 0.1
    assert ours["card_precision_at_100"] >= rand["card_precision_at_100"]
    report = Path(first["artifacts"]["evaluate-op/report"]).read_text()
    assert report.count("<svg") >= 3 and "Logistic regression" in report
    assert "Logistic regression (handbook 3.4)" in first["table"]
    decision = json.loads((env["registry"] / "fraud-detector" / "deploy.json").read_text())
    assert decision["action"] == "promote" and decision["version"] == "1"


def test_second_run_is_compared_with_the_champion_and_goes_canary(env):
    second = run_local(env["home"], env["offline"], env["registry"], TRAIN_START, max_epochs=EPOCHS)
    assert second["version"] == "2"
    # Same data and seed: the candidate equals the champion, so it passes the gate as a canary.
    assert second["metrics"]["champion"] == pytest.approx(env["first"]["metrics"]["candidate"])
    assert second["metrics"]["candidate"] == pytest.approx(env["first"]["metrics"]["candidate"])
    assert second["action"] == "canary" and second["decision"]["canary_percent"] == 10
    assert LocalRegistry(env["registry"]).stages("fraud-detector") == {"1": "champion", "2": "canary"}


def test_empty_date_range_fails_naming_it_and_registers_nothing(env, tmp_path, capfd):
    with pytest.raises(PipelineRunError):
        run_local(env["home"], env["offline"], tmp_path / "registry", "2019-01-01", max_epochs=EPOCHS)
    out = capfd.readouterr()
    assert "no transactions in offline log table 'transactions'" in out.out + out.err
    assert LocalRegistry(tmp_path / "registry").versions("fraud-detector") == []


def test_corrupted_model_artifact_fails_evaluation_and_is_never_registered(env, tmp_path, capfd):
    bad = tmp_path / "model"
    bad.mkdir()
    (bad / "model.pt").write_bytes(b"PK\x03\x04 not a torchscript archive")
    (bad / "train.json").write_text(json.dumps({"defaults": {}, "best_epoch": 1, "config": {}}))
    arts = env["first"]["artifacts"]

    @dsl.pipeline(name="corrupted-model")
    def corrupted(registry_dir: str):
        model = dsl.importer(artifact_uri=str(bad), artifact_class=Model)
        test = dsl.importer(artifact_uri=arts["dataset-op/test_set"], artifact_class=Dataset)
        info = dsl.importer(artifact_uri=arts["dataset-op/dataset_info"], artifact_class=Dataset)
        ev = evaluate_op(test_set=test.output, model=model.output, registry_dir=registry_dir, model_name="fraud-detector")
        register_op(model=model.output, evaluation=ev.outputs["evaluation"], dataset_info=info.output,
                    registry_dir=registry_dir, model_name="fraud-detector", model_registry_server="", model_registry_port=443)

    _init_local(tmp_path / "root")
    with pytest.raises(RuntimeError):
        corrupted(registry_dir=str(tmp_path / "registry"))
    out = capfd.readouterr()
    assert "is corrupted or not a TorchScript fraud model" in out.out + out.err
    assert LocalRegistry(tmp_path / "registry").versions("fraud-detector") == []


def test_batch_scoring_writes_scores_of_the_range_to_the_offline_log(env):
    result = run_batch_scoring_local(env["home"], env["offline"], env["registry"], "2018-05-01", days=1)
    day = read_table(env["offline"], "transactions", pd.Timestamp("2018-05-01", tz="UTC"), pd.Timestamp("2018-05-02", tz="UTC"))
    scores = read_table(env["offline"], "scores", pd.Timestamp("2018-05-01", tz="UTC"), pd.Timestamp("2018-05-02", tz="UTC"))
    assert result["rows"] == len(day) == len(scores) > 0
    assert set(scores["transaction_id"]) == set(day["transaction_id"])
    assert scores["score"].between(0, 1).all() and (scores["model_version"] == "1").all()  # the champion
