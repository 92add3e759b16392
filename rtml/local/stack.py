"""The local stack: Kafka, the streaming engine and the model server as local processes.

Every process started here records its pid under ``<home>/pids`` so that ``rtml stop`` (and
the next ``make demo``) can stop what a previous run left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from rtml.local.kafka import LocalKafka
from rtml.local.processes import free_port, read_tail, stop_pid, wait_for_port, write_pidfile
from rtml.settings import RuntimeSettings

REPO_ROOT = Path(__file__).resolve().parents[2]


class ManagedProcess:
    """A child process with a pid file and a log file."""

    def __init__(self, name: str, cmd: list[str], env: dict, settings: RuntimeSettings):
        self.name = name
        self.cmd = cmd
        self.env = env
        self.log_file = settings.home / "logs" / f"{name}.log"
        self.pid_file = settings.pids / f"{name}.pid"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "ManagedProcess":
        stop_pid(self.pid_file)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=REPO_ROOT)
        write_pidfile(self.pid_file, self.proc.pid)
        return self

    def wait_port(self, port: int, timeout_s: float = 120) -> None:
        if not wait_for_port("127.0.0.1", port, timeout_s, self.proc):
            raise RuntimeError(f"{self.name} did not open port {port} within {timeout_s:.0f}s; log {self.log_file}:\n{read_tail(self.log_file)}")

    def stop(self) -> None:
        stop_pid(self.pid_file, self.proc)
        self.proc = None


def child_env(settings: RuntimeSettings, bootstrap: str, **extra: str) -> dict:
    env = dict(os.environ)
    env.update({"RTML_HOME": str(settings.home), "RTML_KAFKA_BOOTSTRAP": bootstrap, "PYTHONUNBUFFERED": "1"})
    env.update({k: str(v) for k, v in extra.items()})
    return env


class LocalStack:
    """Starts and stops the stack's processes; a context manager that always cleans up."""

    def __init__(self, settings: RuntimeSettings):
        self.settings = settings
        self.kafka: LocalKafka | None = None
        self.processes: list[ManagedProcess] = []
        self.bootstrap = settings.kafka_bootstrap

    def start_kafka(self) -> str:
        if not self.bootstrap:
            self.kafka = LocalKafka(self.settings.home / "kafka", partitions=4).start()
            self.bootstrap = self.kafka.bootstrap
        return self.bootstrap

    def start_engine(self) -> ManagedProcess:
        port = self.settings.engine_metrics_port or free_port()
        proc = ManagedProcess("streaming", [sys.executable, "-m", "streaming"],
                              child_env(self.settings, self.bootstrap, RTML_METRICS_PORT=port), self.settings).start()
        proc.wait_port(port, 60)
        self.processes.append(proc)
        return proc

    def start_server(self, storage_uri: str, extra_args: list[str] | None = None, name: str = "model-server",
                     http_port: int | None = None, grpc_port: int | None = None) -> ManagedProcess:
        http_port = http_port or self.settings.http_port
        grpc_port = grpc_port or self.settings.grpc_port
        cmd = [sys.executable, "-m", "inference", "--role", "all", "--model-name", self.settings.model_name,
               "--storage-uri", storage_uri, "--http-port", str(http_port), "--grpc-port", str(grpc_port)] + (extra_args or [])
        proc = ManagedProcess(name, cmd, child_env(self.settings, self.bootstrap), self.settings).start()
        proc.wait_port(http_port, 180)
        self.processes.append(proc)
        return proc

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes.clear()
        if self.kafka is not None:
            self.kafka.stop()
            self.kafka = None

    def __enter__(self) -> "LocalStack":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_stale(settings: RuntimeSettings) -> list[str]:
    """Stop every process a previous run recorded (streaming, servers, the local broker)."""
    stopped = []
    for pid_file in list(settings.pids.glob("*.pid")) + [settings.home / "kafka" / "kafka.pid"]:
        if stop_pid(pid_file):
            stopped.append(pid_file.stem)
    return stopped


def wait_until_consumed(bootstrap_settings, group_id: str, topics: list[str], timeout_s: float = 300) -> bool:
    """True once the consumer group has committed every topic up to its end offsets."""
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(**bootstrap_settings.kafka_client_config())
    consumer = KafkaConsumer(**bootstrap_settings.kafka_client_config())
    try:
        deadline = time.monotonic() + timeout_s
        streak = 0
        while time.monotonic() < deadline:
            parts = [TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or [])]
            ends = consumer.end_offsets(parts)
            committed = admin.list_group_offsets(group_id).get(group_id, {})
            done = bool(parts) and all((committed.get(tp).offset if committed.get(tp) else 0) >= ends[tp] for tp in parts)
            # Twice in a row: a topic the group itself writes (a repartition topic) may grow between the reads.
            streak = streak + 1 if done else 0
            if streak >= 2:
                return True
            time.sleep(0.5)
        return False
    finally:
        consumer.close()
        admin.close()
