"""The Kubeflow Model Registry backend against a real Model Registry server.

Runs where one is reachable: set RTML_TEST_MODEL_REGISTRY to its REST address (for example
``http://localhost:8080`` after ``kubectl -n kubeflow port-forward svc/model-registry-service 8080``).
Skipped elsewhere with the reason: no server can run offline here (its Go module and images are not served).
"""

import os
import uuid
from urllib.parse import urlsplit

import pytest

from components.registry import KubeflowModelRegistry, open_registry
from feature_repo.model_inputs import MODEL_INPUTS
from tests.unit.components.conftest import model_file  # noqa: F401  (the fixture)

ADDRESS = os.environ.get("RTML_TEST_MODEL_REGISTRY", "")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not ADDRESS, reason="needs a Kubeflow Model Registry server: set RTML_TEST_MODEL_REGISTRY=http://host:port "
                                           "(none can run offline here: its Go module and container images are not served)"),
]
METRICS = {"auc_roc": 0.87, "average_precision": 0.64, "card_precision_at_100": 0.29}


@pytest.fixture
def registry(tmp_path):
    pytest.importorskip("model_registry", reason="the model-registry client is not installed (pip install '.[model-registry]')")
    url = urlsplit(ADDRESS)
    reg = open_registry(tmp_path, f"{url.scheme}://{url.hostname}", url.port or (443 if url.scheme == "https" else 80))
    assert isinstance(reg, KubeflowModelRegistry)
    return reg


def _stage_there(reg: KubeflowModelRegistry, name: str, version: str) -> tuple[str, str]:
    found = reg.client.get_model_version(name, version)
    return found.custom_properties["stage"], found.state.value


def test_versions_metrics_and_stage_changes_reach_the_server(registry, model_file):
    name = f"rtml-test-{uuid.uuid4().hex[:8]}"
    defaults = {c: 0.0 for c in MODEL_INPUTS}
    lineage = {"code_version": "test", "data_window": {"train_start": "2018-04-12"}}
    one = registry.register(name, model_file, METRICS, lineage, defaults, stage="champion")
    two = registry.register(name, model_file, METRICS, lineage, defaults)
    found = registry.client.get_model_version(name, two["version"])
    assert found.custom_properties["auc_roc"] == pytest.approx(0.87) and found.custom_properties["code_version"] == "test"
    artifact = registry.client.get_model_artifact(name, two["version"])
    assert artifact.uri.endswith(f"/{name}/{two['version']}/model.pt")
    assert _stage_there(registry, name, one["version"]) == ("champion", "LIVE")
    assert _stage_there(registry, name, two["version"]) == ("candidate", "LIVE")

    registry.promote(name, two["version"])
    assert _stage_there(registry, name, one["version"]) == ("archived", "ARCHIVED")
    assert _stage_there(registry, name, two["version"]) == ("champion", "LIVE")

    assert registry.rollback(name) == one["version"]
    assert _stage_there(registry, name, one["version"]) == ("champion", "LIVE")
    assert _stage_there(registry, name, two["version"]) == ("archived", "ARCHIVED")
