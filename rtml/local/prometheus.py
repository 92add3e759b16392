"""A real Prometheus server (the Debian ``prometheus`` binary) on a loopback port, scraping given targets."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx

from rtml.local.processes import free_port, read_tail, stop_pid, wait_for_port, write_pidfile


def scrape_config(targets: dict[str, list[str]], interval_s: float = 1.0) -> str:
    """prometheus.yml with one job per entry of ``targets`` (job name -> ``host:port`` list), all at ``interval_s``."""
    interval = f"{int(interval_s * 1000)}ms"
    lines = ["global:", f"  scrape_interval: {interval}", f"  evaluation_interval: {interval}", "scrape_configs:"]
    for job, addresses in targets.items():
        lines += [f"  - job_name: {job!r}", "    metrics_path: /metrics", "    static_configs:",
                  f"      - targets: [{', '.join(repr(a) for a in addresses)}]"]
    return "\n".join(lines) + "\n"


class LocalPrometheus:
    """``prometheus`` with a generated config, its TSDB in ``data_dir``; ``url`` is the HTTP API base."""

    def __init__(self, data_dir: Path, targets: dict[str, list[str]], port: int | None = None, interval_s: float = 1.0):
        self.data_dir = Path(data_dir)
        self.targets = targets
        self.interval_s = interval_s
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30) -> "LocalPrometheus":
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed: run scripts/install-system-deps.sh (apt-get install prometheus)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.data_dir / "prometheus.pid"
        stop_pid(pid_file)
        config = self.data_dir / "prometheus.yml"
        config.write_text(scrape_config(self.targets, self.interval_s))
        log = self.data_dir / "prometheus.log"
        cmd = [binary, f"--config.file={config}", f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
               f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1d"]
        self.proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        write_pidfile(pid_file, self.proc.pid)
        if not (wait_for_port("127.0.0.1", self.port, timeout_s, self.proc) and self._ready(timeout_s)):
            self.stop()
            raise RuntimeError(f"prometheus did not become ready on port {self.port}; log {log}:\n{read_tail(log)}")
        return self

    def _ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return False

    def wait_for_scrapes(self, n: int = 2, timeout_s: float = 30) -> None:
        """Block until every target has been scraped successfully ``n`` more times (so new samples are stored)."""
        def healthy_scrapes() -> dict[str, str]:
            body = httpx.get(f"{self.url}/api/v1/targets", timeout=2.0).json()
            return {t["scrapeUrl"]: t["lastScrape"] for t in body["data"]["activeTargets"] if t["health"] == "up"}

        expected = sum(len(a) for a in self.targets.values())
        seen: dict[str, set[str]] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for url, last in healthy_scrapes().items():
                seen.setdefault(url, set()).add(last)
            if len(seen) == expected and all(len(s) > n for s in seen.values()):
                return
            time.sleep(self.interval_s / 4)
        raise TimeoutError(f"targets not scraped {n} times in {timeout_s}s: {seen}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.data_dir / "prometheus.pid", self.proc)
            self.proc = None
