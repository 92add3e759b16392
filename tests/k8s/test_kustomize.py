"""The kustomize tree renders what the chart renders, and the canary overlays match rtml.canary."""

from __future__ import annotations

import importlib.util
import json
import os

import pytest
import yaml

from .conftest import CHART, MANIFESTS, by_key, run
from rtml import canary, k8s_tools

pytestmark = pytest.mark.k8s

# overlay -> the ci values file whose helm render it must equal (None = chart defaults)
OVERLAYS = {"local": "minimal-values.yaml", "production": "external-stores-values.yaml", "canary": "knative-canary-values.yaml"}


def _generator():
    spec = importlib.util.spec_from_file_location("manifests_generate", MANIFESTS / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _strip_namespace(docs: list[dict]) -> dict:
    out = {}
    for key, doc in by_key(docs).items():
        doc = json.loads(json.dumps(doc))
        doc["metadata"].pop("namespace", None)
        out[key] = doc
    return out


def assert_same_objects(helm_docs: list[dict], kustomize_docs: list[dict]):
    helm_objs, kust_objs = _strip_namespace(helm_docs), _strip_namespace(kustomize_docs)
    assert sorted(helm_objs) == sorted(kust_objs)
    for key in helm_objs:
        assert kust_objs[key] == helm_objs[key], f"{key} differs between helm and kustomize"


def test_generated_tree_is_in_sync_with_the_chart(tools):
    diffs = _generator().drift(str(tools["helm"]))
    assert not diffs, "run `python manifests/generate.py`:\n" + "\n".join(diffs)[:4000]


def test_base_equals_chart_defaults(render):
    assert_same_objects(render.helm(), render.kustomize(MANIFESTS / "base"))


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_equals_helm_values(render, overlay):
    docs = render.kustomize(MANIFESTS / "overlays" / overlay)
    assert {d["metadata"].get("namespace") for d in docs} == {"rtml"}
    assert_same_objects(render.helm("-f", str(CHART / "ci" / OVERLAYS[overlay])), docs)


def test_standard_canary_component_equals_helm(render, tmp_path):
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        # kustomize refuses absolute paths to other kustomizations.
        "resources": [os.path.relpath(MANIFESTS / "base", tmp_path)],
        "components": [os.path.relpath(MANIFESTS / "components" / "standard-canary", tmp_path)]}))
    assert_same_objects(render.helm("-f", str(CHART / "ci" / "standard-canary-values.yaml")),
                        render.kustomize(tmp_path))


def _isvc(docs):
    return by_key(docs)[("InferenceService", "fraud")]


def test_canary_overlays_match_rtml_canary_transforms(render):
    canary_isvc = _isvc(render.kustomize(MANIFESTS / "overlays" / "canary"))
    assert canary_isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    promoted = _isvc(render.kustomize(MANIFESTS / "overlays" / "promote"))
    rolled_back = _isvc(render.kustomize(MANIFESTS / "overlays" / "rollback"))
    assert promoted == canary.promote(canary_isvc)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert rolled_back == canary.rollback(canary_isvc)
    assert rolled_back["spec"]["predictor"]["canaryTrafficPercent"] == 0
    # Both keep the new model's spec: only the traffic split changes.
    new_env = canary_isvc["spec"]["predictor"]["containers"]
    assert promoted["spec"]["predictor"]["containers"] == new_env == rolled_back["spec"]["predictor"]["containers"]


def test_standard_mode_promote_and_rollback_on_rendered_object(render):
    isvc = _isvc(render.helm("-f", str(CHART / "ci" / "standard-canary-values.yaml")))
    challenger = isvc["spec"]["canary"][0]["predictor"]
    promoted = canary.promote(isvc)
    assert promoted["spec"]["predictor"]["name"] == "challenger" and "canary" not in promoted["spec"]
    assert promoted["spec"]["predictor"]["containers"] == challenger["containers"]
    assert promoted["spec"]["predictor"]["maxReplicas"] == isvc["spec"]["predictor"]["maxReplicas"]
    rolled_back = canary.rollback(isvc)
    assert rolled_back["spec"]["predictor"] == isvc["spec"]["predictor"] and "canary" not in rolled_back["spec"]


@pytest.mark.parametrize("overlay", ["local", "production", "canary", "promote", "rollback"])
def test_overlays_validate_strictly(tools, overlay):
    built = run([tools["kustomize"], "build", MANIFESTS / "overlays" / overlay])
    assert built.returncode == 0, built.stderr
    proc = run([tools["kubeconform"], *k8s_tools.kubeconform_args(tools["schemas"]), "-"], input=built.stdout)
    summary = json.loads(proc.stdout)["summary"]
    assert proc.returncode == 0 and summary["invalid"] == summary["errors"] == summary["skipped"] == 0, proc.stdout[-3000:]
    assert summary["valid"] >= 20
