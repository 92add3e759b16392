"""Streaming feature engine benchmark: rtml's engine against a plain Feast ``store.push`` consumer.

    .venv/bin/python -m benchmarks.streaming [--events 200000] [--phase-seconds 12]

Starts its own Kafka broker (``rtml.local.kafka.LocalKafka``) and Feast stores (SQLite online,
parquet offline) in a temporary directory, replays the fraud simulator's stream and measures:

(a) throughput: every event is produced first, then one engine process is timed from its first
    poll that returns records until everything is committed (online, offline, offsets);
(b) feature freshness: Kafka record timestamp to the online write that covers the record, for
    every record (exact per-write values, not histogram buckets), with a rate-limited producer at
    50 % and 90 % of the measured rate, and at the issue's 5,000 events/s. The producer is Kafka's
    Java client in its own JVM (``benchmarks.loadgen``): kafka-python's took 0.6 of the machine's two
    cores at 5,000 records/s away from the engine measured, the JVM takes ~0.2;
(c) memory: RSS growth of window state for ``--memory-entities`` entities at the simulator's
    density (customers ~2 transactions/day over 30 days, terminals ~1/day over 37 days),
    measured in a fresh process and scaled to a million entities.

Baseline, same run, same events: a plain kafka-python loop that per poll (one micro-batch)
decodes and computes features with the same engine, then calls Feast's
``store.push(<view>_push, df, to=PushMode.ONLINE_AND_OFFLINE)`` with the batch's per-event feature
rows. Only the write path differs. Prints a table and writes ``benchmarks/results/streaming.json``
(one entry per online store: ``--online sqlite``, the default, or ``--online redis``).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import pandas as pd

from feature_repo.sources import SOURCES
from feature_repo.store import apply_definitions
from benchmarks.loadgen import JavaRateProducer
from rtml.local.kafka import LocalKafka
from rtml.local.redis import LocalRedis
from rtml.simulator import generate_transactions, to_events
from rtml_common.kafka import make_consumer, make_producer
from streaming.engine import FeatureEngine
from streaming.process import tune_interpreter
from streaming.runner import StreamRunner
from streaming.settings import StreamingSettings
from streaming.validation import InvalidEvent, decoder_for
from streaming.windows import DAY_S, windows_implementation

RESULTS = Path(__file__).parent / "results" / "streaming.json"
TOPIC_SOURCE = {s.topic: s for s in SOURCES}


# -- helpers ----------------------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    a = np.asarray(values) * 1000.0
    return {"n": int(a.size), "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p99_ms": round(float(np.percentile(a, 99)), 1), "max_ms": round(float(a.max()), 1)}


def encoded(events) -> list[tuple[str, bytes, bytes]]:
    return [(e.topic, e.key, orjson.dumps(e.value)) for e in events]


def send_all(settings, records) -> None:
    """Produce pre-encoded records as fast as kafka-python goes (before a throughput run)."""
    producer = make_producer(settings, linger_ms=2)
    for topic, key, value in records:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def start_producer(settings, records, rate: float) -> JavaRateProducer:
    """The rate-limited load generator of a freshness phase, connected and waiting for ``go()``."""
    return JavaRateProducer(settings.kafka_bootstrap, records, rate)


def start_phase(settings, records, rate: float, broker_pid: int) -> tuple[JavaRateProducer, "CpuShare"]:
    """Start a rate-limited phase: the load generator sending and the CPU accounting running."""
    producer = start_producer(settings, records, rate)
    # The phase's records were just built in this process: collected now, they are old objects the
    # engine's young-generation collections need not scan (a 50,000-record list cost a 50-200 ms pause).
    gc.collect()
    cpu = CpuShare(broker_pid)
    producer.go()
    return producer, cpu


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """Cores each party kept busy during a rate-limited phase: the engine (or baseline), broker and producer."""

    def __init__(self, broker_pid: int) -> None:
        self.broker_pid = broker_pid
        self.t0, self.own0, self.broker0 = time.monotonic(), cpu_seconds(), process_cpu_seconds(broker_pid)

    def result(self, producer: JavaRateProducer) -> dict:
        wall = time.monotonic() - self.t0
        return {"engine": round((cpu_seconds() - self.own0) / wall, 2),
                "broker": round((process_cpu_seconds(self.broker_pid) - self.broker0) / wall, 2),
                "producer": round(producer.cpu_seconds / wall, 2), "machine_cores": os.cpu_count()}


def start_broker(root: Path) -> LocalKafka:
    for attempt in range(3):  # a random cluster id that starts with '-' makes the storage tool fail: retry
        try:
            return LocalKafka(root / f"kafka-{attempt}", partitions=4).start()
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def machine() -> dict:
    t = time.perf_counter()
    sum(range(10**6))
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "sum_range_1e6_ms": round((time.perf_counter() - t) * 1000, 1), "windows": windows_implementation().name}


# -- (c) memory ------------------------------------------------------------------------------
def _memory_probe(n_entities: int, queue) -> None:
    rng = np.random.default_rng(0)
    engine = FeatureEngine()
    cust, term = engine.state["customer_spending"], engine.state["terminal_risk"]
    new_state = engine.windows.state  # the implementation the engine runs
    gc.collect()
    before = rss_bytes()
    event_id = 10_000_000
    half = n_entities // 2
    for entity in range(half):  # a customer: ~2 transactions a day over its 30-day horizon
        st = cust[entity] = new_state()
        times = np.sort(rng.uniform(0, 30 * DAY_S, 60)).tolist()
        for ts, amount in zip(times, rng.uniform(5, 200, 60).round(2).tolist()):
            st.add_event(event_id, ts, amount)
            event_id += 1
    for entity in range(n_entities - half):  # a terminal: ~1 a day over 37 days, a few labelled
        st = term[entity] = new_state()
        for ts in np.sort(rng.uniform(0, 37 * DAY_S, 37)).tolist():
            st.add_event(event_id, ts, 0.0)
            if event_id % 64 == 0:
                st.add_label(event_id, ts, 1.0)
            event_id += 1
    gc.collect()
    grown = rss_bytes() - before
    queue.put({"entities": n_entities, "events_in_state": event_id - 10_000_000, "rss_delta_mb": round(grown / 2**20, 1),
               "bytes_per_entity": round(grown / n_entities), "mb_per_million_entities": round(grown / n_entities * 1e6 / 2**20, 1)})


def measure_memory(n_entities: int) -> dict:
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing else in its heap
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_probe, args=(n_entities, queue))
    proc.start()
    result = queue.get(timeout=600)
    proc.join(timeout=60)
    return result


# -- rtml engine -----------------------------------------------------------------------------
class Freshness:
    """Collects exact per-record freshness from the runner's write listener while a phase is on."""

    def __init__(self) -> None:
        self.values: list[float] | None = None

    def __call__(self, done_at: float, stamps: list[int]) -> None:
        if self.values is not None:
            self.values.extend(done_at - ts / 1000.0 for ts in stamps)


def rtml_throughput(runner: StreamRunner, total: int, timeout_s: float) -> dict:
    t_first = cpu_first = None
    deadline = time.monotonic() + timeout_s
    while (runner.stats.consumed < total or not runner.caught_up_with_own_forwards) and time.monotonic() < deadline:
        t0, c0 = time.perf_counter(), cpu_seconds()
        if runner.step() and t_first is None:
            t_first, cpu_first = t0, c0
    runner.commit()
    elapsed, cpu = time.perf_counter() - t_first, cpu_seconds() - cpu_first
    consumed = runner.stats.consumed
    return {"events": consumed, "seconds": round(elapsed, 2), "events_per_s": round(consumed / elapsed),
            "cpu_seconds": round(cpu, 2), "events_per_cpu_s": round(consumed / cpu),
            "online_rows": runner.stats.online_rows, "complete": consumed >= total}


def drive(step, until_consumed, producer: JavaRateProducer, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while (producer.is_alive() or not until_consumed()) and time.monotonic() < deadline:
        step()


def rtml_freshness(runner: StreamRunner, fresh: Freshness, settings, records, rate: float, broker_pid: int) -> dict:
    target = runner.stats.consumed + len(records)
    fresh.values = []
    producer, cpu = start_phase(settings, records, rate, broker_pid)
    drive(runner.step, lambda: runner.stats.consumed >= target and runner.caught_up_with_own_forwards, producer,
          len(records) / rate + 30)
    runner.commit()
    values, fresh.values = fresh.values, None
    producer.join(timeout=10)
    return {"rate": round(rate), "events": len(records), **percentiles(values), "cpu_cores": cpu.result(producer)}


# -- baseline: a plain consumer loop pushing each micro-batch through Feast ------------------
def baseline_store(settings):
    """The repo's Feast objects with Feast's own offline push layout: one parquet file per view."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from feast import FeatureView

    from feature_repo.definitions import build_definitions
    from feature_repo.store import open_store

    # Feast's file (dask) store appends a push to the view's file; the DuckDB store has no append.
    settings = settings.model_copy(update={"offline_store_type": "file"})
    objects = build_definitions(settings.offline_path)
    settings.offline_path.mkdir(parents=True, exist_ok=True)
    for view in (o for o in objects if isinstance(o, FeatureView)):
        path = settings.offline_path / f"{view.name}.parquet"
        view.batch_source.file_options.uri = str(path)
        view.stream_source.batch_source.file_options.uri = str(path)
        # Feast appends to the existing file and takes its column order from it: seed an empty one.
        cols = [(f.name, pa.int64() if "_nb_tx_" in f.name else pa.float64()) for f in view.features]
        pq.write_table(pa.schema(cols + [(view.entity_columns[0].name, pa.int64()),
                                         ("event_timestamp", pa.timestamp("us", tz="UTC"))]).empty_table(), path)
    store = open_store(settings)
    store.apply(objects)
    return store


class PushBaseline:
    """Poll, decode, compute (the same engine), ``store.push`` every view's rows, commit: one micro-batch at a time."""

    def __init__(self, settings, group: str, store, listener: Freshness, offset_reset: str = "earliest"):
        from feast.data_source import PushMode

        self.mode = PushMode.ONLINE_AND_OFFLINE
        self.settings, self.store, self.listener = settings, store, listener
        self.engine = FeatureEngine()
        self.consumer = make_consumer(settings, list(TOPIC_SOURCE), group, max_poll_records=settings.max_batch_records,
                                      check_crcs=settings.check_crcs, auto_offset_reset=offset_reset)
        self.consumed = 0

    def step(self) -> int:
        polled = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_batch_records)
        rows: dict[str, list] = {}
        stamps = []
        for tp, records in polled.items():
            source = TOPIC_SOURCE[tp.topic]
            decode = decoder_for(source)
            for rec in records:
                stamps.append(rec.timestamp)
                try:
                    event = decode(rec.value)
                except InvalidEvent:
                    continue
                if event is not None:
                    self.engine.apply(source.name, event, rows)
        for agg in self.engine.aggregations:
            batch = rows.get(agg.feature_view)
            if batch:
                df = self.engine.offline_frame(batch)
                df["event_timestamp"] = pd.to_datetime(df["event_timestamp"], unit="s", utc=True)
                self.store.push(f"{agg.feature_view}_push", df, to=self.mode)
        for dirty in self.engine._dirty.values():
            dirty.clear()  # the baseline writes per-event rows, not the coalesced latest ones
        if stamps:
            self.consumer.commit()
            self.listener(time.time(), stamps)
        self.consumed += len(stamps)
        return len(stamps)

    def position_at_end(self) -> None:
        while not self.consumer.assignment():
            self.consumer.poll(timeout_ms=100)
        self.consumer.seek_to_end()
        for tp in self.consumer.assignment():
            self.consumer.position(tp)

    def close(self) -> None:
        self.consumer.close()


def baseline_throughput(base: PushBaseline, limit_s: float) -> dict:
    t_first = cpu_first = None
    while True:
        t0, c0 = time.perf_counter(), cpu_seconds()
        if base.step() and t_first is None:
            t_first, cpu_first = t0, c0
        if t_first is not None and time.perf_counter() - t_first > limit_s:
            break
    elapsed, cpu = time.perf_counter() - t_first, cpu_seconds() - cpu_first
    return {"events": base.consumed, "seconds": round(elapsed, 2), "events_per_s": round(base.consumed / elapsed),
            "cpu_seconds": round(cpu, 2), "events_per_cpu_s": round(base.consumed / cpu), "complete": False,
            "note": f"time-limited to {limit_s:.0f}s of the same stream"}


def baseline_freshness(base: PushBaseline, fresh: Freshness, settings, records, rate: float, broker_pid: int) -> dict:
    base.position_at_end()
    target = base.consumed + len(records)
    fresh.values = []
    producer, cpu = start_phase(settings, records, rate, broker_pid)
    drive(base.step, lambda: base.consumed >= target, producer, len(records) / rate + 30)
    values, fresh.values = fresh.values, None
    producer.join(timeout=10)
    return {"rate": round(rate), "events": len(records), **percentiles(values), "cpu_cores": cpu.result(producer)}


# -- main ------------------------------------------------------------------------------------
def table(result: dict) -> str:
    lines = ["| system | events/s (1 process) | events per CPU-s | freshness p50 / p99 at 50% | at 90% | at 5,000/s | "
             "state MB per 1M entities |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name in ("rtml", "baseline"):
        r = result[name]
        cells = []
        for key in ("at_50pct", "at_90pct", "at_5000"):
            f = r.get("freshness", {}).get(key)
            cells.append(f"{f['p50_ms']:.0f} / {f['p99_ms']:.0f} ms ({f['rate']}/s)" if f and f["n"] else "-")
        mem = result["memory"]["mb_per_million_entities"] if name == "rtml" else "-"
        label = "rtml streaming engine" if name == "rtml" else "plain consumer + store.push"
        t = r["throughput"]
        lines.append(f"| {label} | {t['events_per_s']:,} | {t['events_per_cpu_s']:,} | {cells[0]} | {cells[1]} | {cells[2]} | {mem} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events produced for the throughput run")
    parser.add_argument("--phase-seconds", type=float, default=12.0, help="length of each rate-limited freshness run")
    parser.add_argument("--baseline-seconds", type=float, default=30.0, help="time limit of the baseline throughput run")
    parser.add_argument("--memory-entities", type=int, default=200_000, help="entities in the memory probe")
    parser.add_argument("--online", choices=("sqlite", "redis"), default="sqlite",
                        help="Feast online store of both systems (redis: a local redis-server)")
    parser.add_argument("--no-repartition", action="store_true",
                        help="single-process topology: terminal windows straight from the transactions topic")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    run_key = args.online + ("-single" if args.no_repartition else "")
    started = time.monotonic()
    result: dict = {"machine": machine(), "online_store": args.online, "settings": {}, "rtml": {"freshness": {}}, "baseline": {"freshness": {}}}
    print("memory probe ...", flush=True)
    result["memory"] = measure_memory(args.memory_entities)

    root = Path(tempfile.mkdtemp(prefix="rtml-bench-streaming-"))
    broker = start_broker(root)
    redis = LocalRedis(root / "redis").start() if args.online == "redis" else None
    try:
        settings = StreamingSettings(home=root / "rtml", kafka_bootstrap=broker.bootstrap, metrics_port=0, restore=False,
                                     group_id=f"bench-{uuid.uuid4().hex[:6]}", repartition=not args.no_repartition,
                                     redis_connection=redis.connection if redis else None)
        result["settings"] = {k: v for k, v in settings.model_dump().items()
                              if k in ("max_batch_records", "online_flush_s", "online_write_share", "offline_flush_s",
                                       "offline_flush_rows", "check_crcs", "partitions", "repartition", "online_writer")}
        store = apply_definitions(settings)
        fresh = Freshness()
        runner = StreamRunner(settings, store=store, write_listener=fresh)
        tune_interpreter(settings)  # as `python -m streaming` does: this process is the engine's
        df = generate_transactions(n_customers=5000, n_terminals=10000, n_days=120, seed=7)
        stream = to_events(df)
        records = encoded(itertools.islice(stream, args.events))
        print(f"producing {len(records):,} events ...", flush=True)
        t0 = time.perf_counter()
        send_all(settings, records)
        result["produce_events_per_s"] = round(len(records) / (time.perf_counter() - t0))

        print("(a) rtml throughput ...", flush=True)
        result["rtml"]["throughput"] = tp = rtml_throughput(runner, len(records), timeout_s=600)
        print(f"    {tp['events_per_s']:,} events/s", flush=True)
        rate = tp["events_per_s"]
        for key, r in (("at_50pct", 0.5 * rate), ("at_90pct", 0.9 * rate), ("at_5000", 5000.0)):
            print(f"(b) rtml freshness at {r:,.0f} events/s ...", flush=True)
            batch = encoded(itertools.islice(stream, int(r * args.phase_seconds)))
            result["rtml"]["freshness"][key] = rtml_freshness(runner, fresh, settings, batch, r, broker.proc.pid)
        runner.close()

        print("baseline throughput ...", flush=True)
        base_settings = settings.model_copy(update={"home": root / "baseline"})
        base = PushBaseline(base_settings, f"bench-base-{uuid.uuid4().hex[:6]}", baseline_store(base_settings), fresh)
        result["baseline"]["throughput"] = btp = baseline_throughput(base, args.baseline_seconds)
        print(f"    {btp['events_per_s']:,} events/s", flush=True)
        brate = 0.5 * btp["events_per_s"]
        print(f"baseline freshness at {brate:,.0f} events/s ...", flush=True)
        batch = encoded(itertools.islice(stream, int(brate * args.phase_seconds)))
        result["baseline"]["freshness"]["at_50pct"] = baseline_freshness(base, fresh, base_settings, batch, brate, broker.proc.pid)
        base.close()
    finally:
        broker.stop()
        if redis is not None:
            redis.stop()
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    print()
    print(table(result))
    print("\ncores kept busy during the rate-limited phases (engine / broker / producer, of "
          f"{os.cpu_count()}):")
    for name in ("rtml", "baseline"):
        for key, f in result[name]["freshness"].items():
            c = f["cpu_cores"]
            print(f"  {name:8} {key:9} {f['rate']:>6,}/s: {c['engine']:.2f} / {c['broker']:.2f} / {c['producer']:.2f}")
    print(f"\nmemory: {result['memory']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs = runs if isinstance(runs, dict) and set(runs) <= {"sqlite", "redis", "sqlite-single", "redis-single"} else {}
    runs[run_key] = result  # one entry per online store and topology, the others kept from their last run
    args.out.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"wrote {args.out} ({result['wall_seconds']} s)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
