import numpy as np
import pytest
import torch

from components.metrics import evaluate_scores
from components.train import TrainConfig, export, load_scripted, score, train_defaults, train_model
from feature_repo.model_inputs import MODEL_INPUTS
from rtml_common.errors import InvalidInputError
from tests.unit.components.conftest import labelled_rows

CFG = TrainConfig(seed=1, hidden=(16,), lr=1e-2, max_epochs=8, batch_size=64, device="cpu")


def test_trained_model_learns_and_exports_with_normalisation_inside(tmp_path):
    train, val, test = labelled_rows(3000, 0), labelled_rows(800, 1), labelled_rows(1500, 2)
    result = train_model(train, val, CFG)
    path = export(result, train, CFG, tmp_path)
    module = load_scripted(path)
    # The exported module takes raw inputs: its buffers hold the mean/std of the rows it was refitted on.
    refitted_on = np.concatenate([train["tx_amount"].to_numpy(np.float32), val["tx_amount"].to_numpy(np.float32)])
    assert module.mean[0].item() == pytest.approx(float(refitted_on.mean()), rel=1e-4)
    scores = score(module, test)
    assert scores.shape == (len(test),) and scores.dtype == np.float32
    assert evaluate_scores(test, scores)["auc_roc"] > 0.9
    with torch.no_grad():
        assert torch.allclose(module(torch.as_tensor(test[MODEL_INPUTS].to_numpy(np.float32))), torch.as_tensor(scores))


def test_training_is_reproducible_with_a_seed():
    train, val = labelled_rows(1500, 0), labelled_rows(500, 1)
    a, b = train_model(train, val, CFG), train_model(train, val, CFG)
    x = torch.as_tensor(val[MODEL_INPUTS].to_numpy(np.float32))
    with torch.no_grad():
        assert torch.equal(a.model(x), b.model(x))
    assert a.history == b.history


def test_defaults_are_training_medians_and_bad_sets_fail():
    train = labelled_rows(100, 0)
    assert train_defaults(train)["tx_amount"] == pytest.approx(float(train["tx_amount"].median()))
    with pytest.raises(InvalidInputError, match="both frauds"):
        train_model(train.assign(tx_fraud=0), train, CFG)
    with pytest.raises(InvalidInputError, match="terminal_id_risk_1day_window"):
        train_model(train.drop(columns=["terminal_id_risk_1day_window"]), train, CFG)


def test_ensemble_exports_the_mean_of_its_members_and_refit_trains_the_chosen_epochs(tmp_path):
    from dataclasses import replace

    train, val, test = labelled_rows(1500, 0), labelled_rows(500, 1), labelled_rows(600, 2)
    cfg = replace(CFG, ensemble=2, refit=True, max_epochs=4, patience=2)
    result = train_model(train, val, cfg)
    members = result.model.members
    assert len(members) == 2
    x = torch.as_tensor(test[MODEL_INPUTS].to_numpy(np.float32))
    with torch.no_grad():
        mean = (members[0](x) + members[1](x)) / 2
    module = load_scripted(export(result, train, cfg, tmp_path))
    assert np.allclose(score(module, test), mean.numpy(), atol=1e-6)
    # Each member: an early-stopped run (seeds 1 and 2), then a refit on train + validation for its best epoch count.
    for seed in (1, 2):
        chosen = [h for h in result.history if h["seed"] == seed and "validation_ap" in h]
        best = max(chosen, key=lambda h: h["validation_ap"])["epoch"]
        refit = [h for h in result.history if h["seed"] == seed and h.get("refit")]
        assert [h["epoch"] for h in refit] == list(range(1, best + 1))
    # The refit members' normalisation comes from train + validation rows.
    both = np.concatenate([train[MODEL_INPUTS].to_numpy(np.float32), val[MODEL_INPUTS].to_numpy(np.float32)])
    assert np.allclose(members[0].mean.numpy(), both.mean(axis=0), rtol=1e-5)
    with pytest.raises(InvalidInputError, match="ensemble"):
        train_model(train, val, replace(CFG, ensemble=0))
