"""Canary rollouts of the rtml InferenceService: manifest transforms, the cluster edge and automated analysis.

Plain Python (no kfp): ``rtml canary`` and the ``canary_analysis_op`` pipeline step both call it.
Promotion and rollback are *manifest changes* (see ../shared/reference/kserve-kfp.md):

* Knative mode: ``spec.predictor.canaryTrafficPercent: N`` sends N% to the latest revision.
  Promote = remove the field; roll back = keep the new spec and set it to 0.
* Standard mode (KServe 0.20+): ``spec.canary: [{trafficPercent, predictor: {name, ...}}]``.
  Promote = the canary's predictor becomes ``spec.predictor`` (so ``spec.predictor.name`` is the canary's
  name; the champion's autoscaling fields are kept because canaries carry none) and the entry is deleted;
  roll back = delete the entry.

The transforms are pure functions on InferenceService dicts; :func:`apply_action` reads and patches the
object through the ``kubernetes`` client; :func:`analyze` compares canary and champion in Prometheus and
:func:`run_analysis` records the decision and, when asked, applies it.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from rtml_common.errors import InvalidInputError, NotFoundError, NotReadyError, RtmlError

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

    try:
        resp = httpx.get(f"{base_url.rstrip('/')}/api/v1/query", params={"query": query}, timeout=timeout)
    except httpx.HTTPError as exc:
        raise NotReadyError(f"Prometheus at {base_url} did not answer: {exc}") from exc
    body = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
    if resp.status_code != 200 or body.get("status") != "success":
        raise RtmlError(f"Prometheus query failed ({resp.status_code}): {body.get('error', resp.text[:200])}")
    return body["data"]["result"]


def _scalar(result: list[dict]) -> float | None:
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


# Label values go into PromQL string literals; a quote or backslash would change the query.
_LABEL_VALUE = re.compile(r"[A-Za-z0-9_.:+-]{1,128}")
_DURATION = re.compile(r"(\d+(ms|s|m|h|d|w|y))+")


def _check_query_inputs(model: str, version: str, window: str) -> None:
    for what, value in (("model", model), ("model version", version)):
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            raise InvalidInputError(f"{what} {value!r} must be 1-128 characters of letters, digits and _.:+-")
    if not isinstance(window, str) or not _DURATION.fullmatch(window):
        raise InvalidInputError(f"window {window!r} is not a PromQL duration such as 30s, 10m or 1h30m")


def version_stats(base_url: str, model: str, version: str, window: str = "10m", timeout: float = 10.0) -> VersionStats:
    """Query Prometheus for one model version's requests, errors, p99 latency and score histogram."""
    _check_query_inputs(model, version, window)
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




def run_analysis(prometheus_url: str, model: str, canary_version: str, champion_version: str, window: str = "10m",
                 limits: Thresholds = Thresholds(), *, decision_path: str | Path | None = None, apply: bool = False,
                 isvc_name: str = "", namespace: str = "", mode: str | None = None, canary: str | None = None,
                 api=None) -> dict:
    """Analyze, optionally apply the decision to the InferenceService, write it as JSON; returns the record.

    Only ``promote`` and ``rollback`` are applied; ``wait`` leaves the canary serving its share.
    """
    if apply and not (isvc_name and namespace):
        raise InvalidInputError("applying the decision needs the InferenceService name and namespace")
    decision = analyze(prometheus_url, model, canary_version, champion_version, window, limits)
    record: dict[str, Any] = {**asdict(decision), "model": model, "canary_version": canary_version,
                              "champion_version": champion_version, "window": window, "prometheus": prometheus_url,
                              "applied": False}
    if apply and decision.action in ("promote", "rollback"):
        apply_action(decision.action, isvc_name, namespace, mode, canary=canary, api=api)
        record.update(applied=True, inferenceservice=f"{namespace}/{isvc_name}")
    if decision_path:
        Path(decision_path).write_text(json.dumps(record, indent=2, default=str))
    return record
