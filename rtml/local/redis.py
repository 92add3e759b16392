"""A real Redis server (the Debian ``redis-server`` binary) on a loopback port, for the Feast online store."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from rtml.local.processes import free_port, read_tail, stop_pid, wait_for_port, write_pidfile


class LocalRedis:
    """``redis-server`` with no persistence, its files in ``data_dir``; ``connection`` is Feast's connection string."""

    def __init__(self, data_dir: Path, port: int | None = None):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def connection(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20) -> "LocalRedis":
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run scripts/install-system-deps.sh (apt-get install redis-server)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        pid_file = self.data_dir / "redis.pid"
        stop_pid(pid_file)
        log = self.data_dir / "redis.log"
        cmd = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(self.data_dir), "--logfile", str(log)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        write_pidfile(pid_file, self.proc.pid)
        if not wait_for_port("127.0.0.1", self.port, timeout_s, self.proc):
            self.stop()
            raise RuntimeError(f"redis-server did not open port {self.port}; log {log}:\n{read_tail(log)}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.data_dir / "redis.pid", self.proc)
            self.proc = None
