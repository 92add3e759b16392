"""``make demo``: the whole real-time flow on one machine, then a summary.

Kafka (real KRaft broker) -> simulated transactions and delayed fraud labels -> streaming
feature engine -> Feast online store + offline log -> KFP training pipeline (kfp.local) ->
model registry -> KServe V2 model server -> live predictions while events keep streaming.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import httpx
import numpy as np
import pandas as pd

from feature_repo.aggregations import AGGREGATIONS
from feature_repo.sources import SOURCES
from rtml.local.stack import LocalStack, stop_stale, wait_until_consumed
from streaming.topology import build_topology
from rtml.settings import RuntimeSettings
from rtml_common.kafka import ensure_topics, dlq_topic

TOPICS = ["transactions", "fraud-labels"]


@dataclass(frozen=True)
class DemoConfig:
    customers: int = 1000
    terminals: int = 2000
    days: int = 60
    live_days: int = 2
    start: str = "2018-06-01"
    radius: float = 5.0
    live_seconds: float = 20.0
    live_rate: float = 100.0
    seed: int = 0


def _say(msg: str) -> None:
    print(f"[rtml demo] {msg}", flush=True)


def _fresh_home(settings: RuntimeSettings) -> None:
    """Each demo starts from empty stores (caches such as the Kafka jars live elsewhere)."""
    for name in ("kafka", "offline", "online.db", "registry.db", "registry", "pipeline", "logs"):
        path = settings.home / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _scrape(url: str) -> dict[str, float]:
    """Prometheus text format into {sample name with labels: value} (enough for a summary)."""
    out: dict[str, float] = {}
    try:
        text = httpx.get(url, timeout=5).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def _histogram_quantile(samples: dict[str, float], metric: str, q: float) -> float | None:
    buckets = sorted(((float(k.split('le="')[1].split('"')[0]), v) for k, v in samples.items()
                      if k.startswith(metric + "_bucket")), key=lambda b: b[0])
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    finite = [le for le, _ in buckets if le != float("inf")]
    for le, count in buckets:
        if count >= target:
            # Past the largest finite bucket all Prometheus can say is "more than" it.
            return le if le != float("inf") else f"> {finite[-1] if finite else 0}"
    return None


def run_demo(settings: RuntimeSettings, cfg: DemoConfig = DemoConfig()) -> dict:
    from feature_repo.store import apply_definitions
    from pipelines.run import run_local
    from rtml import simulator

    t_start = time.monotonic()
    stale = stop_stale(settings)
    if stale:
        _say(f"stopped processes left by an earlier run: {', '.join(stale)}")
    _fresh_home(settings)
    summary: dict = {"ok": False}
    with LocalStack(settings) as stack:
        bootstrap = stack.start_kafka()
        _say(f"Kafka (KRaft) on {bootstrap}" + (f", log {stack.kafka.log_file}" if stack.kafka else " (existing cluster)"))
        kafka = settings.model_copy(update={"kafka_bootstrap": bootstrap})
        ensure_topics(kafka, TOPICS + [dlq_topic(t) for t in TOPICS] + ["predictions"], partitions=4)
        apply_definitions(settings)
        stack.start_engine()
        _say("streaming feature engine started (consumer group rtml-feature-engine)")

        # 1. history: simulate, split into what has happened and what streams live later
        df = simulator.generate_transactions(cfg.customers, cfg.terminals, cfg.days, cfg.start, radius=cfg.radius, seed=cfg.seed)
        live_from = pd.Timestamp(cfg.start, tz="UTC") + pd.Timedelta(days=cfg.days - cfg.live_days)
        history, live = df[df["TX_DATETIME"] < live_from], df[df["TX_DATETIME"] >= live_from]
        t0 = time.monotonic()
        n_events = simulator.produce_events(kafka, simulator.to_events(history))
        # Two malformed events show the dead-letter path working.
        from rtml_common.kafka import make_producer

        producer = make_producer(kafka)
        producer.send(kafka.topic("transactions"), b"{not json")
        producer.send(kafka.topic("transactions"), json.dumps({"transaction_id": 1, "tx_amount": "12.5"}).encode())
        producer.close()  # flushes; an open client would keep refreshing metadata after the broker stops
        _say(f"produced {n_events} events ({len(history)} transactions, {int(history['TX_FRAUD'].sum())} frauds) in {time.monotonic() - t0:.1f}s")
        # Every topic the engine reads, its repartition topic included: terminal features come from there.
        engine_topics = list(build_topology(SOURCES, AGGREGATIONS, kafka.topic))
        if not wait_until_consumed(kafka, "rtml-feature-engine", engine_topics, timeout_s=600):
            raise RuntimeError(f"the streaming engine did not catch up; see {settings.home / 'logs' / 'streaming.log'}")
        ingest_s = time.monotonic() - t0
        _say(f"features for all events are in Feast after {ingest_s:.1f}s ({n_events / ingest_s:,.0f} events/s end to end)")

        # 2. training pipeline (kfp.local): point-in-time dataset, torch, evaluate, register, gate
        train_start = (pd.Timestamp(cfg.start) + pd.Timedelta(days=37)).strftime("%Y-%m-%d")
        t0 = time.monotonic()
        result = run_local(home=settings.home, offline_dir=settings.offline_path, registry_dir=settings.registry_path,
                           train_start=train_start, model_name=settings.model_name)
        train_s = time.monotonic() - t0
        model_dir = settings.registry_path / settings.model_name / str(result["version"])
        metrics = result.get("metrics", {}).get("candidate")
        _say(f"trained and registered {settings.model_name} v{result['version']} in {train_s:.1f}s; test metrics {metrics}")
        if result.get("table"):
            print(result["table"], flush=True)

        # 3. serving: KServe model server (transformer + predictor) on V2 REST and gRPC
        stack.start_server(str(model_dir))
        _say(f"model server on http://127.0.0.1:{settings.http_port} (V2 REST) and :{settings.grpc_port} (V2 gRPC)")

        # 4. live: stream new transactions while scoring them
        live_stats = _live(settings, kafka, simulator, live, cfg)
        engine = _scrape(f"http://127.0.0.1:{settings.engine_metrics_port}/metrics")
        summary = {
            "ok": live_stats["errors"] == 0 and live_stats["predictions"] > 0,
            "events_ingested": int(sum(v for k, v in engine.items() if k.startswith("rtml_stream_events_consumed_total"))),
            "events_dead_lettered": int(sum(v for k, v in engine.items() if k.startswith("rtml_stream_events_dead_lettered_total"))),
            "ingest_events_per_s": round(n_events / ingest_s),
            "feature_freshness_p50_s_le": _histogram_quantile(engine, "rtml_stream_feature_freshness_seconds", 0.5),
            "feature_freshness_p99_s_le": _histogram_quantile(engine, "rtml_stream_feature_freshness_seconds", 0.99),
            "model": {"name": settings.model_name, "version": result.get("version"), "metrics": metrics,
                      "decision": (result.get("decision") or {}).get("action"),
                      "train_seconds": round(train_s, 1)},
            "predictions": live_stats,
            "artifacts": {
                "model": str(model_dir),
                "registry": str(settings.registry_path),
                "online_store": str(settings.home / "online.db"),
                "offline_log": str(settings.offline_path),
                "pipeline_run": result.get("run_dir"),
                "evaluation_report": next((v for k, v in result.get("artifacts", {}).items() if "report" in k), None),
                "compiled_pipelines": "pipelines/compiled/",
                "logs": str(settings.home / "logs"),
            },
            "total_seconds": round(time.monotonic() - t_start, 1),
        }
    _print_summary(summary)
    (settings.home / "demo-summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _live(settings: RuntimeSettings, kafka, simulator, live: pd.DataFrame, cfg: DemoConfig) -> dict:
    """Produce live transactions to Kafka and score each one over V2 REST at the same rate."""
    n = min(len(live), int(cfg.live_seconds * cfg.live_rate))
    live = live.iloc[:n]
    producer_thread = threading.Thread(
        target=simulator.produce_events, args=(kafka, simulator.to_events(live)), kwargs={"rate": cfg.live_rate}, daemon=True)
    producer_thread.start()
    url = f"http://127.0.0.1:{settings.http_port}/v2/models/{settings.model_name}/infer"
    latencies, errors, flagged, frauds_caught = [], 0, 0, 0
    interval = 1.0 / cfg.live_rate
    next_at = time.perf_counter()
    with httpx.Client(timeout=10) as client:
        for row in live.itertuples(index=False):
            body = {"id": str(row.TRANSACTION_ID), "inputs": [
                {"name": "customer_id", "datatype": "INT64", "shape": [1], "data": [int(row.CUSTOMER_ID)]},
                {"name": "terminal_id", "datatype": "INT64", "shape": [1], "data": [int(row.TERMINAL_ID)]},
                {"name": "tx_amount", "datatype": "FP64", "shape": [1], "data": [float(row.TX_AMOUNT)]},
                {"name": "tx_datetime", "datatype": "INT64", "shape": [1], "data": [int(row.TX_DATETIME.timestamp())]},
            ]}
            t0 = time.perf_counter()
            resp = client.post(url, json=body)
            latencies.append(time.perf_counter() - t0)
            if resp.status_code != 200:
                errors += 1
                continue
            outputs = {o["name"]: o["data"] for o in resp.json()["outputs"]}
            if outputs["is_fraud"][0]:
                flagged += 1
                frauds_caught += int(row.TX_FRAUD)
            next_at += interval
            time.sleep(max(0.0, next_at - time.perf_counter()))
    producer_thread.join(timeout=60)
    lat_ms = np.array(latencies) * 1000
    return {
        "predictions": len(latencies), "errors": errors, "flagged": flagged, "flagged_true_frauds": frauds_caught,
        "true_frauds": int(live["TX_FRAUD"].sum()),
        "latency_ms_p50": round(float(np.percentile(lat_ms, 50)), 2) if len(lat_ms) else None,
        "latency_ms_p99": round(float(np.percentile(lat_ms, 99)), 2) if len(lat_ms) else None,
    }


def _print_summary(s: dict) -> None:
    p = s.get("predictions", {})
    m = s.get("model", {})
    lines = [
        "",
        "=== rtml demo summary ===",
        f"events ingested          {s.get('events_ingested')} ({s.get('events_dead_lettered')} dead-lettered), {s.get('ingest_events_per_s')} events/s end to end",
        f"feature freshness        p50 within {s.get('feature_freshness_p50_s_le')} s, p99 within {s.get('feature_freshness_p99_s_le')} s (Kafka timestamp to online write)",
        f"model                    {m.get('name')} v{m.get('version')}, trained in {m.get('train_seconds')} s",
        f"model metrics (test)     {m.get('metrics')}",
        f"live predictions         {p.get('predictions')} over V2 REST, {p.get('errors')} errors, p50 {p.get('latency_ms_p50')} ms, p99 {p.get('latency_ms_p99')} ms",
        f"flagged as fraud         {p.get('flagged')} ({p.get('flagged_true_frauds')} of {p.get('true_frauds')} true frauds)",
        "artifacts:",
    ] + [f"  {k:<22} {v}" for k, v in s.get("artifacts", {}).items()] + [
        f"total                    {s.get('total_seconds')} s   -> {'OK' if s.get('ok') else 'FAILED'}",
    ]
    print("\n".join(lines), flush=True)
