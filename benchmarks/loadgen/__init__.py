"""The benchmarks' rate-limited load generator: Kafka's Java producer in its own JVM (``RateProducer.java``).

The machine the benchmarks run on has two cores shared by the broker, the load generator and the
system measured. kafka-python's producer spent ~120 us of CPU a record (0.6 of a core at 5,000
records/s), which the engine under test had to share; Kafka's own Java producer (the one
``kafka-producer-perf-test`` uses) spends a few. Same records, keys, partitioner (murmur2 of the
key, as kafka-python's default) and CreateTime timestamps taken at send.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from rtml.local.kafka import resolve_jars

SOURCE = Path(__file__).with_name("RateProducer.java")


def _field(data: bytes | None) -> bytes:
    return struct.pack(">i", -1) if data is None else struct.pack(">i", len(data)) + data


def write_records(path: Path, records: list[tuple[str, bytes | None, bytes]]) -> None:
    """Write ``(topic, key, value)`` records in RateProducer's file layout."""
    with open(path, "wb") as f:
        for topic, key, value in records:
            f.write(_field(topic.encode()) + _field(key) + _field(value))


class JavaRateProducer:
    """Sends ``records`` at ``rate`` per second from a JVM; started (JVM up, connected) by the constructor.

    ``go()`` starts sending; ``is_alive()`` and ``join()`` as for a process; ``cpu_seconds`` is
    the CPU the JVM used while sending (after ``join``).
    """

    def __init__(self, bootstrap: str, records: list[tuple[str, bytes | None, bytes]], rate: float, timeout_s: float = 120):
        if shutil.which("java") is None:
            raise RuntimeError("java (JDK 17) is needed by the load generator")
        self._dir = Path(tempfile.mkdtemp(prefix="rtml-loadgen-"))
        data = self._dir / "records.bin"
        write_records(data, records)
        classpath = f"{resolve_jars()}/*"
        self.proc = subprocess.Popen(
            # A small heap, serial GC and the C1 compiler only: the JVM's own threads stay off the engine's cores.
            ["java", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-cp", classpath, str(SOURCE),
             bootstrap, str(data), str(rate)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.cpu_seconds = 0.0
        self.sent = 0
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"load generator did not start: {line!r} {self.proc.stderr.read()[-2000:]}")

    def go(self) -> "JavaRateProducer":
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        return self

    def is_alive(self) -> bool:
        return self.proc.poll() is None

    def join(self, timeout: float | None = None) -> None:
        out, err = self.proc.communicate(timeout=timeout)
        done = [line for line in out.splitlines() if line.startswith("done ")]
        if self.proc.returncode != 0 or not done:
            raise RuntimeError(f"load generator failed (exit {self.proc.returncode}): {err[-2000:]}")
        _, sent, cpu = done[-1].split()
        self.sent, self.cpu_seconds = int(sent), float(cpu)
        shutil.rmtree(self._dir, ignore_errors=True)
