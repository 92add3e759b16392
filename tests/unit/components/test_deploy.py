import json

import pytest

from components.deploy import decide, quality_gate, write_decision
from components.registry import LocalRegistry
from rtml_common.errors import InvalidInputError

CHAMP = {"auc_roc": 0.87, "average_precision": 0.60, "card_precision_at_100": 0.29}


def test_gate_passes_within_tolerance_and_names_each_worse_metric():
    assert quality_gate(CHAMP, None).passed
    slightly_worse = {**CHAMP, "average_precision": 0.595}
    assert quality_gate(slightly_worse, CHAMP, tolerance=0.01).passed
    worse = {"auc_roc": 0.80, "average_precision": 0.61, "card_precision_at_100": 0.20}
    gate = quality_gate(worse, CHAMP, tolerance=0.01)
    assert not gate.passed
    assert len(gate.reasons) == 2 and gate.reasons[0].startswith("auc_roc") and gate.reasons[1].startswith("card_precision")
    assert not quality_gate(slightly_worse, CHAMP, tolerance=0.0).passed


def test_gate_rejects_bad_arguments():
    with pytest.raises(InvalidInputError, match="tolerance"):
        quality_gate(CHAMP, CHAMP, tolerance=-1)
    with pytest.raises(InvalidInputError, match="auc_roc"):
        quality_gate({"average_precision": 1, "card_precision_at_100": 1}, CHAMP)


def test_decisions_update_stages(tmp_path, model_file, defaults):
    reg = LocalRegistry(tmp_path)
    for _ in range(3):
        reg.register("fraud", model_file, CHAMP, {}, defaults)
    first = decide(reg, "fraud", "1", {"candidate": CHAMP, "champion": None, "champion_version": None}, 0.01)
    assert first["action"] == "promote" and reg.version_in("fraud", "champion") == "1"
    better = {**CHAMP, "auc_roc": 0.9}
    second = decide(reg, "fraud", "2", {"candidate": better, "champion": CHAMP, "champion_version": "1"}, 0.01, 25)
    assert second["action"] == "canary" and second["canary_percent"] == 25
    assert reg.stages("fraud") == {"1": "champion", "2": "canary", "3": "candidate"}
    worse = {**CHAMP, "auc_roc": 0.5}
    third = decide(reg, "fraud", "3", {"candidate": worse, "champion": CHAMP, "champion_version": "1"}, 0.01)
    assert third["action"] == "reject" and reg.stages("fraud")["3"] == "candidate"
    path = write_decision(tmp_path, third)
    assert json.loads(path.read_text())["gate"]["passed"] is False
    assert path == tmp_path / "fraud" / "deploy.json"
