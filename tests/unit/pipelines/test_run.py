"""submit() talks to a KFP endpoint through kfp.Client; here a recording stand-in checks the call sequence."""

from types import SimpleNamespace

import kfp
import pytest

from pipelines import run
from rtml_common.errors import InvalidInputError


class RecordingClient:
    calls: list = []

    def __init__(self, host, namespace=None, existing_token=None):
        self.calls.append(("init", host))

    def get_pipeline_id(self, name):
        self.calls.append(("get_pipeline_id", name))
        return None

    def upload_pipeline(self, path, pipeline_name, namespace=None):
        self.calls.append(("upload_pipeline", path.endswith("training.yaml")))
        return SimpleNamespace(pipeline_id="p1")

    def list_pipeline_versions(self, pipeline_id):
        return SimpleNamespace(pipeline_versions=[SimpleNamespace(pipeline_version_id="v1")])

    def create_experiment(self, name, namespace=None):
        return SimpleNamespace(experiment_id="e1")

    def run_pipeline(self, **kw):
        self.calls.append(("run_pipeline", kw["params"], kw["pipeline_id"], kw["version_id"]))
        return SimpleNamespace(run_id="r1")

    def create_recurring_run(self, **kw):
        self.calls.append(("create_recurring_run", kw["cron_expression"]))
        return SimpleNamespace(recurring_run_id="rr1")


def test_submit_uploads_runs_and_schedules(monkeypatch):
    RecordingClient.calls = []
    monkeypatch.setattr(kfp, "Client", RecordingClient)
    out = run.submit("http://kfp.example", {"train_start": "2018-07-25"}, cron="0 0 3 * * *")
    assert out == {"pipeline_id": "p1", "version_id": "v1", "run_id": "r1", "experiment_id": "e1", "recurring_run_id": "rr1"}
    assert ("upload_pipeline", True) in RecordingClient.calls
    assert ("run_pipeline", {"train_start": "2018-07-25"}, "p1", "v1") in RecordingClient.calls
    assert RecordingClient.calls[-1] == ("create_recurring_run", "0 0 3 * * *")


def test_submit_rejects_unknown_pipeline():
    with pytest.raises(InvalidInputError, match="unknown pipeline"):
        run.submit("http://kfp.example", {}, pipeline="nope")
