"""components.canary_analysis: manifest transforms, merge patches, the decision rule, input checks, the patch edge."""

from __future__ import annotations

import copy

import pytest

from components import canary_analysis as canary
from rtml_common.errors import InvalidInputError, NotFoundError

def knative_isvc(percent=None):
    predictor = {"minReplicas": 1, "maxReplicas": 4, "containers": [{"name": "kserve-container", "image": "rtml:2"}]}
    if percent is not None:
        predictor["canaryTrafficPercent"] = percent
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "fraud", "resourceVersion": "42",
                         "annotations": {canary.MODE_ANNOTATION: "Knative"}},
            "spec": {"predictor": predictor, "transformer": {"containers": [{"name": "kserve-container"}]}}}


def standard_isvc(*canaries):
    return {"metadata": {"name": "fraud", "annotations": {canary.MODE_ANNOTATION: "Standard"}},
            "spec": {"predictor": {"name": "champion", "minReplicas": 2, "maxReplicas": 5, "scaleMetric": "rps",
                                   "containers": [{"name": "kserve-container", "image": "rtml:1"}]},
                     "canary": [{"trafficPercent": p, "predictor": {"name": n, "containers": [
                         {"name": "kserve-container", "image": f"rtml:{n}"}]}} for n, p in canaries]}}


@pytest.mark.parametrize("raw,expected", [("Serverless", "Knative"), ("RawDeployment", "Standard"),
                                          ("Standard", "Standard"), (None, "Knative")])
def test_deployment_mode_aliases(raw, expected):
    isvc = knative_isvc()
    isvc["metadata"]["annotations"] = {canary.MODE_ANNOTATION: raw} if raw else {}
    assert canary.deployment_mode(isvc) == expected


def test_unknown_mode_is_a_clear_400():
    with pytest.raises(InvalidInputError, match="unknown deployment mode 'Serverful'"):
        canary.deployment_mode(knative_isvc(), "Serverful")


def test_knative_set_promote_rollback():
    original = knative_isvc()
    staged = canary.set_canary(original, 25)
    assert staged["spec"]["predictor"]["canaryTrafficPercent"] == 25
    assert "canaryTrafficPercent" not in original["spec"]["predictor"]  # input untouched
    promoted = canary.promote(staged)
    assert "canaryTrafficPercent" not in promoted["spec"]["predictor"]
    assert promoted["spec"]["predictor"]["containers"] == staged["spec"]["predictor"]["containers"]
    rolled = canary.rollback(staged)
    assert rolled["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert rolled["spec"]["predictor"]["containers"][0]["image"] == "rtml:2"  # the new spec is kept


def test_knative_promote_without_canary_is_rejected():
    with pytest.raises(canary.CanaryError, match="nothing to promote"):
        canary.promote(knative_isvc())
    with pytest.raises(canary.CanaryError, match="nothing to roll back"):
        canary.rollback(knative_isvc())


@pytest.mark.parametrize("bad", [-1, 101, 10.5, True, "10"])
def test_percent_is_validated(bad):
    with pytest.raises(InvalidInputError, match="0..100"):
        canary.set_canary(knative_isvc(), bad)


def test_standard_promote_moves_canary_into_predictor():
    isvc = standard_isvc(("challenger", 20))
    promoted = canary.promote(isvc)
    pred = promoted["spec"]["predictor"]
    assert pred["name"] == "challenger" and pred["containers"][0]["image"] == "rtml:challenger"
    # Canaries carry no autoscaling fields: the champion's survive promotion.
    assert (pred["minReplicas"], pred["maxReplicas"], pred["scaleMetric"]) == (2, 5, "rps")
    assert "canary" not in promoted["spec"]


def test_standard_rollback_deletes_entry_and_keeps_champion():
    isvc = standard_isvc(("a", 10), ("b", 5))
    rolled = canary.rollback(isvc, canary="a")
    assert rolled["spec"]["predictor"] == isvc["spec"]["predictor"]
    assert [e["predictor"]["name"] for e in rolled["spec"]["canary"]] == ["b"]


def test_standard_set_checks_total_and_names():
    isvc = standard_isvc(("a", 10), ("b", 5))
    assert canary.set_canary(isvc, 50, canary="b")["spec"]["canary"][1]["trafficPercent"] == 50
    with pytest.raises(InvalidInputError, match="total 105%"):
        canary.set_canary(isvc, 95, canary="b")
    with pytest.raises(InvalidInputError, match="several canaries"):
        canary.promote(isvc)
    with pytest.raises(NotFoundError, match="no canary named 'c'"):
        canary.rollback(isvc, canary="c")
    with pytest.raises(canary.CanaryError, match="no spec.canary"):
        canary.promote(standard_isvc())


def test_merge_patch_is_minimal_and_guards_resource_version():
    old = knative_isvc(10)
    patch = canary.merge_patch(old, canary.promote(old))
    assert patch == {"metadata": {"resourceVersion": "42"}, "spec": {"predictor": {"canaryTrafficPercent": None}}}
    assert canary.merge_patch(old, canary.rollback(old))["spec"] == {"predictor": {"canaryTrafficPercent": 0}}
    isvc = standard_isvc(("challenger", 20))
    promoted = canary.promote(isvc)
    patch = canary.merge_patch(isvc, promoted)
    assert patch["spec"]["canary"] is None and "metadata" not in patch
    assert canary.apply_merge_patch(isvc, patch)["spec"] == promoted["spec"]


# ------------------------------------------------------------ analysis

def stats(version, requests=1000, errors=0, p99=0.020, buckets=None):
    return canary.VersionStats(version, requests, errors, p99,
                               buckets if buckets is not None else {"0.1": 800, "0.5": 950, "1": 1000, "+Inf": 1000})


def test_decide_waits_for_traffic():
    d = canary.decide(stats("2", requests=50), stats("1"))
    assert d.action == "wait" and "50 < 200" in d.reasons[0]


def test_decide_promotes_healthy_canary():
    d = canary.decide(stats("2", errors=2, p99=0.021), stats("1", errors=1))
    assert d.action == "promote"
    assert d.evidence["canary"]["error_rate"] == pytest.approx(0.002)
    assert d.evidence["score_psi"] == pytest.approx(0.0)


def test_decide_rolls_back_on_errors():
    d = canary.decide(stats("2", errors=50), stats("1", errors=1))
    assert d.action == "rollback" and "error rate 0.0500" in d.reasons[0]


def test_decide_tolerates_errors_the_champion_also_has():
    assert canary.decide(stats("2", errors=30), stats("1", errors=28)).action == "promote"


def test_decide_rolls_back_on_latency():
    d = canary.decide(stats("2", p99=0.080), stats("1", p99=0.020))
    assert d.action == "rollback" and "p99 80.0 ms vs champion 20.0 ms" in d.reasons[0]


def test_decide_rolls_back_on_score_shift():
    shifted = {"0.1": 300, "0.5": 600, "1": 1000, "+Inf": 1000}
    d = canary.decide(stats("2", buckets=shifted), stats("1"))
    assert d.action == "rollback" and "PSI" in d.reasons[0]
    assert d.evidence["score_psi"] > 0.2


def test_psi_rejects_mismatched_buckets():
    with pytest.raises(InvalidInputError, match="different buckets"):
        canary.score_psi({"0.5": 1, "+Inf": 2}, {"0.1": 1, "+Inf": 2})


def test_missing_latency_data_does_not_block_promotion():
    assert canary.decide(stats("2", p99=None, buckets={}), stats("1", p99=None, buckets={})).action == "promote"



class FakeCustomObjects:
    """In-memory stand-in for kubernetes.client.CustomObjectsApi: applies merge patches with the version check."""

    def __init__(self, obj):
        self.obj = copy.deepcopy(obj)
        self.patches = []

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        assert (group, version, plural, name) == ("serving.kserve.io", "v1beta1", "inferenceservices", "fraud")
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.patches.append(body)
        assert body["metadata"]["resourceVersion"] == self.obj["metadata"]["resourceVersion"]
        self.obj = canary.apply_merge_patch(self.obj, body)
        self.obj["metadata"]["resourceVersion"] = str(int(self.obj["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(self.obj)


def test_apply_action_patches_through_the_api():
    api = FakeCustomObjects(knative_isvc())
    canary.apply_action("set", "fraud", "rtml", percent=30, api=api)
    assert api.obj["spec"]["predictor"]["canaryTrafficPercent"] == 30
    canary.apply_action("promote", "fraud", "rtml", api=api)
    assert "canaryTrafficPercent" not in api.obj["spec"]["predictor"]
    assert len(api.patches) == 2 and api.obj["metadata"]["resourceVersion"] == "44"
    with pytest.raises(InvalidInputError, match="set needs --percent"):
        canary.apply_action("set", "fraud", "rtml", api=api)


@pytest.mark.parametrize("model,version,window,bad", [
    ("fraud-detector", '1"} or vector(1) #', "10m", "model version"),
    ("fraud\\detector", "1", "10m", "model"),
    ("fraud-detector", "", "10m", "model version"),
    ("fraud-detector", "1", "10 minutes", "window"),
    ("fraud-detector", "1", "m", "window"),
])
def test_query_inputs_are_checked_before_any_query(model, version, window, bad):
    # No Prometheus at this address: the check must fail first, with a 400 naming the field.
    with pytest.raises(InvalidInputError, match=f"^{bad} "):
        canary.version_stats("http://127.0.0.1:9", model, version, window)


@pytest.mark.parametrize("window", ["30s", "10m", "1h30m", "500ms", "2d"])
def test_promql_durations_are_accepted(window):
    canary._check_query_inputs("fraud-detector", "2.1+build", window)


def test_apply_needs_the_inference_service():
    with pytest.raises(InvalidInputError, match="name and namespace"):
        canary.run_analysis("http://127.0.0.1:9", "fraud-detector", "2", "1", apply=True)


def test_nan_and_empty_results_mean_no_data():
    assert canary._scalar([]) is None
    assert canary._scalar([{"value": [0, "NaN"]}]) is None
    assert canary._scalar([{"value": [0, "12.5"]}]) == 12.5
