"""A real control plane: etcd + kube-apiserver + controller-manager + scheduler (built from the Go module
proxy) with KWOK fake nodes; `helm install` the chart, wait for every workload, drive `rtml canary`.

The first run builds the binaries into ~/.cache/rtml/k8s (about 15 minutes on 2 cores); later runs
start the cluster in seconds. Set RTML_SKIP_CONTROL_PLANE=1 to skip.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from .conftest import CHART, ROOT, run
from rtml import k8s_tools
from rtml.local.processes import free_port

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(3600),
              # the throwaway apiserver has a self-signed certificate
              pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
              pytest.mark.skipif(os.environ.get("RTML_SKIP_CONTROL_PLANE") == "1", reason="RTML_SKIP_CONTROL_PLANE=1")]
NS = "rtml"




def wait_until(check, what: str, timeout: float = 120.0, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the component is still starting
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last})")


def _rsa_key(path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))


class ControlPlane:
    """Processes of a single-node-less cluster; nodes are KWOK fakes."""

    def __init__(self, work: Path, bins: dict[str, Path]):
        self.work, self.bins, self.procs = work, bins, []
        self.token = secrets.token_hex(16)
        self.api_port = free_port()
        self.kubeconfig = work / "kubeconfig"

    def _start(self, name: str, args: list) -> None:
        log = open(self.work / f"{name}.log", "w")
        self.procs.append((name, subprocess.Popen([str(self.bins[name]), *map(str, args)], stdout=log,
                                                  stderr=subprocess.STDOUT)))

    def log_tail(self, name: str, n: int = 3000) -> str:
        return (self.work / f"{name}.log").read_text()[-n:]

    def start(self) -> None:
        w = self.work
        _rsa_key(w / "sa.key")
        (w / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        client, peer = free_port(), free_port()
        self._start("etcd", ["--name", "rtml", "--data-dir", w / "etcd",
                             "--listen-client-urls", f"http://127.0.0.1:{client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"rtml=http://127.0.0.1:{peer}"])
        self._start("kube-apiserver", [
            "--etcd-servers", f"http://127.0.0.1:{client}", "--bind-address", "127.0.0.1",
            "--advertise-address", "127.0.0.1", "--secure-port", self.api_port, "--cert-dir", w / "certs",
            "--token-auth-file", w / "tokens.csv", "--authorization-mode", "Node,RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", w / "sa.key", "--service-account-signing-key-file", w / "sa.key",
            "--service-cluster-ip-range", "10.96.0.0/16", "--allow-privileged=false"])
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "rtml",
            "clusters": [{"name": "rtml", "cluster": {"server": f"https://127.0.0.1:{self.api_port}",
                                                      "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "rtml", "context": {"cluster": "rtml", "user": "admin"}}]}))
        wait_until(self._readyz, "kube-apiserver /readyz", 120)
        self._start("kube-controller-manager", [
            "--kubeconfig", self.kubeconfig, "--authentication-kubeconfig", self.kubeconfig,
            "--authorization-kubeconfig", self.kubeconfig, "--leader-elect=false", "--secure-port", free_port(),
            "--service-account-private-key-file", w / "sa.key", "--root-ca-file", w / "certs" / "apiserver.crt",
            "--use-service-account-credentials=false", "--controllers", "*"])
        self._start("kube-scheduler", [
            "--kubeconfig", self.kubeconfig, "--authentication-kubeconfig", self.kubeconfig,
            "--authorization-kubeconfig", self.kubeconfig, "--leader-elect=false", "--secure-port", free_port()])
        self._start("kwok", ["--kubeconfig", self.kubeconfig, "--manage-all-nodes=false",
                             "--manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake",
                             "--server-address", f"127.0.0.1:{free_port()}"])

    def _readyz(self) -> bool:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        req = urllib.request.Request(f"https://127.0.0.1:{self.api_port}/readyz",
                                     headers={"Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
            return resp.status == 200

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            proc.terminate()
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _seed(api_client) -> None:
    """CRDs, a fake node, the namespace, the one Secret the chart expects, and PVs for its claims."""
    from kubernetes import client

    ext = client.ApiextensionsV1Api(api_client)
    for crd_file in sorted(k8s_tools.crds_dir().rglob("*.yaml")):
        for doc in yaml.load_all(crd_file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                # Gateway API CRDs need their api-approved annotation; drop the rest of upstream's metadata.
                doc["metadata"] = {k: v for k, v in doc["metadata"].items() if k in ("name", "annotations")}
                ext.create_custom_resource_definition(doc)
    names = [c.metadata.name for c in ext.list_custom_resource_definition().items]
    wait_until(lambda: all(any(c.type == "Established" and c.status == "True"
                               for c in ext.read_custom_resource_definition(n).status.conditions or []) for n in names),
               "CRDs to be Established", 60)
    core = client.CoreV1Api(api_client)
    core.create_node({"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": "kwok-node-0", "annotations": {"kwok.x-k8s.io/node": "fake"},
        "labels": {"type": "kwok", "kubernetes.io/hostname": "kwok-node-0"}},
        "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                   "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}}})
    core.create_namespace({"metadata": {"name": NS}})
    core.create_namespaced_secret(NS, {"metadata": {"name": "rtml-postgresql"},
                                       "stringData": {"password": secrets.token_hex(8)}})
    for i in range(8):
        core.create_persistent_volume({"metadata": {"name": f"pv-{i}"}, "spec": {
            "capacity": {"storage": "20Gi"}, "accessModes": ["ReadWriteOnce", "ReadWriteMany"],
            "hostPath": {"path": f"/tmp/pv-{i}"}, "persistentVolumeReclaimPolicy": "Retain"}})


@pytest.fixture(scope="module")
def cluster(tools, tmp_path_factory):
    try:
        bins = k8s_tools.ensure_control_plane()
    except k8s_tools.ToolError as exc:
        pytest.fail(f"control plane build failed: {exc}")
    from kubernetes import client, config

    cp = ControlPlane(tmp_path_factory.mktemp("control-plane"), bins)
    try:
        cp.start()
        api_client = config.new_client_from_config(str(cp.kubeconfig))
        wait_until(lambda: client.CoreV1Api(api_client).read_namespaced_service_account("default", "default"),
                   "controller-manager (default ServiceAccount)", 120)
        _seed(api_client)
        wait_until(lambda: any(c.type == "Ready" and c.status == "True" for c in
                               client.CoreV1Api(api_client).read_node("kwok-node-0").status.conditions or []),
                   "KWOK to mark the fake node Ready", 60)
        yield cp, api_client
    finally:
        cp.stop()


def test_helm_install_becomes_ready_and_canary_cli_drives_the_isvc(cluster, tools):
    from kubernetes import client

    cp, api_client = cluster
    env = {**os.environ, "KUBECONFIG": str(cp.kubeconfig)}
    proc = run([tools["helm"], "install", "rtml", CHART, "-n", NS, "-f", CHART / "ci" / "knative-canary-values.yaml",
                "--wait", "--wait-for-jobs", "--timeout", "5m"], env=env)
    assert proc.returncode == 0, proc.stderr + cp.log_tail("kube-scheduler") + cp.log_tail("kwok")

    apps = client.AppsV1Api(api_client)
    workloads = apps.list_namespaced_deployment(NS).items + apps.list_namespaced_stateful_set(NS).items
    assert {w.metadata.name for w in workloads} >= {"rtml-kafka", "rtml-redis", "rtml-postgresql", "rtml-streaming"}
    for w in workloads:
        assert (w.status.ready_replicas or 0) == w.spec.replicas, w.metadata.name
    jobs = client.BatchV1Api(api_client).list_namespaced_job(NS).items
    assert {j.metadata.name for j in jobs} == {"rtml-kafka-topics", "rtml-feast-apply", "rtml-kfp-upload"}
    assert all(j.status.succeeded == 1 for j in jobs)

    custom = client.CustomObjectsApi(api_client)

    def isvc() -> dict:
        return custom.get_namespaced_custom_object("serving.kserve.io", "v1beta1", NS, "inferenceservices", "fraud")

    assert isvc()["spec"]["predictor"]["canaryTrafficPercent"] == 10

    def cli(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "rtml.cli", "canary", *args, "--name", "fraud", "--namespace", NS],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        return json.loads(out.stdout)

    assert cli("status")["phase"] == "canary"
    assert cli("rollback")["phase"] == "rolled-back"
    assert isvc()["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert cli("set", "--percent", "50")["canary_percent"] == 50
    assert cli("promote")["phase"] == "stable"
    spec = isvc()["spec"]["predictor"]
    assert "canaryTrafficPercent" not in spec
    env_vars = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
    assert env_vars["STORAGE_URI"] == "pvc://rtml-models/fraud/2"  # the promoted model stays
