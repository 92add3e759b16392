"""helm lint, strict kubeconform on every ci values file, and what the chart promises to render."""

from __future__ import annotations

import json

import pytest

from .conftest import CHART, CI_VALUES, by_key, pod_specs, run
from rtml import k8s_tools

pytestmark = pytest.mark.k8s
CI_IDS = [p.stem for p in CI_VALUES]


def kubeconform(tools, docs_yaml: str) -> dict:
    proc = run([tools["kubeconform"], *k8s_tools.kubeconform_args(tools["schemas"]), "-"], input=docs_yaml)
    summary = json.loads(proc.stdout)
    return {"rc": proc.returncode, **summary}


def test_ci_values_cover_the_modes():
    assert {"default-values", "standard-canary-values", "external-stores-values", "minimal-values"} <= set(CI_IDS)


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_helm_lint_strict(tools, values):
    proc = run([tools["helm"], "lint", "--strict", CHART, "-f", values, "--kube-version", "1.34.4"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_render_is_valid_against_core_and_crd_schemas(tools, values):
    proc = run([tools["helm"], "template", "rtml", CHART, "-n", "rtml", "--kube-version", "1.34.4", "-f", values])
    assert proc.returncode == 0, proc.stderr
    result = kubeconform(tools, proc.stdout)
    assert result["rc"] == 0, json.dumps(result["resources"], indent=1)
    assert result["summary"]["invalid"] == 0 and result["summary"]["errors"] == 0
    # Nothing skipped: every kind, core or CRD, had a schema.
    assert result["summary"]["skipped"] == 0
    assert result["summary"]["valid"] == proc.stdout.count("\nkind: ") + proc.stdout.startswith("kind: ")


def test_kubeconform_schemas_are_strict(tools):
    bad = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i, imagePolicy: Always}]
---
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: y}
spec:
  predictor: {canaryTrafficPercent: 10, scaleMetrik: rps}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: z}
spec:
  scaleTargetRef: {name: d}
  triggers: [{type: kafka, metadata: {}}]
  maxReplicas: 3
"""
    result = kubeconform(tools, bad)
    assert result["summary"]["invalid"] == 3, result


def test_values_schema_rejects_unknown_and_bad_values(render):
    assert "additional properties" in render.helm_error("--set", "kafka.replicaz=3").lower()
    assert "deploymentMode" in render.helm_error("--set", "serving.deploymentMode=Serverless")
    assert "trafficPercent" in render.helm_error("--set", "serving.canary.trafficPercent=120")


def test_streaming_replicas_cannot_exceed_partitions(render):
    err = render.helm_error("--set", "kafka.partitions=2", "--set", "streaming.replicas=3",
                            "--set", "streaming.autoscaling.maxReplicas=2")
    assert "streaming.replicas (3) must not exceed kafka.partitions (2)" in err
    err = render.helm_error("--set", "kafka.partitions=2", "--set", "streaming.replicas=1")
    assert "maxReplicas (6) must not exceed kafka.partitions (2)" in err


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_security_defaults_on_every_pod(render, values):
    specs = list(pod_specs(render.helm("-f", str(values))))
    assert len(specs) >= 3
    for where, spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["runAsUser"] != 0, where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert "resources" in c and c["resources"]["requests"], (where, c["name"])


@pytest.mark.parametrize("values", CI_VALUES, ids=CI_IDS)
def test_secrets_only_by_reference(render, values):
    docs = render.helm("-f", str(values))
    assert not [d for d in docs if d["kind"] == "Secret"]
    for where, spec in pod_specs(docs):
        for c in spec["containers"]:
            for env in c.get("env", []):
                if any(w in env["name"].upper() for w in ("PASSWORD", "SECRET", "TOKEN")):
                    assert "valueFrom" in env and "secretKeyRef" in env["valueFrom"], (where, env)


def test_kafka_kraft_statefulset(render):
    docs = by_key(render.helm("--set", "kafka.replicas=5", "--set", "kafka.replicationFactor=3"))
    sts = docs[("StatefulSet", "rtml-kafka")]
    assert sts["spec"]["replicas"] == 5 and sts["spec"]["serviceName"] == "rtml-kafka-headless"
    env = {e["name"]: e for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"]["value"].split(",")
    assert [v.split("@")[0] for v in voters] == ["0", "1", "2", "3", "4"]
    assert voters[4] == "4@rtml-kafka-4.rtml-kafka-headless.rtml.svc.cluster.local:9093"
    assert env["KAFKA_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["KAFKA_PROCESS_ROLES"]["value"] == "broker,controller"
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert docs[("Service", "rtml-kafka-headless")]["spec"]["clusterIP"] == "None"
    assert docs[("PodDisruptionBudget", "rtml-kafka")]["spec"]["maxUnavailable"] == 1
    assert "cannot exceed kafka.replicas" in render.helm_error("--set", "kafka.replicas=1")


def test_topics_job_creates_every_topic_and_its_dlq(render):
    job = by_key(render.helm())[("Job", "rtml-kafka-topics")]
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TOPICS"].split() == ["transactions", "transactions.dlq", "fraud-labels", "fraud-labels.dlq",
                                     "predictions", "predictions.dlq", "rtml-transactions-by-terminal_id"]
    assert env["PARTITIONS"] == "6" and env["REPLICATION_FACTOR"] == "3"
    # kafka-topics.sh needs an integer; Helm would print a large number as 3.456e+09 unless converted.
    assert env["RETENTION_MS"] == str(40 * 86400 * 1000)


def test_streaming_autoscaling_keda_and_hpa_fallback(render):
    keda = by_key(render.helm())[("ScaledObject", "rtml-streaming")]
    trigger = keda["spec"]["triggers"][0]
    assert trigger["type"] == "kafka" and trigger["metadata"]["consumerGroup"] == "rtml-feature-engine"
    assert keda["spec"]["maxReplicaCount"] <= 6
    hpa_docs = by_key(render.helm("--set", "streaming.autoscaling.mode=hpa"))
    assert ("ScaledObject", "rtml-streaming") not in hpa_docs
    assert hpa_docs[("HorizontalPodAutoscaler", "rtml-streaming")]["spec"]["maxReplicas"] == 6
    assert "use mode=hpa" in render.helm_error("--set", "kafka.security.protocol=SSL")


def test_knative_inferenceservice(render):
    isvc = by_key(render.helm())[("InferenceService", "fraud")]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Knative"
    pred, trans = isvc["spec"]["predictor"], isvc["spec"]["transformer"]
    assert "canaryTrafficPercent" not in pred and "canary" not in isvc["spec"]
    assert (pred["minReplicas"], pred["maxReplicas"], pred["scaleMetric"], pred["scaleTarget"]) == (1, 4, "concurrency", 8)
    assert trans["containers"][0]["args"][:4] == ["--role", "transformer", "--predictor_protocol", "v2"]
    canary = by_key(render.helm("--set", "serving.canary.enabled=true"))[("InferenceService", "fraud")]
    assert canary["spec"]["predictor"]["canaryTrafficPercent"] == 10
    env = {e["name"]: e["value"] for e in canary["spec"]["predictor"]["containers"][0]["env"]}
    assert env["STORAGE_URI"] == "pvc://rtml-models/fraud/2" and env["RTML_STORAGE_URI"] == "/mnt/models"
    assert canary["metadata"]["labels"]["rtml.io/model-version"] == "2"


def test_standard_mode_canary_and_httproute(render):
    docs = by_key(render.helm("-f", str(CHART / "ci" / "standard-canary-values.yaml")))
    isvc = docs[("InferenceService", "fraud")]
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Standard"
    assert isvc["spec"]["predictor"]["name"] == "champion"
    [entry] = isvc["spec"]["canary"]
    assert entry["trafficPercent"] == 20 and entry["predictor"]["name"] == "challenger"
    assert not set(entry["predictor"]) & {"minReplicas", "maxReplicas", "scaleMetric", "scaleTarget"}
    ports = {p["name"]: p["containerPort"] for p in isvc["spec"]["predictor"]["containers"][0]["ports"]}
    assert ports == {"http": 8080, "grpc": 8081}
    weights = [b["weight"] for b in docs[("HTTPRoute", "fraud")]["spec"]["rules"][1]["backendRefs"]]
    assert weights == [80, 20]


def test_monitoring_objects(render):
    docs = by_key(render.helm())
    rules = docs[("PrometheusRule", "rtml")]["spec"]["groups"]
    alerts = {r["alert"] for g in rules for r in g["rules"] if "alert" in r}
    assert alerts == {"RtmlConsumerLagHigh", "RtmlFeaturesStale", "RtmlInferenceErrorRateHigh", "RtmlInferenceLatencyHigh"}
    dashboard = json.loads(docs[("ConfigMap", "rtml-dashboard")]["data"]["rtml-overview.json"])
    assert dashboard["uid"] == "rtml-overview" and len(dashboard["panels"]) >= 5
    assert docs[("PodMonitor", "rtml-inference")]["spec"]["selector"]["matchLabels"] == {
        "serving.kserve.io/inferenceservice": "fraud"}


def test_pipeline_rbac_can_patch_inferenceservices(render):
    docs = by_key(render.helm())
    rule = docs[("Role", "rtml-pipeline-runner-inferenceservices")]["rules"][0]
    assert rule["resources"] == ["inferenceservices"] and "patch" in rule["verbs"]
    binding = docs[("RoleBinding", "rtml-pipeline-runner-inferenceservices")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "rtml-pipeline-runner", "namespace": "rtml"}]
    assert docs[("Job", "rtml-kfp-upload")]["spec"]["template"]["spec"]["serviceAccountName"] == "rtml-pipeline-runner"


def test_network_policies_deny_by_default(render):
    docs = by_key(render.helm())
    deny = docs[("NetworkPolicy", "rtml-default-deny")]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    redis = docs[("NetworkPolicy", "rtml-redis-clients")]["spec"]
    assert redis["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 6379}]
    assert not by_key(render.helm("--set", "networkPolicy.enabled=false")).keys() & {("NetworkPolicy", "rtml-default-deny")}


def test_external_stores_with_sasl_tls(render):
    docs = render.helm("-f", str(CHART / "ci" / "external-stores-values.yaml"))
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert not {k for k in kinds if k[0] == "StatefulSet"}
    stream = by_key(docs)[("Deployment", "rtml-streaming")]["spec"]["template"]["spec"]
    env = {e["name"]: e for e in stream["containers"][0]["env"]}
    assert env["RTML_REDIS_CONNECTION"]["value"] == "rtml.cache.example.com:6379,password=$(RTML_REDIS_PASSWORD)"
    assert list(env).index("RTML_REDIS_PASSWORD") < list(env).index("RTML_REDIS_CONNECTION")
    assert env["RTML_GROUP_ID"]["value"] == "rtml-feature-engine"
    assert env["RTML_KAFKA_BOOTSTRAP"]["value"].startswith("b-1.kafka.example.com:9096")
    assert env["RTML_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["RTML_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "rtml-kafka-sasl"
    assert {"name": "kafka-tls", "secret": {"secretName": "rtml-kafka-ca"}} in stream["volumes"]
