"""Quality gate and canary decision: locally a ``deploy.json`` the runtime acts on, on Kubernetes an InferenceService patch."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from components.metrics import METRICS
from components.registry import LocalRegistry
from rtml_common.errors import ConfigurationError, InvalidInputError

DECISION_FILE = "deploy.json"


@dataclass(frozen=True)
class GateResult:
    """Whether the candidate may go out, and, metric by metric, why not."""

    passed: bool
    reasons: list[str] = field(default_factory=list)


def quality_gate(candidate: dict, champion: dict | None, tolerance: float = 0.01) -> GateResult:
    """Pass when no metric is worse than the champion's by more than ``tolerance`` (absolute); no champion passes."""
    if tolerance < 0:
        raise InvalidInputError(f"tolerance must be >= 0, got {tolerance}")
    missing = [m for m in METRICS if m not in candidate]
    if missing:
        raise InvalidInputError(f"candidate metrics lack {missing}")
    if champion is None:
        return GateResult(True, ["no champion yet"])
    reasons = [f"{m} {candidate[m]:.4f} < champion {champion[m]:.4f} - tolerance {tolerance}"
               for m in METRICS if candidate[m] < champion[m] - tolerance]
    return GateResult(not reasons, reasons)


def decide(registry: LocalRegistry, model_name: str, version: str, evaluation: dict, tolerance: float,
           canary_percent: int = 10) -> dict:
    """Apply the gate and record the outcome in the registry's stages; returns the decision.

    First model: it becomes champion (nothing to compare against). Gate passed: the version
    becomes the canary beside the champion. Gate failed: it stays a candidate and nothing deploys.
    """
    if not 0 <= canary_percent <= 100:
        raise InvalidInputError(f"canary_percent must be in [0, 100], got {canary_percent}")
    gate = quality_gate(evaluation["candidate"], evaluation.get("champion"), tolerance)
    champion = evaluation.get("champion_version")
    if not gate.passed:
        action = "reject"
    elif champion is None:
        action = "promote"
        registry.promote(model_name, version)
    else:
        action = "canary"
        registry.set_stage(model_name, version, "canary")
    return {"model": model_name, "version": version, "action": action, "champion_version": champion,
            "canary_percent": canary_percent if action == "canary" else 0, "gate": asdict(gate), "tolerance": tolerance,
            "decided_at": datetime.now(timezone.utc).isoformat()}


def write_decision(registry_root: Path, decision: dict) -> Path:
    """``<registry>/<name>/deploy.json``: the local runtime starts a candidate server beside the champion on 'canary'."""
    path = Path(registry_root) / decision["model"] / DECISION_FILE
    path.write_text(json.dumps(decision, indent=2))
    return path


def patch_inference_service(name: str, namespace: str, storage_uri: str, canary_percent: int | None) -> dict:
    """Point the InferenceService's predictor at the new model with ``canaryTrafficPercent`` (Knative mode).

    KServe gives the latest revision ``canary_percent`` of the traffic and the last rolled-out
    revision the rest; promotion removes the field (``canary_percent=None``: a merge patch
    with null deletes it), rollback sets it to 0.
    """
    try:
        from kubernetes import client, config
    except ImportError as exc:
        raise ConfigurationError("deploying to Kubernetes needs the 'kubernetes' package") from exc
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    patch = {"spec": {"predictor": {"canaryTrafficPercent": canary_percent, "model": {"storageUri": storage_uri}}}}
    return client.CustomObjectsApi().patch_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", namespace, "inferenceservices", name, patch)
