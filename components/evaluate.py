"""Champion/challenger evaluation on one test set: handbook metrics, a report page, and the comparison printed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from components.metrics import comparison_table, evaluate_scores
from components.registry import LocalRegistry
from components.report import render_report
from components.train import load_scripted, score


def evaluate_models(test: pd.DataFrame, candidate_file: Path, registry: LocalRegistry | None, model_name: str,
                    context: dict | None = None) -> tuple[dict, str]:
    """Metrics of the candidate and (when there is one) the current champion; returns (evaluation, report html).

    A candidate artifact that does not load or does not produce probabilities fails here, so
    nothing downstream registers or deploys it.
    """
    candidate = load_scripted(Path(candidate_file))
    scores = {"candidate": score(candidate, test)}
    champion_version = registry.version_in(model_name, "champion") if registry is not None else None
    if champion_version is not None:
        champion = load_scripted(registry.model_path(model_name, champion_version))
        scores["champion"] = score(champion, test)
    metrics = {name: evaluate_scores(test, s) for name, s in scores.items()}
    evaluation = {"candidate": metrics["candidate"], "champion": metrics.get("champion"),
                  "champion_version": champion_version, "test_rows": len(test), "test_frauds": int(test["tx_fraud"].sum())}
    table = comparison_table({"candidate (this run)": metrics["candidate"],
                              f"champion v{champion_version}": metrics.get("champion")})
    evaluation["table"] = table
    page = render_report(test["tx_fraud"].to_numpy(), scores,
                         {"candidate (this run)": metrics["candidate"], f"champion v{champion_version}": metrics.get("champion")},
                         {"model": model_name, "test transactions": len(test), "test frauds": evaluation["test_frauds"],
                          "champion version": champion_version or "none", **(context or {})})
    return evaluation, page


def random_scorer_metrics(test: pd.DataFrame, seed: int = 0) -> dict:
    """What a random scorer gets on this test set (the floor a model must beat)."""
    return evaluate_scores(test, np.random.default_rng(seed).random(len(test)))


def write_evaluation(evaluation: dict, page: str, evaluation_path: str, report_path: str) -> None:
    Path(evaluation_path).write_text(json.dumps(evaluation, indent=2))
    Path(report_path).write_text(page)
