"""The committed IR YAML must be what the code compiles to (run `python -m pipelines.run` to refresh it)."""

import yaml
import pytest

from pipelines.run import COMPILED_DIR, PIPELINES, compile_all

VOLATILE = {"sdkVersion"}


def _strip(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in VOLATILE}


def test_committed_yaml_matches_the_code(tmp_path, monkeypatch):
    monkeypatch.delenv("RTML_PIPELINE_IMAGE", raising=False)
    fresh = {p.name: p for p in compile_all(tmp_path)}
    assert sorted(fresh) == sorted(f"{name}.yaml" for name in PIPELINES)
    for name, path in fresh.items():
        committed = COMPILED_DIR / name
        assert committed.is_file(), f"{committed} is missing: run `python -m pipelines.run`"
        if _strip(yaml.safe_load(committed.read_text())) != _strip(yaml.safe_load(path.read_text())):
            pytest.fail(f"{committed} drifted from the code: run `python -m pipelines.run` and commit the result")


def test_compiled_training_pipeline_has_the_five_steps_in_order():
    doc = yaml.safe_load((COMPILED_DIR / "training.yaml").read_text())
    tasks = doc["root"]["dag"]["tasks"]
    assert set(tasks) == {"dataset-op", "train-op", "evaluate-op", "register-op", "deploy-op"}
    assert "dataset-op" in tasks["train-op"]["dependentTasks"]
    assert set(tasks["register-op"]["dependentTasks"]) >= {"train-op", "evaluate-op"}
    assert "register-op" in tasks["deploy-op"]["dependentTasks"]
