"""Streaming feature engine benchmark: rtml's engine against a plain Feast ``store.push`` consumer.

    .venv/bin/python -m benchmarks.streaming [--online redis] [--events 200000] [--phase-seconds 12]

Starts its own Kafka broker (``rtml.local.kafka.LocalKafka``) and, with ``--online redis``, a
local redis-server (``rtml.local.redis.LocalRedis``); Feast's registry, SQLite online store and the
raw offline log live in a temporary directory. The engine computes no feature rows: it folds
events, de-duplicated by (id, event time), into per-entity 1-hour tiles and writes one packed
``tiles`` bytes value per changed entity (feature views ``customer_spending`` and
``terminal_risk``); the offline log gets the raw events. It replays the fraud simulator's stream
(``rtml.simulator``) and measures:

(a) throughput: every event is produced first, then one engine process (``StreamRunner`` in the
    scale-out topology: transactions are also re-keyed by terminal through the repartition topic)
    is timed from its first poll that returns records until everything is committed (online
    tiles, offline log, the state changelog's chunks when ``state_changelog`` is on, as by default,
    and offsets);
(b) feature freshness: Kafka record timestamp to the online write that covers the record, for
    every record (exact per-write values, not histogram buckets), with a rate-limited producer at
    50 % and 90 % of the measured rate, and at the issue's 5,000 events/s. The producer is Kafka's
    Java client in its own JVM (``benchmarks.loadgen``): kafka-python's took 0.6 of the machine's two
    cores at 5,000 records/s away from the engine measured, the JVM takes ~0.2;
(c) memory and online size: a fresh process feeds a synthetic stream at the simulator's density
    through ``FeatureEngine.apply`` (grace as the runner's settings): customers draw
    Poisson(U(0, 4)) transactions a day at noon-centred times, each at one of twice as many
    terminals (~1 a day each), 0.8 % of them frauds labelled 7 days later; draining the online
    values every ``max_batch_records`` events as the runner does, for long enough that every
    entity's state reached its bound (longest window + delay + grace). Reports the RSS growth of
    the engine's state (tiles and remembered (id, event time) pairs; the state changelog's set of
    changed chunks, emptied at every checkpoint, is not kept) scaled to a million entities (and
    ``sys.getsizeof`` of its objects, for comparison), and the size of the packed ``tiles`` value
    each entity last wrote (online bytes per entity, mean and max, per view);
(d) a read-back check of each system's online store: the ``tiles`` values of up to 500 entities per
    view read through Feast's ``get_online_features`` against the engine state's bytes (equal, or the
    state a suffix of them when a sweep pruned tiles beyond the horizon since the entity's last write).

Baseline, same run, same events: a plain kafka-python loop (single process, no repartition topic)
that per poll (one micro-batch) decodes the records with the same validation, folds them with the
same ``FeatureEngine`` (same tiles, same state, same online bytes), calls Feast's
``store.push(<view>_push, df, to=PushMode.ONLINE)`` with the packed tiles of the entities the batch
changed (the views' offline side is no longer used), writes the batch's raw events to the offline log
as parquet files (``streaming.offline.EpochOfflineLog``: the engine's layout, synchronously, per
batch) and commits. It keeps no state changelog (a restart would lose its tiles; rtml restores
them). With Redis it writes to database 1, so that Feast's keep-the-newer-timestamp
check never skips its writes because of rtml's rows. Prints a table and writes
``benchmarks/results/streaming.json`` (one entry per online store: ``--online sqlite``, the default,
or ``--online redis``; ``-single`` with ``--no-repartition``).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
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
from pydantic import SecretStr

from feature_repo.sources import SOURCES
from feature_repo.store import apply_definitions
from feature_repo.tiles import TILES_FEATURE
from benchmarks.loadgen import JavaRateProducer
from benchmarks.synthetic import DAY_S, SIM_START, day_transactions
from rtml.local.kafka import LocalKafka
from rtml.local.redis import LocalRedis
from rtml.simulator import DEFAULT_LABEL_DELAY, generate_transactions, to_events
from rtml_common.kafka import make_consumer, make_producer
from streaming.engine import EVENT_TIMESTAMP, FeatureEngine
from streaming.offline import EpochOfflineLog
from streaming.process import tune_interpreter
from streaming.runner import StreamRunner
from streaming.settings import StreamingSettings
from streaming.validation import InvalidEvent, decoder_for

RESULTS = Path(__file__).parent / "results" / "streaming.json"
TOPIC_SOURCE = {s.topic: s for s in SOURCES}
FRAUD_RATE = 0.008  # the handbook dataset's share of frauds (rtml.simulator.generate_transactions)


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


def phase_records(stream, rate: float, seconds: float) -> list[tuple[str, bytes, bytes]]:
    """The next ``rate * seconds`` events of the stream, encoded; says so when the stream ran short."""
    wanted = int(rate * seconds)
    records = encoded(itertools.islice(stream, wanted))
    if len(records) < wanted:
        print(f"    the simulated stream ran out: {len(records):,} of {wanted:,} events in this phase", flush=True)
    return records


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


def source_tree() -> dict:
    """The commit measured, and the engine's files that differ from it (the working tree is shared)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=Path(__file__).parent.parent, capture_output=True, text=True,
                                  timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    changed = git("status", "--porcelain", "--", "streaming", "feature_repo", "rtml_common")
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "uncommitted": [line.split()[-1] for line in changed.splitlines()]}


def machine() -> dict:
    t = time.perf_counter()
    sum(range(10**6))
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "sum_range_1e6_ms": round((time.perf_counter() - t) * 1000, 1), "tile_fold": "python (streaming.windows)",
            "source": source_tree()}


# -- (c) memory and online size -------------------------------------------------------------
def _day_events(rng, day: int, first_id: int, mean_nb, mean_amount, n_terminals: int, frauds: dict, label_days: int) -> list:
    """One simulated day in event-time order: ``(stream, event)`` with validated fields (epoch-second times).

    Transactions from ``benchmarks.synthetic.day_transactions``; frauds labelled ``label_days`` later
    (known then, so on time).
    """
    ids, t, cust, term, amount = day_transactions(rng, day, first_id, mean_nb, mean_amount, n_terminals)
    t = t.astype(np.float64)  # validated events carry epoch seconds as floats
    fraud = rng.random(len(cust)) < FRAUD_RATE
    frauds[day] = (ids[fraud], t[fraud], cust[fraud], term[fraud])
    events = [("transactions", {"transaction_id": i, "tx_datetime": ts, "customer_id": c, "terminal_id": te, "tx_amount": a})
              for i, ts, c, te, a in zip(ids.tolist(), t.tolist(), cust.tolist(), term.tolist(), amount.tolist())]
    times = [t]
    labelled = frauds.pop(day - label_days, None)
    if labelled is not None:
        lid, lt, lc, lte = labelled
        known = lt + label_days * DAY_S
        events += [("fraud_labels", {"transaction_id": i, "tx_datetime": ts, "customer_id": c, "terminal_id": te, "tx_fraud": 1,
                                     "label_datetime": k})
                   for i, ts, c, te, k in zip(lid.tolist(), lt.tolist(), lc.tolist(), lte.tolist(), known.tolist())]
        times.append(known)
    order = np.argsort(np.concatenate(times), kind="stable")
    return [events[i] for i in order.tolist()]




def _memory_probe(n_entities: int, grace_s: float, batch: int, queue) -> None:
    rng = np.random.default_rng(0)
    engine = FeatureEngine(grace_s=grace_s)  # the default streams: transactions feed both views, labels the terminals'
    n_customers = max(1, n_entities // 3)  # the simulator's 5,000 customers to 10,000 terminals
    n_terminals = max(1, n_entities - n_customers)
    label_days = round(DEFAULT_LABEL_DELAY.total_seconds() / DAY_S)
    # Long enough for every entity's state to reach its bound: tiles kept below the newest (windows, delay, grace).
    reach_s = max(engine.keep[v] * engine.layouts[v].tile_us for v in engine.keep) / 1e6
    n_days = math.ceil(reach_s / DAY_S) + 2
    mean_nb, mean_amount = rng.uniform(0, 4, n_customers), rng.uniform(5, 100, n_customers)
    population = {"customer_id": n_customers, "terminal_id": n_terminals}
    # Size of the value each entity last wrote, by view (filled now: its pages count before the baseline RSS).
    written = {a.feature_view: np.full(population[a.join_key], -1, dtype=np.int64) for a in engine.aggregations}
    frauds: dict = {}
    scratch: dict = {}
    counts = {"transactions": 0, "fraud_labels": 0}

    def drain() -> None:
        for view, rows in engine.drain_online_values().items():
            sizes = written[view]
            for entity_id, _, (blob,) in rows:
                sizes[entity_id] = len(blob)
        scratch.clear()  # raw rows: the offline log's buffer, not state

    gc.collect()
    before = rss_bytes()
    apply, next_id, pending = engine.apply, 0, 0
    t0 = time.perf_counter()
    for day in range(n_days):
        events = _day_events(rng, day, next_id, mean_nb, mean_amount, n_terminals, frauds, label_days)
        for stream, event in events:
            apply(stream, event, scratch)
            counts[stream] += 1
            pending += 1
            if pending >= batch:
                drain()
                pending = 0
        next_id += sum(1 for s, _ in events if s == "transactions")
        del events
    drain()
    fold_s = time.perf_counter() - t0
    frauds.clear()
    gc.collect()
    grown = rss_bytes() - before
    entities = engine.entity_count()
    objects = engine.state_bytes()
    online, all_sizes = {}, []
    for view, sizes in written.items():
        sizes = sizes[sizes >= 0]
        all_sizes.append(sizes)
        states = engine.state[view].values()
        online[view] = {"entities": int(sizes.size), "mean_bytes": round(float(sizes.mean())), "max_bytes": int(sizes.max()),
                        "tiles_per_entity": round(sum(len(st.keys) for st in states) / max(1, len(states)), 1),
                        "events_remembered_per_entity": round(sum(len(st.events) for st in states) / max(1, len(states)), 1)}
    sizes = np.concatenate(all_sizes)
    online["all"] = {"entities": int(sizes.size), "mean_bytes": round(float(sizes.mean())), "max_bytes": int(sizes.max())}
    queue.put({"entities": entities, "customers": len(engine.state["customer_spending"]), "terminals": len(engine.state["terminal_risk"]),
               "days": n_days, "transactions": counts["transactions"], "labels": counts["fraud_labels"], "grace_s": grace_s,
               "fold_seconds": round(fold_s, 1), "rss_delta_mb": round(grown / 2**20, 1), "bytes_per_entity": round(grown / entities),
               "mb_per_million_entities": round(grown / entities * 1e6 / 2**20, 1),
               "object_bytes_per_entity": round(objects / entities),
               "object_mb_per_million_entities": round(objects / entities * 1e6 / 2**20, 1),
               "online_bytes_per_entity": online})


def measure_memory(n_entities: int, grace_s: float, batch: int) -> dict:
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing else in its heap
    queue = ctx.Queue()
    proc = ctx.Process(target=_memory_probe, args=(n_entities, grace_s, batch, queue))
    proc.start()
    result = queue.get(timeout=900)
    proc.join(timeout=60)
    return result


# -- (d) read-back check of an online store ------------------------------------------------
def check_online(store, engine: FeatureEngine, sample: int = 500) -> dict:
    """The ``tiles`` of up to ``sample`` entities per view read through Feast, against the engine state's bytes.

    Called after a commit (every change written). ``matching``: stored bytes equal to the state's,
    or ending with the state's tiles (a sweep, ``FeatureEngine.prune``, dropped tiles beyond the
    horizon of an entity not written since); each value must also decode with the view's layout.
    """
    out = {}
    for agg in engine.aggregations:
        view, layout = agg.feature_view, engine.layouts[agg.feature_view]
        states = engine.state[view]
        ids = list(states)
        ids = ids[::max(1, len(ids) // sample)][:sample]
        if not ids:
            continue
        header = layout.encode({})
        got = store.get_online_features(features=[f"{view}:{TILES_FEATURE}"],
                                        entity_rows=[{agg.join_key: i} for i in ids]).to_dict()[TILES_FEATURE]
        matching = 0
        for i, blob in zip(ids, got):
            if blob:
                layout.decode(blob)  # raises on a foreign layout
                st = states[i]
                if blob == st.blob(header) or (blob.startswith(header) and blob.endswith(st.rows.tobytes())):
                    matching += 1
        sizes = [len(b) for b in got if b]
        out[view] = {"entities": len(ids), "found": len(sizes), "matching": matching,
                     "mean_bytes": round(sum(sizes) / len(sizes)) if sizes else None, "max_bytes": max(sizes, default=None)}
    return out


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
def baseline_settings(settings: StreamingSettings, root: Path) -> StreamingSettings:
    """The baseline's own home (registry, SQLite file, offline log); with Redis, database 1 of the same server."""
    update: dict = {"home": root / "baseline"}
    if settings.redis_connection is not None:
        update["redis_connection"] = SecretStr(settings.redis_connection.get_secret_value() + ",db=1")
    return settings.model_copy(update=update)


class PushBaseline:
    """Poll, decode, fold (the same engine), ``store.push`` the changed entities' tiles, log raw events, commit.

    One micro-batch (one poll) at a time, all on one thread: the plain way to feed Feast from Kafka.
    """

    def __init__(self, settings: StreamingSettings, group: str, store, listener: Freshness, offset_reset: str = "earliest"):
        from feast.data_source import PushMode

        self.mode = PushMode.ONLINE  # the views' offline side is unused: training reads the raw log
        self.settings, self.store, self.listener = settings, store, listener
        self.engine = FeatureEngine(grace_s=settings.grace_s)  # default streams: one process, no repartition topic
        self.join_keys = {a.feature_view: a.join_key for a in self.engine.aggregations}
        self.offline = EpochOfflineLog(settings.offline_path, self.engine.timestamp_columns)
        self.decoders = {topic: (source.name, decoder_for(source)) for topic, source in TOPIC_SOURCE.items()}
        self.consumer = make_consumer(settings, list(TOPIC_SOURCE), group, max_poll_records=settings.max_batch_records,
                                      check_crcs=settings.check_crcs, auto_offset_reset=offset_reset)
        self.consumed = 0
        self.online_rows = 0
        self.offline_rows = 0

    def step(self) -> int:
        polled = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms, max_records=self.settings.max_batch_records)
        apply, raw = self.engine.apply, self.offline.rows
        stamps = []
        for tp, records in polled.items():
            name, decode = self.decoders[tp.topic]
            for rec in records:
                stamps.append(rec.timestamp)
                try:
                    event = decode(rec.value)
                except InvalidEvent:
                    continue
                if event is not None:
                    apply(name, event, raw)
        for view, rows in self.engine.drain_online_values().items():
            ids, times, values = zip(*rows)
            df = pd.DataFrame({self.join_keys[view]: ids, TILES_FEATURE: [v[0] for v in values],
                               EVENT_TIMESTAMP: pd.to_datetime(np.asarray(times), unit="s", utc=True)})
            self.store.push(f"{view}_push", df, to=self.mode)
            self.online_rows += len(rows)
        self.offline_rows += self.offline.flush()
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
            "cpu_seconds": round(cpu, 2), "events_per_cpu_s": round(base.consumed / cpu), "online_rows": base.online_rows,
            "complete": False, "note": f"time-limited to {limit_s:.0f}s of the same stream"}


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
    """Both systems side by side. State and online bytes come from the memory probe: the baseline folds
    with the same ``FeatureEngine``, so it holds the same state and writes the same values."""
    lines = ["| system | events/s (1 process) | events per CPU-s | freshness p50 / p99 at 50% | at 90% | at 5,000/s | "
             "state MB per 1M entities | online bytes per entity, mean / max |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    mem = result["memory"]
    online = mem["online_bytes_per_entity"]["all"]
    for name in ("rtml", "baseline"):
        r = result[name]
        cells = []
        for key in ("at_50pct", "at_90pct", "at_5000"):
            f = r.get("freshness", {}).get(key)
            cells.append(f"{f['p50_ms']:,.0f} / {f['p99_ms']:,.0f} ms ({f['rate']:,}/s)" if f and f["n"] else "-")
        label = "rtml streaming engine" if name == "rtml" else "plain consumer + store.push"
        t = r["throughput"]
        lines.append(f"| {label} | {t['events_per_s']:,} | {t['events_per_cpu_s']:,} | {cells[0]} | {cells[1]} | {cells[2]} | "
                     f"{mem['mb_per_million_entities']:,} | {online['mean_bytes']:,} / {online['max_bytes']:,} |")
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
    root = Path(tempfile.mkdtemp(prefix="rtml-bench-streaming-"))
    defaults = StreamingSettings(home=root / "rtml", metrics_port=0)  # the runner's grace and batch size (RTML_ env included)
    print(f"(c) memory probe: {args.memory_entities:,} entities ...", flush=True)
    result["memory"] = measure_memory(args.memory_entities, defaults.grace_s, defaults.max_batch_records)
    print(f"    {result['memory']['mb_per_million_entities']:,} MB per 1M entities, online bytes per entity "
          f"{result['memory']['online_bytes_per_entity']['all']}", flush=True)

    broker = start_broker(root)
    redis = LocalRedis(root / "redis").start() if args.online == "redis" else None
    try:
        settings = StreamingSettings(home=root / "rtml", kafka_bootstrap=broker.bootstrap, metrics_port=0,
                                     group_id=f"bench-{uuid.uuid4().hex[:6]}", repartition=not args.no_repartition,
                                     redis_connection=redis.connection if redis else None)
        result["settings"] = {k: v for k, v in settings.model_dump().items()
                              if k in ("max_batch_records", "online_flush_s", "online_write_share", "offline_flush_s",
                                       "offline_flush_rows", "check_crcs", "partitions", "repartition", "online_writer",
                                       "grace_s", "state_changelog")}
        store = apply_definitions(settings)
        fresh = Freshness()
        runner = StreamRunner(settings, store=store, write_listener=fresh)
        tune_interpreter(settings)  # as `python -m streaming` does: this process is the engine's
        # The book's 183 days (~1.75M events): enough for the throughput run and every rate-limited phase.
        df = generate_transactions(n_customers=5000, n_terminals=10000, n_days=183, seed=7)
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
            batch = phase_records(stream, r, args.phase_seconds)
            result["rtml"]["freshness"][key] = rtml_freshness(runner, fresh, settings, batch, r, broker.proc.pid)
        # Committed: every change is in the store. Before close, which drops the state with the partitions.
        result["rtml"]["online_check"] = check_online(store, runner.engine)
        result["rtml"]["online_rows"] = runner.stats.online_rows
        print(f"    online check: {result['rtml']['online_check']}", flush=True)
        runner.close()

        print("baseline throughput ...", flush=True)
        base_settings = baseline_settings(settings, root)
        base = PushBaseline(base_settings, f"bench-base-{uuid.uuid4().hex[:6]}", apply_definitions(base_settings), fresh)
        result["baseline"]["throughput"] = btp = baseline_throughput(base, args.baseline_seconds)
        print(f"    {btp['events_per_s']:,} events/s", flush=True)
        for key, r in (("at_50pct", 0.5 * btp["events_per_s"]), ("at_5000", 5000.0)):
            print(f"baseline freshness at {r:,.0f} events/s ...", flush=True)
            batch = phase_records(stream, r, args.phase_seconds)
            result["baseline"]["freshness"][key] = baseline_freshness(base, fresh, base_settings, batch, r, broker.proc.pid)
        result["baseline"]["online_check"] = check_online(base.store, base.engine)
        result["baseline"]["online_rows"], result["baseline"]["offline_rows"] = base.online_rows, base.offline_rows
        print(f"    online check: {result['baseline']['online_check']}", flush=True)
        base.close()
    finally:
        broker.stop()
        if redis is not None:
            redis.stop()
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    print()
    print(table(result))
    print("\ncores kept busy during the rate-limited phases (engine / broker / producer, of "
          f"{os.cpu_count()}):")
    for name in ("rtml", "baseline"):
        for key, f in result[name]["freshness"].items():
            c = f["cpu_cores"]
            print(f"  {name:8} {key:9} {f['rate']:>6,}/s: {c['engine']:.2f} / {c['broker']:.2f} / {c['producer']:.2f}")
    print(f"\nmemory: {result['memory']}")
    for name in ("rtml", "baseline"):
        print(f"online store read-back, {name}: {result[name].get('online_check')}")
    print(f"load average: start {result['machine']['load_avg_1m']} (1 min), end {result['load_avg_end']} (1 / 5 / 15 min)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs = runs if isinstance(runs, dict) and set(runs) <= {"sqlite", "redis", "sqlite-single", "redis-single"} else {}
    runs[run_key] = result  # one entry per online store and topology, the others kept from their last run
    args.out.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"wrote {args.out} ({result['wall_seconds']} s)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
