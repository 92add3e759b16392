"""Model version directories: metadata checks, URI resolution, settings switches."""

from __future__ import annotations

import json

import pytest

from feature_repo.model_inputs import MODEL_INPUTS
from inference.artifact import ModelMetadata, latest_version_dir, read_metadata, resolve_model_dir
from inference.settings import TransformerSettings
from rtml_common.errors import ConfigurationError, NotFoundError


def write_version(root, version, inputs=MODEL_INPUTS, defaults=None):
    d = root / "fraud-detector" / str(version)
    d.mkdir(parents=True)
    meta = {"name": "fraud-detector", "version": str(version), "inputs": inputs, "threshold": 0.3, "defaults": defaults or {}}
    (d / "metadata.json").write_text(json.dumps(meta))
    return d


def test_metadata_is_read_and_defaults_follow_model_inputs(tmp_path):
    d = write_version(tmp_path, 3, defaults={"terminal_id_risk_1day_window": 0.02})
    meta = read_metadata(d)
    assert meta.version == "3" and meta.threshold == 0.3
    vec = meta.default_vector()
    assert len(vec) == 15 and vec[MODEL_INPUTS.index("terminal_id_risk_1day_window")] == 0.02 and vec[0] == 0.0


def test_inputs_in_another_order_are_refused(tmp_path):
    d = write_version(tmp_path, 1, inputs=list(reversed(MODEL_INPUTS)))
    with pytest.raises(ConfigurationError, match="differ from"):
        read_metadata(d)
    with pytest.raises(ConfigurationError, match="invalid"):
        ModelMetadata.from_dict({"name": "x"}, "here")


def test_latest_version_is_the_highest_number(tmp_path):
    for v in (2, 10, 9):
        write_version(tmp_path, v)
    assert latest_version_dir(tmp_path, "fraud-detector").name == "10"
    with pytest.raises(NotFoundError):
        latest_version_dir(tmp_path, "other")


def test_local_and_file_uris(tmp_path):
    d = write_version(tmp_path, 1)
    assert resolve_model_dir(str(d), home=tmp_path, model_name="x") == d
    assert resolve_model_dir(f"file://{d}", home=tmp_path, model_name="x") == d
    with pytest.raises(NotFoundError, match="does not exist"):
        resolve_model_dir(str(tmp_path / "nope"), home=tmp_path, model_name="x")


def test_model_registry_uri_without_client_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="model-registry"):
        resolve_model_dir("model-registry://fraud-detector/3", home=tmp_path, model_name="x")


def test_prediction_log_only_when_kafka_is_configured(monkeypatch):
    monkeypatch.delenv("RTML_KAFKA_BOOTSTRAP", raising=False)
    assert not TransformerSettings().prediction_log_enabled
    assert TransformerSettings(kafka_bootstrap="127.0.0.1:1").prediction_log_enabled
    assert not TransformerSettings(kafka_bootstrap="127.0.0.1:1", prediction_log_topic="").prediction_log_enabled


def test_the_champion_is_served_not_the_newest_candidate(tmp_path):
    import json as _json

    for v in ("1", "2", "3"):
        d = tmp_path / "fraud-detector" / v
        d.mkdir(parents=True)
        (d / "metadata.json").write_text("{}")
    (tmp_path / "fraud-detector" / "stages.json").write_text(_json.dumps({"1": "archived", "2": "champion", "3": "candidate"}))
    assert latest_version_dir(tmp_path, "fraud-detector").name == "2"
