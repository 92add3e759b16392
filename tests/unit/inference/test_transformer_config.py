"""Canary misconfigurations of the transformer are refused at load, naming the setting to fix."""

from __future__ import annotations

import json

import pytest

from feature_repo.model_inputs import MODEL_INPUTS
from inference.settings import TransformerSettings
from inference.transformer import FraudTransformer
from rtml_common.errors import ConfigurationError


def version_dir(path, version: str) -> str:
    path.mkdir(parents=True)
    (path / "metadata.json").write_text(json.dumps({"name": "fd", "version": version, "inputs": MODEL_INPUTS}))
    return str(path)


@pytest.mark.parametrize(
    "extra, message",
    [
        (dict(candidate_predictor_host="c:1"), "RTML_CANDIDATE_PREDICTOR_HOST needs RTML_CANDIDATE_STORAGE_URI"),
        (dict(canary_percent=10.0), "needs a candidate"),
        (dict(candidate_predictor_host="c:1", candidate_version="1"), "both version 1"),
    ],
)
def test_canary_misconfigurations_are_named(tmp_path, extra, message):
    extra = dict(extra)
    if "candidate_version" in extra:
        extra["candidate_storage_uri"] = version_dir(tmp_path / "cand", extra.pop("candidate_version"))
    settings = TransformerSettings(home=tmp_path, storage_uri=version_dir(tmp_path / "champ", "1"), predictor_host="p:1", **extra)
    with pytest.raises(ConfigurationError, match=message):
        FraudTransformer("fd", settings).load()
