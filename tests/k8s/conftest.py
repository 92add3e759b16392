"""Fixtures for the Kubernetes packaging tests: go-installed tools, offline schemas, cached renders."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from rtml import k8s_tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "rtml"
MANIFESTS = ROOT / "manifests"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE, NAMESPACE, KUBE_VERSION = "rtml", "rtml", "1.34.4"


@pytest.fixture(scope="session")
def tools() -> dict[str, Path]:
    """helm, kubeconform, kustomize (installed with `go install` on first use) and the schema folder."""
    if not k8s_tools.go_available():
        pytest.skip("`go` is not on PATH: helm/kubeconform/kustomize are installed with `go install`")
    paths = dict(k8s_tools.ensure_tools())
    paths["schemas"] = k8s_tools.ensure_schemas()
    return paths


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    """Run a tool; the caller checks returncode (stderr is kept for assertion messages)."""
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)


class Renderer:
    """`helm template` / `kustomize build` with a per-session cache (each render costs ~0.3 s)."""

    def __init__(self, tools):
        self.tools = tools
        self._cache: dict = {}

    def helm(self, *args: str) -> list[dict]:
        if args not in self._cache:
            proc = run([self.tools["helm"], "template", RELEASE, CHART, "--namespace", NAMESPACE,
                        "--kube-version", KUBE_VERSION, *args])
            assert proc.returncode == 0, proc.stderr
            self._cache[args] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return self._cache[args]

    def helm_error(self, *args: str) -> str:
        proc = run([self.tools["helm"], "template", RELEASE, CHART, "--namespace", NAMESPACE,
                    "--kube-version", KUBE_VERSION, *args])
        assert proc.returncode != 0, "render was expected to fail"
        return proc.stderr

    def kustomize(self, path: Path) -> list[dict]:
        key = ("kustomize", str(path))
        if key not in self._cache:
            proc = run([self.tools["kustomize"], "build", path])
            assert proc.returncode == 0, proc.stderr
            self._cache[key] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return self._cache[key]


@pytest.fixture(scope="session")
def render(tools) -> Renderer:
    return Renderer(tools)


def by_key(docs: list[dict]) -> dict[tuple[str, str], dict]:
    """Index objects by (kind, name)."""
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def pod_specs(docs: list[dict]):
    """Yield (where, pod spec) for every workload, InferenceService components and canaries included."""
    for d in docs:
        where = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield where, d["spec"]["template"]["spec"]
        elif d["kind"] == "InferenceService":
            for component in ("predictor", "transformer", "explainer"):
                if component in d["spec"]:
                    yield f"{where}/{component}", d["spec"][component]
            for entry in d["spec"].get("canary") or []:
                yield f"{where}/canary/{entry['predictor']['name']}", entry["predictor"]
