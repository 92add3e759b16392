"""The CLI's registry commands: rolling back to an earlier model is one command."""

from __future__ import annotations

import pytest

from components.registry import LocalRegistry
from feature_repo.model_inputs import MODEL_INPUTS
from rtml.cli import main
from tests.integration.inference_fixtures import make_model_dir


def rtml(*argv: str) -> None:
    with pytest.raises(SystemExit) as done:
        main(list(argv))
    assert done.value.code == 0


def test_models_promote_and_rollback(tmp_path, capsys):
    model = make_model_dir(tmp_path / "build") / "model.pt"
    registry = LocalRegistry(tmp_path / "registry")
    defaults = {name: 0.0 for name in MODEL_INPUTS}
    for auc in (0.8, 0.9):
        registry.register("fraud-detector", model, {"auc_roc": auc}, {"data": "test"}, defaults)
    home = ["--home", str(tmp_path)]

    rtml(*home, "models", "promote", "--version", "1")
    rtml(*home, "models", "promote", "--version", "2")
    assert registry.stages("fraud-detector") == {"1": "archived", "2": "champion"}

    rtml(*home, "models", "rollback")
    assert registry.version_in("fraud-detector", "champion") == "1"
    assert "champion is now v1" in capsys.readouterr().out

    rtml(*home, "models", "list")
    listing = capsys.readouterr().out
    assert "v1" in listing and "champion" in listing and "0.9" in listing
