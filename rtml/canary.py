"""``rtml canary``: the operator's view of the InferenceService canary (status, promote, roll back, analyze).

The transforms, the cluster edge and the Prometheus analysis live in :mod:`components.canary_analysis`
so that the ``canary_analysis_op`` pipeline step runs the same code; they are re-exported here.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from components.canary_analysis import (  # noqa: F401  (re-exported: rtml.canary is the public entry point)
    ACTIONS,
    AUTOSCALING_FIELDS,
    COMPONENTS,
    KNATIVE,
    MODE_ANNOTATION,
    STANDARD,
    CanaryError,
    Decision,
    Thresholds,
    VersionStats,
    analyze,
    apply_action,
    apply_merge_patch,
    decide,
    deployment_mode,
    get_isvc,
    merge_patch,
    promote,
    rollback,
    run_analysis,
    score_psi,
    set_canary,
    version_stats,
)
from rtml_common.errors import RtmlError


def _condition(status: dict, kind: str) -> bool | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return cond.get("status") == "True"
    return None


def status_summary(isvc: dict, mode: str | None = None) -> dict:
    """What an operator needs: readiness, URL, and who gets how much traffic (spec and observed)."""
    mode = deployment_mode(isvc, mode)
    spec, status = isvc.get("spec", {}), isvc.get("status") or {}
    summary: dict[str, Any] = {
        "name": isvc["metadata"]["name"],
        "mode": mode,
        "ready": _condition(status, "Ready"),
        "url": status.get("url"),
    }
    predictor = spec.get("predictor", {})
    if mode == KNATIVE:
        observed = (status.get("components") or {}).get("predictor") or {}
        percent = predictor.get("canaryTrafficPercent")
        summary.update(
            canary_percent=percent,
            phase="stable" if percent is None else ("rolled-back" if percent == 0 else "canary"),
            revisions={k: observed.get(k) for k in ("latestReadyRevision", "latestCreatedRevision",
                                                     "latestRolledoutRevision", "previousRolledoutRevision")},
            traffic=[{k: t.get(k) for k in ("revisionName", "percent", "tag", "latestRevision")}
                     for t in observed.get("traffic") or []],
        )
    else:
        ready = {c.get("name"): c for c in status.get("canaryStatuses") or []}
        canaries = [{
            "name": e["predictor"].get("name"),
            "traffic_percent": e.get("trafficPercent", 0),
            "ready": (ready.get(e["predictor"].get("name")) or {}).get("ready"),
        } for e in spec.get("canary") or []]
        summary.update(
            predictor=predictor.get("name"),
            champion_percent=100 - sum(c["traffic_percent"] for c in canaries),
            canaries=canaries,
            canary_ready=_condition(status, "CanaryPredictorReady"),
            phase="canary" if canaries else "stable",
        )
    return summary


# ---------------------------------------------------------------- CLI



def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default="fraud", help="InferenceService name (default: fraud)")
    parser.add_argument("--namespace", default="rtml", help="namespace (default: rtml)")
    parser.add_argument("--mode", choices=[KNATIVE, STANDARD], default=None,
                        help="deployment mode; default: the object's serving.kserve.io/deploymentMode annotation")
    parser.add_argument("--canary", default=None, help="Standard mode: the spec.canary entry's predictor name")


def _run(args: argparse.Namespace) -> int:
    try:
        if args.canary_action == "status":
            print(json.dumps(status_summary(get_isvc(args.name, args.namespace), args.mode), indent=2))
            return 0
        if args.canary_action == "analyze":
            limits = Thresholds(min_requests=args.min_requests, max_error_rate=args.max_error_rate,
                                max_p99_ratio=args.max_p99_ratio, max_score_psi=args.max_score_psi)
            record = run_analysis(args.prometheus, args.model, args.canary_version, args.champion_version,
                                  args.window, limits, apply=args.apply, isvc_name=args.name, namespace=args.namespace,
                                  mode=args.mode, canary=args.canary)
            print(json.dumps(record, indent=2, default=str))
            return 0
        patched = apply_action(args.canary_action, args.name, args.namespace, args.mode,
                               percent=getattr(args, "percent", None), canary=args.canary)
        print(json.dumps(status_summary(patched, args.mode), indent=2))
        return 0
    except RtmlError as exc:
        print(f"error: {exc}")
        return 1


def add_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``canary status|promote|rollback|set|analyze``; each sets ``func(args) -> exit code``."""
    canary = subparsers.add_parser("canary", help="inspect, promote or roll back the InferenceService canary")
    actions = canary.add_subparsers(dest="canary_action", required=True)
    for action, help_text in (("status", "show readiness and the traffic split"),
                              ("promote", "send all traffic to the canary"),
                              ("rollback", "send all traffic back to the champion")):
        _common(actions.add_parser(action, help=help_text))
    set_parser = actions.add_parser("set", help="set the canary's traffic percentage")
    _common(set_parser)
    set_parser.add_argument("--percent", type=int, required=True, help="0..100")
    an = actions.add_parser("analyze", help="compare canary and champion in Prometheus; promote or roll back")
    _common(an)
    an.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://prometheus:9090")
    an.add_argument("--model", default="fraud-detector", help="model label in the metrics (default: fraud-detector)")
    an.add_argument("--canary-version", required=True)
    an.add_argument("--champion-version", required=True)
    an.add_argument("--window", default="10m", help="PromQL range, e.g. 10m")
    an.add_argument("--min-requests", type=int, default=Thresholds.min_requests)
    an.add_argument("--max-error-rate", type=float, default=Thresholds.max_error_rate)
    an.add_argument("--max-p99-ratio", type=float, default=Thresholds.max_p99_ratio)
    an.add_argument("--max-score-psi", type=float, default=Thresholds.max_score_psi)
    an.add_argument("--apply", action="store_true", help="apply the decision to the InferenceService")
    canary.set_defaults(func=_run)
    return canary
