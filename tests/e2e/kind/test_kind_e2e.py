"""Runs tests/e2e/kind/run.sh where Docker and kind exist (a real KServe); skipped elsewhere."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.k8s
SCRIPT = Path(__file__).with_name("run.sh")
MISSING = [tool for tool in ("docker", "kind", "kubectl", "go") if shutil.which(tool) is None]


def _docker_engine_up() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


if not MISSING and not _docker_engine_up():
    MISSING.append("a running Docker engine")


@pytest.mark.skipif(bool(MISSING), reason=f"kind e2e needs {', '.join(MISSING)} on PATH")
@pytest.mark.timeout(3600)
def test_kind_cluster_serves_and_promotes():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.rstrip().endswith("e2e OK")
