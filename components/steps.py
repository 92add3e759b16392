"""Kubeflow Pipelines v2 components: thin wrappers that import and call the plain modules of ``components``.

kfp ships each function's source into its container, so every body imports what it uses.
The image (``RTML_PIPELINE_IMAGE``) must contain rtml's code; kfp itself comes with it, so
no step installs packages at run time. Locally, kfp.local runs them in this interpreter.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.settings import ComponentSettings

IMAGE = ComponentSettings().pipeline_image


def component(func):
    """``dsl.component`` with rtml's image and no runtime pip install."""
    return dsl.component(func, base_image=IMAGE, install_kfp_package=False)


@component
def dataset_op(feast_home: str, offline_dir: str, train_start: str, train_days: int, delay_days: int, test_days: int,
               seed: int, train_set: Output[Dataset], validation_set: Output[Dataset], test_set: Output[Dataset],
               dataset_info: Output[Artifact]):
    """Point-in-time train / validation / test sets computed from the raw event log (handbook split)."""
    from pathlib import Path

    from components.dataset import build_training_sets, write_sets
    from components.steps_support import open_feature_store

    store = open_feature_store(feast_home, offline_dir)
    sets = build_training_sets(store, Path(offline_dir), train_start, train_days, delay_days, test_days, seed=seed)
    write_sets(sets, train_set.path, validation_set.path, test_set.path, dataset_info.path)
    print(sets.info)


@component
def train_op(train_set: Input[Dataset], validation_set: Input[Dataset], seed: int, max_epochs: int, device: str,
             model: Output[Model], metrics: Output[Metrics], refit: bool = True):
    """Feed-forward network with normalisation inside the exported TorchScript module."""
    from pathlib import Path

    import pandas as pd

    from components.train import TrainConfig, export, train_model

    train = pd.read_parquet(train_set.path)
    config = TrainConfig(seed=seed, max_epochs=max_epochs, device=device, refit=refit)
    result = train_model(train, pd.read_parquet(validation_set.path), config)
    export(result, train, config, Path(model.path))
    model.metadata["framework"] = "pytorch-torchscript"
    metrics.log_metric("best_epoch", result.best_epoch)
    metrics.log_metric("validation_ap", max(h["validation_ap"] for h in result.history if "validation_ap" in h))
    metrics.log_metric("train_seconds", round(result.seconds, 3))


@component
def evaluate_op(test_set: Input[Dataset], model: Input[Model], registry_dir: str, model_name: str,
                evaluation: Output[Artifact], report: Output[HTML], metrics: Output[Metrics]):
    """Handbook metrics of the candidate and the champion on the same test set, report page, printed table."""
    from pathlib import Path

    import pandas as pd

    from components.evaluate import evaluate_models, write_evaluation
    from components.registry import LocalRegistry

    test = pd.read_parquet(test_set.path)
    result, page = evaluate_models(test, Path(model.path) / "model.pt", LocalRegistry(Path(registry_dir)), model_name)
    write_evaluation(result, page, evaluation.path, report.path)
    for k, v in result["candidate"].items():
        metrics.log_metric(k, v)
    print(result["table"])


@component
def register_op(model: Input[Model], evaluation: Input[Artifact], dataset_info: Input[Artifact], registry_dir: str,
                model_name: str, model_registry_server: str, model_registry_port: int) -> str:
    """Register the candidate (validated first) with metrics, lineage and serving defaults; returns the version."""
    from components.steps_support import register_candidate

    return register_candidate(model.path, evaluation.path, dataset_info.path, registry_dir, model_name,
                              model_registry_server, model_registry_port)


@component
def deploy_op(registry_dir: str, model_name: str, version: str, evaluation: Input[Artifact], tolerance: float,
              canary_percent: int, kubernetes: bool, isvc_name: str, namespace: str, storage_uri_template: str,
              decision: Output[Artifact]) -> str:
    """Quality gate; canary (or first champion) when passed: deploy.json locally, InferenceService patch on Kubernetes."""
    from components.steps_support import deploy_candidate

    return deploy_candidate(registry_dir, model_name, version, evaluation.path, tolerance, canary_percent, kubernetes,
                            isvc_name, namespace, storage_uri_template, decision.path)


@component
def batch_score_op(feast_home: str, offline_dir: str, registry_dir: str, model_name: str, version: str, start: str,
                   days: int, scores: Output[Dataset]) -> NamedTuple("ScoreOutputs", [("rows", int), ("version", str)]):
    """Score stored transactions of [start, start + days) with a registered model into the offline table 'scores'."""
    from collections import namedtuple
    from pathlib import Path

    from components.registry import LocalRegistry
    from components.scoring import score_range
    from components.steps_support import open_feature_store

    store = open_feature_store(feast_home, offline_dir)
    out = score_range(store, Path(offline_dir), LocalRegistry(Path(registry_dir)), model_name, start, days, version)
    out.to_parquet(scores.path, index=False)
    used = str(out["model_version"].iloc[0]) if len(out) else version
    print(f"scored {len(out)} transactions with {model_name} v{used}")
    return namedtuple("ScoreOutputs", ["rows", "version"])(len(out), used)


@component
def canary_analysis_op(prometheus_url: str, model_name: str, canary_version: str, champion_version: str, window: str,
                       min_requests: int, max_error_rate: float, max_error_rate_increase: float, max_p99_ratio: float,
                       p99_slack_seconds: float, max_score_psi: float, apply: bool, isvc_name: str, namespace: str,
                       deployment_mode: str, canary_name: str, decision: Output[Artifact]) -> str:
    """Canary vs champion in Prometheus (traffic, errors, p99, score PSI); with ``apply``, promote or roll back the ISVC."""
    from components.canary_analysis import Thresholds, run_analysis

    limits = Thresholds(min_requests=min_requests, max_error_rate=max_error_rate,
                        max_error_rate_increase=max_error_rate_increase, max_p99_ratio=max_p99_ratio,
                        p99_slack_seconds=p99_slack_seconds, max_score_psi=max_score_psi)
    record = run_analysis(prometheus_url, model_name, canary_version, champion_version, window, limits,
                          decision_path=decision.path, apply=apply, isvc_name=isvc_name, namespace=namespace,
                          mode=deployment_mode or None, canary=canary_name or None)
    decision.metadata.update(action=record["action"], applied=record["applied"])
    print(f"canary analysis of {model_name} v{canary_version} vs v{champion_version}: {record['action']} "
          f"({'; '.join(record['reasons'])}){' applied' if record['applied'] else ''}")
    return record["action"]
