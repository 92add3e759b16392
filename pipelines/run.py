"""Three ways to run the pipelines: locally through kfp.local, compiled to IR YAML, or submitted to a KFP endpoint."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from kfp import compiler

from pipelines.batch_scoring import batch_scoring_pipeline
from pipelines.canary import canary_pipeline
from pipelines.training import training_pipeline
from rtml_common.errors import InvalidInputError, RtmlError

REPO_ROOT = Path(__file__).resolve().parent.parent
COMPILED_DIR = Path(__file__).resolve().parent / "compiled"
PIPELINES = {"training": training_pipeline, "batch_scoring": batch_scoring_pipeline, "canary": canary_pipeline}


class PipelineRunError(RtmlError):
    """A local pipeline run failed; the message names the step and its error."""


def _init_local(pipeline_root: Path) -> None:
    from kfp import local

    # Steps run as subprocesses of this interpreter; they must import rtml's packages from here.
    paths = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root), raise_on_error=True)


def _latest_run_dir(pipeline_root: Path, name: str) -> Path | None:
    runs = sorted((p for p in pipeline_root.glob(f"{name}-*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def _artifacts(run_dir: Path | None) -> dict[str, str]:
    """Output artifact paths of a kfp.local run, as '<task>/<output>' -> path."""
    if run_dir is None:
        return {}
    return {f"{p.parent.name}/{p.name}": str(p) for p in sorted(run_dir.glob("*/*"))}


def run_local(home: Path, offline_dir: Path, registry_dir: Path, train_start: str, train_days: int = 7, delay_days: int = 7,
              test_days: int = 7, model_name: str = "fraud-detector", seed: int = 0, max_epochs: int = 40,
              tolerance: float = 0.01, canary_percent: int = 10, device: str = "auto", pipeline_root: Path | None = None,
              model_registry_server: str = "", model_registry_port: int = 443) -> dict:
    """Run the training pipeline with kfp.local in this interpreter.

    Returns ``{"version", "action", "metrics" (candidate/champion), "decision", "artifacts" (path per step output),
    "run_dir"}``. A failing step raises ``PipelineRunError`` and, as the steps are ordered, registers nothing.
    """
    home, registry_dir = Path(home), Path(registry_dir)
    pipeline_root = Path(pipeline_root) if pipeline_root else home / "pipeline_root"
    _init_local(pipeline_root)
    try:
        task = training_pipeline(feast_home=str(home), offline_dir=str(offline_dir), registry_dir=str(registry_dir),
                                 train_start=train_start, train_days=train_days, delay_days=delay_days, test_days=test_days,
                                 model_name=model_name, seed=seed, max_epochs=max_epochs, device=device,
                                 tolerance=tolerance, canary_percent=canary_percent,
                                 model_registry_server=model_registry_server, model_registry_port=model_registry_port)
    except RuntimeError as exc:
        raise PipelineRunError(f"training pipeline failed: {exc} (step logs above)") from exc
    run_dir = _latest_run_dir(pipeline_root, training_pipeline.name)
    artifacts = _artifacts(run_dir)
    evaluation = json.loads(Path(artifacts["evaluate-op/evaluation"]).read_text())
    decision = json.loads(Path(artifacts["deploy-op/decision"]).read_text())
    return {"version": decision["version"], "action": task.output, "metrics": {k: evaluation[k] for k in ("candidate", "champion")},
            "table": evaluation["table"], "decision": decision, "artifacts": artifacts, "run_dir": str(run_dir)}


def run_batch_scoring_local(home: Path, offline_dir: Path, registry_dir: Path, start: str, days: int = 1,
                            model_name: str = "fraud-detector", version: str = "", pipeline_root: Path | None = None) -> dict:
    """Score [start, start + days) of stored transactions with kfp.local; returns rows scored and the scores file."""
    home = Path(home)
    pipeline_root = Path(pipeline_root) if pipeline_root else home / "pipeline_root"
    _init_local(pipeline_root)
    try:
        task = batch_scoring_pipeline(feast_home=str(home), offline_dir=str(offline_dir), registry_dir=str(registry_dir),
                                      start=start, days=days, model_name=model_name, version=version)
    except RuntimeError as exc:
        raise PipelineRunError(f"batch-scoring pipeline failed: {exc} (step logs above)") from exc
    artifacts = _artifacts(_latest_run_dir(pipeline_root, batch_scoring_pipeline.name))
    return {"rows": task.output, "artifacts": artifacts}


def compile_all(out_dir: Path = COMPILED_DIR) -> list[Path]:
    """Compile every pipeline to ``<out_dir>/<name>.yaml`` (KFP v2 IR); returns the files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, func in PIPELINES.items():
        path = out_dir / f"{name}.yaml"
        compiler.Compiler().compile(func, package_path=str(path))
        paths.append(path)
    return paths


def submit(host: str, arguments: dict | None = None, pipeline: str = "training", experiment: str = "rtml", run_name: str | None = None,
           cron: str | None = None, namespace: str | None = None, existing_token: str | None = None) -> dict:
    """Upload the compiled pipeline (new version when it exists), start a run, and optionally a recurring run.

    ``arguments`` are the pipeline's parameters (paths as the cluster's steps see them, e.g. a
    mounted volume). ``cron`` uses KFP's six-field cron format (``"0 0 3 * * *"``: daily at 03:00).
    Returns the pipeline, version, experiment, run and (with ``cron``) recurring-run ids.
    """
    from datetime import datetime, timezone

    import kfp

    arguments = dict(arguments or {})
    if pipeline not in PIPELINES:
        raise InvalidInputError(f"unknown pipeline {pipeline!r}; expected one of {sorted(PIPELINES)}")
    package = COMPILED_DIR / f"{pipeline}.yaml"
    client = kfp.Client(host=host, namespace=namespace, existing_token=existing_token)
    name = PIPELINES[pipeline].name
    pipeline_id = client.get_pipeline_id(name)
    version_name = f"{name}-{_short_code_version()}-{datetime.now(timezone.utc):%Y%m%d%H%M%S}"
    if pipeline_id is None:
        uploaded = client.upload_pipeline(str(package), pipeline_name=name, namespace=namespace)
        pipeline_id = uploaded.pipeline_id
        version_id = client.list_pipeline_versions(pipeline_id).pipeline_versions[0].pipeline_version_id
    else:
        version_id = client.upload_pipeline_version(str(package), pipeline_version_name=version_name,
                                                    pipeline_id=pipeline_id).pipeline_version_id
    exp = client.create_experiment(experiment, namespace=namespace)
    run = client.run_pipeline(experiment_id=exp.experiment_id, job_name=run_name or f"{name}-run", params=arguments,
                              pipeline_id=pipeline_id, version_id=version_id)
    result = {"pipeline_id": pipeline_id, "version_id": version_id, "run_id": run.run_id, "experiment_id": exp.experiment_id}
    if cron:
        recurring = client.create_recurring_run(experiment_id=exp.experiment_id, job_name=f"{name}-recurring",
                                                cron_expression=cron, params=arguments, pipeline_id=pipeline_id,
                                                version_id=version_id, max_concurrency=1)
        result["recurring_run_id"] = recurring.recurring_run_id
    return result


def _short_code_version() -> str:
    from components.registry import code_version

    return code_version()[:12]


if __name__ == "__main__":  # python -m pipelines.run: recompile the committed YAML
    for p in compile_all(Path(sys.argv[1]) if len(sys.argv) > 1 else COMPILED_DIR):
        print(p)
