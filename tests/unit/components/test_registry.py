import json

import pytest

from components.registry import LocalRegistry, open_registry
from feature_repo.model_inputs import MODEL_INPUTS
from rtml_common.errors import ConfigurationError, InvalidInputError, NotFoundError

METRICS = {"auc_roc": 0.9, "average_precision": 0.6, "card_precision_at_100": 0.3}
LINEAGE = {"data_window": {"train_start": "2018-07-25"}, "feature_service": "fraud_detection_v1", "code_version": "abc"}


def test_register_writes_the_serving_layout(tmp_path, model_file, defaults):
    reg = LocalRegistry(tmp_path)
    meta = reg.register("fraud", model_file, METRICS, LINEAGE, defaults)
    assert meta["version"] == "1"
    on_disk = json.loads((tmp_path / "fraud" / "1" / "metadata.json").read_text())
    assert on_disk["inputs"] == MODEL_INPUTS and on_disk["threshold"] == 0.5
    assert on_disk["metrics"] == METRICS and on_disk["lineage"] == LINEAGE
    assert set(on_disk["defaults"]) == set(MODEL_INPUTS) and on_disk["created_at"]
    assert (tmp_path / "fraud" / "1" / "model.pt").read_bytes() == model_file.read_bytes()
    assert json.loads((tmp_path / "fraud" / "stages.json").read_text()) == {"1": "candidate"}


def test_versions_stages_promotion_and_rollback(tmp_path, model_file, defaults):
    reg = LocalRegistry(tmp_path)
    for _ in range(3):
        reg.register("fraud", model_file, METRICS, LINEAGE, defaults)
    assert reg.versions("fraud") == ["1", "2", "3"]
    reg.promote("fraud", "1")
    reg.promote("fraud", "2")
    assert reg.stages("fraud") == {"1": "archived", "2": "champion", "3": "candidate"}
    reg.set_stage("fraud", "3", "canary")
    reg.promote("fraud", "3")
    assert reg.version_in("fraud", "champion") == "3"
    assert reg.rollback("fraud") == "2"  # newest archived version older than the champion
    assert reg.stages("fraud") == {"1": "archived", "2": "champion", "3": "archived"}
    assert reg.rollback("fraud", "1") == "1"
    assert reg.version_in("fraud", "champion") == "1"


def test_rollback_without_history_and_unknown_versions_fail_clearly(tmp_path, model_file, defaults):
    reg = LocalRegistry(tmp_path)
    reg.register("fraud", model_file, METRICS, LINEAGE, defaults)
    reg.promote("fraud", "1")
    with pytest.raises(NotFoundError, match="no archived version"):
        reg.rollback("fraud")
    with pytest.raises(NotFoundError, match="no version '7'"):
        reg.promote("fraud", "7")
    with pytest.raises(InvalidInputError, match="unknown stage"):
        reg.set_stage("fraud", "1", "production")


def test_corrupted_artifact_is_never_registered(tmp_path, model_file, defaults):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(model_file.read_bytes()[:100])
    reg = LocalRegistry(tmp_path / "reg")
    with pytest.raises(InvalidInputError, match="corrupted"):
        reg.register("fraud", broken, METRICS, LINEAGE, defaults)
    with pytest.raises(InvalidInputError, match="missing"):
        reg.register("fraud", tmp_path / "nope.pt", METRICS, LINEAGE, defaults)
    assert reg.versions("fraud") == [] and reg.stages("fraud") == {}


def test_defaults_must_cover_every_input(tmp_path, model_file):
    with pytest.raises(InvalidInputError, match="tx_amount"):
        LocalRegistry(tmp_path).register("fraud", model_file, METRICS, LINEAGE, {})


def test_kubeflow_backend_without_client_names_the_package(tmp_path):
    try:
        import model_registry  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigurationError, match="model-registry"):
            open_registry(tmp_path, model_registry_server="https://registry.example")
    else:
        pytest.skip("model-registry is installed")
    assert isinstance(open_registry(tmp_path), LocalRegistry)
