"""rtml.canary: the status summary and the ``rtml canary`` CLI wiring (transforms and analysis: components)."""

from __future__ import annotations

import argparse
import json

import pytest

from components import canary_analysis
from rtml import canary
from tests.unit.components.test_canary_analysis import FakeCustomObjects, knative_isvc, standard_isvc

def test_status_summary_knative():
    isvc = knative_isvc(10)
    isvc["status"] = {"url": "http://fraud.rtml.example.com",
                      "conditions": [{"type": "Ready", "status": "True"}],
                      "components": {"predictor": {
                          "latestReadyRevision": "fraud-predictor-00002", "latestRolledoutRevision": "fraud-predictor-00001",
                          "traffic": [{"revisionName": "fraud-predictor-00002", "percent": 10, "latestRevision": True},
                                      {"revisionName": "fraud-predictor-00001", "percent": 90, "tag": "prev"}]}}}
    s = canary.status_summary(isvc)
    assert (s["ready"], s["phase"], s["canary_percent"]) == (True, "canary", 10)
    assert [t["percent"] for t in s["traffic"]] == [10, 90]
    assert s["revisions"]["latestRolledoutRevision"] == "fraud-predictor-00001"
    assert canary.status_summary(canary.rollback(isvc))["phase"] == "rolled-back"
    assert canary.status_summary(canary.promote(isvc))["phase"] == "stable"


def test_status_summary_standard():
    isvc = standard_isvc(("challenger", 30))
    isvc["status"] = {"conditions": [{"type": "Ready", "status": "True"}, {"type": "CanaryPredictorReady", "status": "False"}],
                      "canaryStatuses": [{"name": "challenger", "ready": False, "trafficPercent": 30}]}
    s = canary.status_summary(isvc)
    assert s["champion_percent"] == 70 and s["canary_ready"] is False
    assert s["canaries"] == [{"name": "challenger", "traffic_percent": 30, "ready": False}]


def test_add_cli_registers_subcommands():
    parser = argparse.ArgumentParser(prog="rtml")
    canary.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["canary", "set", "--percent", "20", "--name", "fraud", "--namespace", "ml", "--mode", "Standard"])
    assert (args.canary_action, args.percent, args.namespace, args.mode) == ("set", 20, "ml", "Standard")
    assert callable(args.func)
    for action in ("status", "promote", "rollback"):
        assert parser.parse_args(["canary", action]).canary_action == action
    an = parser.parse_args(["canary", "analyze", "--prometheus", "http://p:9090", "--canary-version", "2",
                            "--champion-version", "1"])
    assert an.window == "10m" and an.apply is False and an.model == "fraud-detector"
    with pytest.raises(SystemExit):
        parser.parse_args(["canary", "set", "--mode", "Serverful", "--percent", "1"])


def test_cli_reports_errors_without_traceback(capsys, monkeypatch):
    monkeypatch.setattr(canary_analysis, "_custom_objects_api", lambda: FakeCustomObjects(knative_isvc()))
    parser = argparse.ArgumentParser(prog="rtml")
    canary.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["canary", "promote"])
    assert args.func(args) == 1
    assert "nothing to promote" in capsys.readouterr().out
    args = parser.parse_args(["canary", "set", "--percent", "15"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["canary_percent"] == 15




def test_cli_analyze_reports_bad_input_without_traceback(capsys):
    parser = argparse.ArgumentParser(prog="rtml")
    canary.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["canary", "analyze", "--prometheus", "http://127.0.0.1:9", "--canary-version", "2",
                              "--champion-version", "1", "--window", "ten minutes"])
    assert args.func(args) == 1
    assert "window 'ten minutes' is not a PromQL duration" in capsys.readouterr().out


def test_rtml_canary_reexports_the_component_api():
    assert canary.promote is canary_analysis.promote and canary.run_analysis is canary_analysis.run_analysis
