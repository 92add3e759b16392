"""Canary rollouts of the rtml InferenceService: manifest transforms, cluster edges, analysis and CLI.

Promotion and rollback are *manifest changes* (see ../shared/reference/kserve-kfp.md):

* Knative mode: ``spec.predictor.canaryTrafficPercent: N`` sends N% to the latest revision.
  Promote = remove the field; roll back = keep the new spec and set it to 0.
* Standard mode (KServe 0.20+): ``spec.canary: [{trafficPercent, predictor: {name, ...}}]``.
  Promote = the canary's predictor becomes ``spec.predictor`` (so ``spec.predictor.name`` is the canary's
  name; the champion's autoscaling fields are kept because canaries carry none) and the entry is deleted;
  roll back = delete the entry.

The transforms are pure functions on InferenceService dicts; :func:`apply_action` reads and patches the
object through the ``kubernetes`` client; :func:`analyze` compares canary and champion in Prometheus.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from rtml_common.errors import InvalidInputError, NotFoundError, RtmlError

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
KNATIVE, STANDARD = "Knative", "Standard"
# Older spellings KServe still accepts in the annotation.
_MODE_ALIASES = {"knative": KNATIVE, "serverless": KNATIVE, "standard": STANDARD, "rawdeployment": STANDARD}
AUTOSCALING_FIELDS = ("minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "scaleMetricType",
                      "containerConcurrency", "autoScaling")
COMPONENTS = ("predictor", "transformer", "explainer")


class CanaryError(RtmlError):
    """The InferenceService is not in a state that allows the requested canary action."""

    http_status = 409


# ---------------------------------------------------------------- pure transforms


def deployment_mode(isvc: dict, mode: str | None = None) -> str:
    """``Knative`` or ``Standard``: the explicit ``mode`` if given, else the annotation (KServe's default: Knative)."""
    raw = mode or (isvc.get("metadata", {}).get("annotations") or {}).get(MODE_ANNOTATION) or KNATIVE
    try:
        return _MODE_ALIASES[raw.lower()]
    except KeyError:
        raise InvalidInputError(f"unknown deployment mode {raw!r}; use Knative or Standard") from None


def _check_percent(percent: Any) -> int:
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 <= percent <= 100:
        raise InvalidInputError(f"canary percent must be an integer 0..100, got {percent!r}")
    return percent


def _canary_entry(isvc: dict, name: str | None) -> tuple[int, dict]:
    entries = isvc.get("spec", {}).get("canary") or []
    if not entries:
        raise CanaryError(f"InferenceService {isvc['metadata']['name']!r} has no spec.canary entry")
    if name is None:
        if len(entries) > 1:
            names = [e.get("predictor", {}).get("name") for e in entries]
            raise InvalidInputError(f"several canaries {names}: pass --canary NAME")
        return 0, entries[0]
    for i, entry in enumerate(entries):
        if entry.get("predictor", {}).get("name") == name:
            return i, entry
    raise NotFoundError(f"no canary named {name!r} in spec.canary")


def set_canary(isvc: dict, percent: int, mode: str | None = None, canary: str | None = None) -> dict:
    """Return a copy of ``isvc`` sending ``percent``% of traffic to the canary."""
    percent = _check_percent(percent)
    out = copy.deepcopy(isvc)
    if deployment_mode(isvc, mode) == KNATIVE:
        out["spec"]["predictor"]["canaryTrafficPercent"] = percent
        return out
    index, _ = _canary_entry(out, canary)
    entries = out["spec"]["canary"]
    entries[index]["trafficPercent"] = percent
    total = sum(e.get("trafficPercent", 0) for e in entries)
    if total > 100:
        raise InvalidInputError(f"canary traffic would total {total}% (> 100%)")
    return out


def promote(isvc: dict, mode: str | None = None, canary: str | None = None) -> dict:
    """Return a copy of ``isvc`` with the canary promoted to 100% of the traffic."""
    out = copy.deepcopy(isvc)
    spec = out["spec"]
    if deployment_mode(isvc, mode) == KNATIVE:
        if not any("canaryTrafficPercent" in (spec.get(c) or {}) for c in COMPONENTS):
            raise CanaryError("no canaryTrafficPercent set: nothing to promote")
        for component in COMPONENTS:
            (spec.get(component) or {}).pop("canaryTrafficPercent", None)
        return out
    index, entry = _canary_entry(out, canary)
    champion = spec.get("predictor") or {}
    promoted = {k: v for k, v in champion.items() if k in AUTOSCALING_FIELDS}
    promoted.update(entry["predictor"])
    spec["predictor"] = promoted
    del spec["canary"][index]
    if not spec["canary"]:
        del spec["canary"]
    return out


def rollback(isvc: dict, mode: str | None = None, canary: str | None = None) -> dict:
    """Return a copy of ``isvc`` with all traffic back on the champion."""
    out = copy.deepcopy(isvc)
    spec = out["spec"]
    if deployment_mode(isvc, mode) == KNATIVE:
        if "canaryTrafficPercent" not in spec["predictor"]:
            raise CanaryError("no canaryTrafficPercent set: nothing to roll back")
        for component in COMPONENTS:
            if "canaryTrafficPercent" in (spec.get(component) or {}):
                spec[component]["canaryTrafficPercent"] = 0
        return out
    index, _ = _canary_entry(out, canary)
    del spec["canary"][index]
    if not spec["canary"]:
        del spec["canary"]
    return out


def _merge_diff(old: Any, new: Any) -> Any:
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return new
    diff: dict[str, Any] = {k: None for k in old if k not in new}
    for k, v in new.items():
        if k not in old:
            diff[k] = v
        elif old[k] != v:
            diff[k] = _merge_diff(old[k], v)
    return diff


def merge_patch(old: dict, new: dict) -> dict:
    """RFC 7386 merge patch turning ``old``'s spec into ``new``'s, guarded by the read ``resourceVersion``.

    The apiserver rejects the patch with 409 when the object changed since it was read (no lost updates).
    Merge patches are what the kubernetes client sends for custom objects; removed keys become ``null``.
    """
    patch: dict[str, Any] = {"spec": _merge_diff(old.get("spec", {}), new["spec"])}
    version = old.get("metadata", {}).get("resourceVersion")
    if version:
        patch["metadata"] = {"resourceVersion": version}
    return patch


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 application (used by tests and dry runs to preview a patch)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = apply_merge_patch(out.get(k), v)
    return out


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


ACTIONS: dict[str, Callable[..., dict]] = {"promote": promote, "rollback": rollback, "set": set_canary}


# ---------------------------------------------------------------- cluster edge


def _custom_objects_api():
    from kubernetes import client, config  # imported here: pure callers need no kube config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def get_isvc(name: str, namespace: str, api=None) -> dict:
    """Read one InferenceService; a missing object is a :class:`NotFoundError`."""
    from kubernetes.client.exceptions import ApiException

    api = api or _custom_objects_api()
    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise NotFoundError(f"InferenceService {namespace}/{name} not found") from exc
        raise


def apply_action(action: str, name: str, namespace: str, mode: str | None = None, *,
                 percent: int | None = None, canary: str | None = None, api=None) -> dict:
    """Read the InferenceService, transform it with ``action`` and patch it back; return the patched object."""
    if action not in ACTIONS:
        raise InvalidInputError(f"unknown canary action {action!r}; known: {sorted(ACTIONS)}")
    api = api or _custom_objects_api()
    current = get_isvc(name, namespace, api)
    kwargs: dict[str, Any] = {"mode": mode, "canary": canary}
    if action == "set":
        if percent is None:
            raise InvalidInputError("set needs --percent")
        kwargs["percent"] = percent
    desired = ACTIONS[action](current, **kwargs)
    patched = api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, merge_patch(current, desired))
    log.info("canary %s applied to %s/%s", action, namespace, name)
    return patched


# ---------------------------------------------------------------- automated canary analysis

REQUESTS_METRIC = "rtml_inference_requests_total"
LATENCY_METRIC = "rtml_inference_request_duration_seconds_bucket"
SCORE_METRIC = "rtml_inference_score_bucket"
# Client mistakes (4xx) say nothing about the model; server failures do.
ERROR_STATUS = "5..|error"


@dataclass(frozen=True)
class Thresholds:
    """When a canary is good enough; absolute limits plus limits relative to the champion."""

    min_requests: int = 200
    max_error_rate: float = 0.01
    max_error_rate_increase: float = 0.005
    max_p99_ratio: float = 1.25
    p99_slack_seconds: float = 0.005
    max_score_psi: float = 0.2


@dataclass(frozen=True)
class VersionStats:
    """One model version's behaviour over the analysis window."""

    version: str
    requests: float
    errors: float
    p99_seconds: float | None
    # Cumulative score histogram: upper bound ("+Inf" allowed) -> count, as Prometheus buckets are.
    score_buckets: dict[str, float] = field(default_factory=dict)

    @property
    def error_rate(self) -> float:
        """Server-error ratio (0 when there was no traffic)."""
        return self.errors / self.requests if self.requests > 0 else 0.0


@dataclass(frozen=True)
class Decision:
    """``promote``, ``rollback`` or ``wait``, with the reasons and the numbers behind them."""

    action: str
    reasons: list[str]
    evidence: dict


def _bucket_shares(buckets: dict[str, float]) -> list[float]:
    bounds = sorted(buckets, key=lambda b: math.inf if b in ("+Inf", "inf") else float(b))
    cumulative = [buckets[b] for b in bounds]
    counts = [max(c - p, 0.0) for c, p in zip(cumulative, [0.0, *cumulative[:-1]])]
    total = sum(counts)
    return [c / total for c in counts] if total > 0 else []


def score_psi(canary: dict[str, float], champion: dict[str, float], eps: float = 1e-4) -> float | None:
    """Population stability index between two cumulative score histograms with the same buckets."""
    if set(canary) != set(champion):
        raise InvalidInputError("canary and champion score histograms have different buckets")
    a, b = _bucket_shares(canary), _bucket_shares(champion)
    if not a or not b:
        return None
    return sum((x - y) * math.log((x + eps) / (y + eps)) for x, y in zip(a, b))


def decide(canary: VersionStats, champion: VersionStats, limits: Thresholds = Thresholds()) -> Decision:
    """Pure decision rule: wait for enough traffic, roll back on any regression, otherwise promote."""
    psi = score_psi(canary.score_buckets, champion.score_buckets) if canary.score_buckets and champion.score_buckets else None
    evidence = {"canary": {**asdict(canary), "error_rate": canary.error_rate},
                "champion": {**asdict(champion), "error_rate": champion.error_rate},
                "score_psi": psi, "thresholds": asdict(limits)}
    if canary.requests < limits.min_requests:
        return Decision("wait", [f"canary served {canary.requests:.0f} < {limits.min_requests} requests"], evidence)
    reasons = []
    if canary.error_rate > limits.max_error_rate and canary.error_rate > champion.error_rate + limits.max_error_rate_increase:
        reasons.append(f"error rate {canary.error_rate:.4f} vs champion {champion.error_rate:.4f}")
    if canary.p99_seconds is not None and champion.p99_seconds is not None:
        if canary.p99_seconds > champion.p99_seconds * limits.max_p99_ratio + limits.p99_slack_seconds:
            reasons.append(f"p99 {canary.p99_seconds * 1e3:.1f} ms vs champion {champion.p99_seconds * 1e3:.1f} ms")
    if psi is not None and psi > limits.max_score_psi:
        reasons.append(f"score distribution shifted: PSI {psi:.3f} > {limits.max_score_psi}")
    if reasons:
        return Decision("rollback", reasons, evidence)
    return Decision("promote", ["canary within every limit"], evidence)


def _prom_query(base_url: str, query: str, timeout: float) -> list[dict]:
    import httpx

    resp = httpx.get(f"{base_url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=timeout)
    body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    if resp.status_code != 200 or body.get("status") != "success":
        raise RtmlError(f"Prometheus query failed ({resp.status_code}): {body.get('error', resp.text[:200])}")
    return body["data"]["result"]


def _scalar(result: list[dict]) -> float | None:
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def version_stats(base_url: str, model: str, version: str, window: str = "10m", timeout: float = 10.0) -> VersionStats:
    """Query Prometheus for one model version's requests, errors, p99 latency and score histogram."""
    sel = f'model="{model}",model_version="{version}"'
    requests = _scalar(_prom_query(base_url, f"sum(increase({REQUESTS_METRIC}{{{sel}}}[{window}]))", timeout)) or 0.0
    errors = _scalar(_prom_query(
        base_url, f'sum(increase({REQUESTS_METRIC}{{{sel},status=~"{ERROR_STATUS}"}}[{window}]))', timeout)) or 0.0
    p99 = _scalar(_prom_query(
        base_url, f"histogram_quantile(0.99, sum by (le) (rate({LATENCY_METRIC}{{{sel}}}[{window}])))", timeout))
    scores = _prom_query(base_url, f"sum by (le) (increase({SCORE_METRIC}{{{sel}}}[{window}]))", timeout)
    buckets = {r["metric"]["le"]: float(r["value"][1]) for r in scores}
    return VersionStats(version, requests, errors, p99, buckets)


def analyze(base_url: str, model: str, canary_version: str, champion_version: str, window: str = "10m",
            limits: Thresholds = Thresholds()) -> Decision:
    """Compare canary and champion in Prometheus over ``window`` and log the decision with its evidence."""
    decision = decide(version_stats(base_url, model, canary_version, window),
                      version_stats(base_url, model, champion_version, window), limits)
    log.info("canary analysis %s: %s; evidence %s", decision.action, "; ".join(decision.reasons),
             json.dumps(decision.evidence, default=str))
    return decision


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
            decision = analyze(args.prometheus, args.model, args.canary_version, args.champion_version, args.window, limits)
            print(json.dumps(asdict(decision), indent=2, default=str))
            if args.apply and decision.action in ("promote", "rollback"):
                apply_action(decision.action, args.name, args.namespace, args.mode, canary=args.canary)
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
    an.add_argument("--model", default="fraud")
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
