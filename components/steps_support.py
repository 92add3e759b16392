"""What the kfp step bodies call when they need more than one line: kept here so it is unit-testable."""

from __future__ import annotations

import json
from pathlib import Path

from components.deploy import decide, patch_inference_service, write_decision
from components.registry import code_version, open_registry
from components.train import MODEL_FILE, TRAIN_INFO_FILE
from rtml_common.errors import NotFoundError


def open_feature_store(feast_home: str, offline_dir: str):
    """The Feast store of these directories; fails clearly when its definitions were never applied."""
    from feast.errors import FeatureServiceNotFoundException

    from feature_repo.model_inputs import FEATURE_SERVICE
    from feature_repo.store import FeatureStoreSettings, open_store

    store = open_store(FeatureStoreSettings(home=Path(feast_home), offline_dir=Path(offline_dir)))
    try:
        store.get_feature_service(FEATURE_SERVICE)
    except FeatureServiceNotFoundException as exc:
        raise NotFoundError(f"feature service '{FEATURE_SERVICE}' is not registered in the Feast store at {feast_home}: "
                            "apply the feature definitions first (rtml feast apply)") from exc
    return store


def register_candidate(model_dir: str, evaluation_path: str, dataset_info_path: str, registry_dir: str, model_name: str,
                       model_registry_server: str = "", model_registry_port: int = 443) -> str:
    """Register a trained model directory as a candidate with its metrics, lineage and defaults; returns the version."""
    evaluation = json.loads(Path(evaluation_path).read_text())
    info = json.loads(Path(dataset_info_path).read_text())
    train_info = json.loads((Path(model_dir) / TRAIN_INFO_FILE).read_text())
    registry = open_registry(Path(registry_dir), model_registry_server or None, model_registry_port)
    lineage = {"data_window": info["windows"], "feature_service": info["feature_service"], "rows": info["rows"],
               "code_version": code_version(), "train": {"best_epoch": train_info["best_epoch"], "config": train_info["config"]}}
    meta = registry.register(model_name, Path(model_dir) / MODEL_FILE, evaluation["candidate"], lineage, train_info["defaults"])
    print(f"registered {model_name} v{meta['version']} as candidate in {registry_dir}")
    return meta["version"]


def deploy_candidate(registry_dir: str, model_name: str, version: str, evaluation_path: str, tolerance: float,
                     canary_percent: int, kubernetes: bool, isvc_name: str, namespace: str, storage_uri_template: str,
                     decision_path: str) -> str:
    """Gate, record the decision (stages + deploy.json) and, when asked, patch the InferenceService; returns the action."""
    registry = open_registry(Path(registry_dir))
    evaluation = json.loads(Path(evaluation_path).read_text())
    decision = decide(registry, model_name, version, evaluation, tolerance, canary_percent)
    if kubernetes and decision["action"] != "reject":
        uri = storage_uri_template.format(name=model_name, version=version)
        percent = decision["canary_percent"] if decision["action"] == "canary" else None
        patch_inference_service(isvc_name, namespace, uri, percent)
        decision["kubernetes"] = {"inferenceservice": f"{namespace}/{isvc_name}", "storage_uri": uri}
    write_decision(Path(registry_dir), decision)
    Path(decision_path).write_text(json.dumps(decision, indent=2))
    print(f"deploy decision for {model_name} v{version}: {decision['action']} {decision['gate']}")
    return decision["action"]
