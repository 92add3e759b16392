"""The prediction log: every scored transaction produced to Kafka, off the request path.

The request path only puts a tuple of arrays on a bounded queue; a daemon thread builds the
JSON records and hands them to the kafka-python producer. A missing or failing broker never
fails or slows a request: records are dropped and counted instead.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time

import numpy as np

from feature_repo.model_inputs import MODEL_INPUTS
from inference import metrics
from rtml_common.kafka import make_producer
from rtml_common.settings import KafkaSettings

log = logging.getLogger(__name__)


def prediction_records(
    model_name: str,
    model_version: str,
    request_id: str,
    cols: dict[str, np.ndarray],
    x: np.ndarray,
    probs: np.ndarray,
    flags: np.ndarray,
    with_features: bool = True,
) -> list[dict]:
    """One JSON-ready record per row: the request, the model input vector (``with_features``) and the decision."""
    now = time.time()
    records = []
    for i in range(len(probs)):
        record = {
            "request_id": request_id,
            "model_name": model_name,
            "model_version": model_version,
            "customer_id": int(cols["customer_id"][i]),
            "terminal_id": int(cols["terminal_id"][i]),
            "tx_amount": float(cols["tx_amount"][i]),
            "tx_datetime": int(cols["tx_datetime"][i]),
            "fraud_probability": float(probs[i]),
            "is_fraud": bool(flags[i]),
            "scored_at": now,
        }
        if with_features:
            record["features"] = dict(zip(MODEL_INPUTS, x[i].tolist()))
        records.append(record)
    return records


class PredictionLog:
    """Bounded queue plus producer thread; ``publish`` never blocks."""

    def __init__(self, settings: KafkaSettings, topic: str, capacity: int = 10000):
        self._settings = settings
        self._topic = topic
        self._queue: queue.Queue = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._stopped = threading.Event()
        self._thread.start()

    def publish(self, *item) -> None:
        """Queue the arguments of ``prediction_records`` for one request."""
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            metrics.PREDICTION_LOG_DROPPED.inc(len(item[5]))

    def close(self, timeout_s: float = 5.0) -> None:
        """Flush what is queued (bounded by ``timeout_s``) and stop."""
        self._stopped.set()
        self._thread.join(timeout_s)

    def _connect(self):
        while not self._stopped.is_set():
            try:
                # max_block_ms bounds send() when the broker is gone, so the queue keeps draining.
                return make_producer(self._settings, linger_ms=20, max_block_ms=1000)
            except Exception as e:  # broker not up yet: keep serving, retry quietly
                log.warning("prediction log: Kafka not reachable (%s); retrying", e)
                self._drain_dropping()
                self._stopped.wait(5.0)
        return None

    def _drain_dropping(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            metrics.PREDICTION_LOG_DROPPED.inc(len(item[5]))

    def _run(self) -> None:
        producer = self._connect()
        if producer is None:
            return
        while not (self._stopped.is_set() and self._queue.empty()):
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            for record in prediction_records(*item):
                try:
                    producer.send(self._topic, key=str(record["customer_id"]).encode(), value=json.dumps(record).encode())
                except Exception:
                    metrics.PREDICTION_LOG_DROPPED.inc()
        producer.flush(timeout=5)
        producer.close(timeout=5)
