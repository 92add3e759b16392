"""A real Apache Kafka broker (KRaft, single node) started from the Maven Central jars.

The jars are resolved once with Maven (``kafka-pom.xml`` beside this file) into
``~/.cache/rtml/kafka-<version>/libs`` and reused. Kafka 4.x needs log4j2 bindings on the
classpath (declared in the pom) and ``--standalone`` storage formatting for a single
KRaft controller.
"""

from __future__ import annotations

import base64
import fcntl
import logging
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from rtml.local.processes import free_port, read_tail, stop_pid, wait_for_port, write_pidfile

log = logging.getLogger(__name__)

KAFKA_VERSION = os.environ.get("RTML_KAFKA_VERSION", "4.1.1")
HERE = Path(__file__).parent


def cache_dir() -> Path:
    return Path(os.environ.get("RTML_CACHE", Path.home() / ".cache" / "rtml"))


def resolve_jars(version: str = KAFKA_VERSION, timeout_s: float = 900) -> Path:
    """Directory holding the broker's jars; downloads them through Maven on first use."""
    libs = cache_dir() / f"kafka-{version}" / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test workers or demos download once
        if marker.exists():
            return libs
        if shutil.which("mvn") is None:
            raise RuntimeError("Maven (mvn) is needed to fetch the Kafka jars: apt-get install -y maven")
        shutil.rmtree(libs, ignore_errors=True)
        cmd = ["mvn", "-q", "-B", "-f", str(HERE / "kafka-pom.xml"), "dependency:copy-dependencies",
               f"-DoutputDirectory={libs}", f"-Dkafka.version={version}"]
        log.info("resolving Kafka %s jars from Maven Central into %s", version, libs)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if proc.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
            raise RuntimeError(f"mvn failed to resolve Kafka {version} (exit {proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
        marker.touch()
    return libs


class LocalKafka:
    """One KRaft broker+controller on loopback ports, with its data in ``data_dir``.

    Use as a context manager or call ``start()``/``stop()``. ``bootstrap`` is the
    address clients use.
    """

    def __init__(self, data_dir: Path, port: int | None = None, controller_port: int | None = None,
                 partitions: int = 1, heap: str = "512m", version: str = KAFKA_VERSION):
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.partitions = partitions
        self.heap = heap
        self.version = version
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "kafka.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    def _properties(self) -> str:
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data_dir / 'logs'}",
            f"num.partitions={self.partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "",
        ])

    def start(self, timeout_s: float = 90) -> "LocalKafka":
        libs = resolve_jars(self.version)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        stop_pid(self.pid_file)  # a stale broker from an earlier run holds the data dir
        props = self.data_dir / "server.properties"
        props.write_text(self._properties())
        java = [shutil.which("java") or "java", f"-Xmx{self.heap}", f"-Xms{self.heap}",
                f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}", "-cp", f"{libs}/*"]
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            fmt = subprocess.run(java + ["kafka.tools.StorageTool", "format", "--standalone", f"--cluster-id={cluster_id}", "-c", str(props)],
                                 capture_output=True, text=True, timeout=120)
            if fmt.returncode != 0:
                raise RuntimeError(f"Kafka storage format failed:\n{fmt.stdout[-2000:]}{fmt.stderr[-2000:]}")
        with open(self.log_file, "ab") as out:
            self.proc = subprocess.Popen(java + ["kafka.Kafka", str(props)], stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        write_pidfile(self.pid_file, self.proc.pid)
        if not wait_for_port("127.0.0.1", self.port, timeout_s, self.proc):
            tail = read_tail(self.log_file)
            self.stop()
            raise RuntimeError(f"Kafka did not open port {self.port} within {timeout_s:.0f}s; log {self.log_file}:\n{tail}")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.pid_file, self.proc)
            self.proc = None

    def __enter__(self) -> "LocalKafka":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
