"""State restore benchmark: how long a restarted engine takes to rebuild the state of its partitions.

    .venv/bin/python -m benchmarks.restore [--entities 20000] [--days 30] [--checkpoint-hours 3] [--repeat 2] [--no-profile]

Starts its own Kafka broker (``rtml.local.kafka.LocalKafka``) and generates a month of transactions
for ``--entities`` customers at the fraud simulator's density (``rtml.simulator``: Poisson(U(0, 4))
transactions a customer a day, noon-centred times, normal amounts around a U(5, 100) mean). A live
``FeatureEngine`` (``track_changes=True``) folds them in event-time order and, every
``--checkpoint-hours`` of event time, checkpoints as the runner does: drains the online values,
then ``StateChangelog.take()`` and ``send()`` (``streaming.changelog``; the ``StateChangelog``
creates its compacted topic). The same transactions go to the source topic as the simulator's
JSON events. Then a fresh process (a restarted engine: new interpreter, empty state) rebuilds the
state of all 4 partitions, two ways:

(a) rtml: ``StateChangelog.restore`` of the 4 changelog partitions, with the consumer
    ``streaming.rebalance`` makes (``make_consumer(settings, None, None, check_crcs=...)``). A
    chunk is rewritten at every checkpoint that changed it, so keys repeat, as in the never
    compacted active segment; the distinct keys are reported too.
(b) baseline: the replay the engine did before the changelog: every source record of the month
    read back (``read_partitions``), decoded 20,000 at a time with
    ``streaming.validation.batch_decoder_for(TRANSACTIONS)`` (cheaper than the runner's per-record
    admission: the baseline is, if anything, flattered), folded with ``FeatureEngine.apply``, then
    the online values drained and dropped as the runner's replay does.

Each is timed ``--repeat`` times in a fresh process (consumer creation to the restored state), the
fastest reported, with the process's CPU seconds (the machine is shared). Both engines hold the
customer aggregation only, and both must pack byte-identical online tiles to the live engine's
for every entity (``drain_rows``). Also reported: a read-only pass over each topic (fetch and
record decoding alone), state bytes per entity (RSS growth, and ``sys.getsizeof`` of the state's
objects), online bytes per entity, and a cProfile of (a). Prints a table and writes
``benchmarks/results/restore.json`` (one entry per entity count).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import json
import multiprocessing as mp
import os
import platform
import pstats
import resource
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import orjson
from kafka import KafkaAdminClient, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType

from benchmarks.synthetic import DAY_S, SIM_START, day_transactions
from feature_repo.aggregations import CUSTOMER_SPENDING
from feature_repo.sources import TRANSACTIONS
from rtml.local.kafka import LocalKafka
from rtml_common.kafka import ensure_topics, entity_key, make_consumer, make_producer, partition_counts
from streaming.changelog import StateChangelog, read_partitions
from streaming.engine import FeatureEngine
from streaming.process import tune_interpreter
from streaming.repartition import partition_for
from streaming.settings import StreamingSettings
from streaming.validation import batch_decoder_for
from streaming.windows import drain_rows

RESULTS = Path(__file__).parent / "results" / "restore.json"
PARTITIONS = 4
AGG = CUSTOMER_SPENDING
VIEW = AGG.feature_view
SOURCE_TOPIC = TRANSACTIONS.topic
POLL_RECORDS = 20_000  # as read_partitions polls; the baseline decodes batches of this many
READ_TIMEOUT_S = 900.0


# -- helpers ----------------------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a running process has used so far, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_bytes() -> int:
    """The process's peak resident set (VmHWM)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    t = time.perf_counter()
    sum(range(10**6))
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "load_avg": load_avg(),
            "sum_range_1e6_ms": round((time.perf_counter() - t) * 1000, 1)}


def start_broker(root: Path) -> LocalKafka:
    for attempt in range(3):  # a random cluster id that starts with '-' makes the storage tool fail: retry
        try:
            return LocalKafka(root / f"kafka-{attempt}", partitions=PARTITIONS, heap="1g").start()
        except RuntimeError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def topic_disk_bytes(broker: LocalKafka, topic: str) -> int:
    """Bytes of the topic's log segments on the broker's disk (record batches with their overhead)."""
    return sum(f.stat().st_size for p in range(PARTITIONS) for f in (broker.data_dir / "logs" / f"{topic}-{p}").glob("*.log"))


def digests(engine: FeatureEngine) -> tuple[dict[int, bytes], list[int]]:
    """Every entity's packed online tiles (the next write, all entities, pruned): a digest each, and the sizes."""
    states = engine.state[VIEW]
    rows = drain_rows(engine.layouts[VIEW], set(states), states, engine.keep[VIEW])
    return ({entity: hashlib.blake2b(values[0], digest_size=16).digest() for entity, _, values in rows},
            [len(values[0]) for _, _, values in rows])




# -- the month: generated, fed to the live engine, produced to both topics -----------------------
def iso(t: np.ndarray) -> list[str]:
    """The simulator's ISO 8601 UTC strings ('2018-04-01T00:07:56Z', ``rtml.simulator._iso``)."""
    return np.char.add(np.datetime_as_string(t.astype("datetime64[s]"), unit="s"), "Z").tolist()


def topic_config(settings: StreamingSettings, topic: str) -> dict[str, str]:
    """The topic's configs that differ from the broker's defaults (as created)."""
    admin = KafkaAdminClient(**settings.kafka_client_config())
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        admin.close()
    return {name: entry["value"] for name, entry in described["topic"][topic].items()}


def feed_and_produce(settings: StreamingSettings, n_entities: int, days: int, checkpoint_h: float, seed: int):
    """The live engine after the month, its changelog topic, and what was produced."""
    rng = np.random.default_rng(seed)
    mean_nb, mean_amount = rng.uniform(0, 4, n_entities), rng.uniform(5, 100, n_entities)
    n_terminals = 2 * n_entities
    part = [partition_for(entity_key(c), PARTITIONS) for c in range(n_entities)]  # the default partitioner's choice
    live = FeatureEngine(aggregations=(AGG,), grace_s=settings.grace_s, track_changes=True)
    producer = make_producer(settings, linger_ms=100, batch_size=1024 * 1024, max_request_size=4 * 1024 * 1024)
    ensure_topics(settings, [SOURCE_TOPIC], partitions=PARTITIONS)
    changelog = StateChangelog(settings, live, producer, {VIEW: PARTITIONS})  # creates the changelog topic
    topic = changelog.topics[VIEW]
    counts = partition_counts(settings, [SOURCE_TOPIC, topic])
    if counts != {SOURCE_TOPIC: PARTITIONS, topic: PARTITIONS}:
        raise RuntimeError(f"unexpected partition counts {counts}")
    send, apply, dumps = producer.send, live.apply, orjson.dumps
    scratch: dict = {}
    stats = {"events": 0, "checkpoints": 0, "changelog_records": 0, "changelog_key_bytes": 0, "changelog_value_bytes": 0,
             "source_key_bytes": 0, "source_value_bytes": 0}
    keys: set = set()
    step_s = round(checkpoint_h * 3600)
    next_id, t0, feed_s = 0, time.perf_counter(), 0.0

    def checkpoint() -> None:
        live.drain_online_values()  # written online (dropped here)
        records = changelog.take()
        changelog.send(records)
        for _, _, key, value in records:
            keys.add(key)
            stats["changelog_key_bytes"] += len(key)
            stats["changelog_value_bytes"] += len(value)
        stats["changelog_records"] += len(records)
        stats["checkpoints"] += 1

    for day in range(days):
        ids, t, cust, term, amount = day_transactions(rng, day, next_id, mean_nb, mean_amount, n_terminals)
        next_id += len(ids)
        bounds = np.searchsorted(t, SIM_START + day * DAY_S + np.arange(step_s, DAY_S + step_s, step_s))
        rows = list(zip(ids.tolist(), t.tolist(), iso(t), cust.tolist(), term.tolist(), amount.tolist()))
        lo = 0
        for hi in bounds.tolist():
            for i, ts, ts_iso, c, te, a in rows[lo:hi]:
                f0 = time.perf_counter()
                apply("transactions", {"transaction_id": i, "tx_datetime": float(ts), "customer_id": c, "terminal_id": te,
                                       "tx_amount": a}, scratch)
                feed_s += time.perf_counter() - f0
                value = dumps({"transaction_id": i, "tx_datetime": ts_iso, "customer_id": c, "terminal_id": te, "tx_amount": a})
                key = entity_key(c)
                send(SOURCE_TOPIC, key=key, value=value, partition=part[c])
                stats["source_key_bytes"] += len(key)
                stats["source_value_bytes"] += len(value)
            scratch.clear()
            stats["events"] += hi - lo
            lo = hi
            checkpoint()
        print(f"    day {day + 1}/{days}: {stats['events']:,} events, {stats['changelog_records']:,} changelog records "
              f"({time.perf_counter() - t0:.0f}s)", flush=True)
    producer.flush()
    producer.close()
    stats["changelog_keys"] = len(keys)
    stats["seconds"] = round(time.perf_counter() - t0, 1)
    stats["live_fold_seconds"] = round(feed_s, 1)
    return live, topic, stats


# -- the restores, each in a fresh process ------------------------------------------------------
def _restore(kind: str, mode: str, bootstrap: str, home: str, broker_pid: int) -> dict:
    """Rebuild the state of all partitions; ``mode`` restore, read (fetch only) or profile (restore under cProfile).

    ``kind``: ``changelog`` (a): ``StateChangelog.restore``; ``replay`` (b): the source topic folded again.
    """
    settings = StreamingSettings(home=Path(home), kafka_bootstrap=bootstrap, metrics_port=0)
    tune_interpreter(settings)  # as `python -m streaming` does: this process is the engine's
    changelog = kind == "changelog"
    engine = FeatureEngine(aggregations=(AGG,), grace_s=settings.grace_s, track_changes=changelog)
    counts = {"bytes": 0, "invalid": 0}

    def count_record(key: bytes, value: bytes) -> None:
        counts["bytes"] += len(key) + len(value)

    if changelog:
        state_log = StateChangelog(settings, engine, None, {VIEW: PARTITIONS})  # as the runner's, built before any restore
        topic = state_log.topics[VIEW]

        def read(consumer) -> int:
            if mode == "read":  # partition by partition, as the restore reads
                return sum(read_partitions(consumer, [TopicPartition(topic, p)], count_record, READ_TIMEOUT_S)
                           for p in range(PARTITIONS))
            records, empty = state_log.restore(consumer, {VIEW: list(range(PARTITIONS))}, READ_TIMEOUT_S)
            if empty:
                raise AssertionError(f"changelog partitions {sorted(empty)} held nothing")
            return records
    else:
        tps = [TopicPartition(SOURCE_TOPIC, p) for p in range(PARTITIONS)]
        decode, apply, scratch, batch = batch_decoder_for(TRANSACTIONS), engine.apply, {}, []

        def fold() -> None:
            for event in decode(batch):
                if type(event) is dict:
                    apply("transactions", event, scratch)
                else:
                    counts["invalid"] += 1
            scratch.clear()  # raw rows: logged by whoever processed these records first
            batch.clear()

        def add(key: bytes, value: bytes) -> None:
            batch.append(value)
            if len(batch) == POLL_RECORDS:
                fold()

        def read(consumer) -> int:
            n = read_partitions(consumer, tps, count_record if mode == "read" else add, READ_TIMEOUT_S)
            fold()
            return n

    profiler = cProfile.Profile() if mode == "profile" else None
    gc.collect()
    rss0, load0 = rss_bytes(), load_avg()
    broker0, cpu0 = process_cpu_seconds(broker_pid), cpu_seconds()
    t0 = time.perf_counter()
    # The consumer streaming.rebalance restores with: no group (assigned partitions), the engine's check_crcs
    # (off: rtml_common.kafka_records' decoder instead of kafka-python's slow record loop).
    consumer = make_consumer(settings, None, None, check_crcs=settings.check_crcs)
    t1 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    records = read(consumer)
    if profiler is not None:
        profiler.disable()
    t2 = time.perf_counter()
    if mode != "read" and not changelog:
        engine.drain_online_values()  # the runner's replay: these values are online already
    t3 = time.perf_counter()
    cpu, broker_cpu = cpu_seconds() - cpu0, process_cpu_seconds(broker_pid) - broker0
    consumer.close(autocommit=False)
    out = {"kind": kind, "mode": mode, "records": records, "seconds": round(t3 - t0, 3),
           "connect_seconds": round(t1 - t0, 3), ("read_seconds" if mode == "read" else "restore_seconds"): round(t2 - t1, 3),
           "cpu_seconds": round(cpu, 2), "broker_cpu_seconds": round(broker_cpu, 2), "load_avg_before": load0,
           "load_avg_after": load_avg()}
    if mode != "read" and not changelog:
        out["drain_seconds"] = round(t3 - t2, 3)
    if mode == "read":
        out["bytes"] = counts["bytes"]
        return out
    if counts["invalid"]:
        raise AssertionError(f"{counts['invalid']} source records did not decode")
    states = engine.state[VIEW]
    entities = len(states)
    out.update(entities=entities, tiles=sum(len(st.keys) for st in states.values()),
               events_remembered=sum(len(st.events) for st in states.values()))
    if profiler is not None:
        out["profile"] = top_functions(profiler)
        out["phases"] = {phase: round(cumulative_seconds(profiler, name), 3)
                         for phase, name in (("read", "read_partitions"), ("merge", "restore_chunk"), ("finish", "finish_restore"))}
        return out
    gc.collect()
    grown = rss_bytes() - rss0
    out.update(rss_delta_mb=round(grown / 2**20, 1), peak_rss_delta_mb=round((peak_rss_bytes() - rss0) / 2**20, 1),
               state_bytes_per_entity_rss=round(grown / entities),
               state_bytes_per_entity_objects=round(engine.state_bytes() / entities))
    out["digests"], _ = digests(engine)
    return out


def cumulative_seconds(profiler: cProfile.Profile, function: str) -> float:
    """Cumulative seconds of the profiled functions named ``function``."""
    return sum(ct for (_, _, name), (_, _, _, ct, _) in pstats.Stats(profiler).stats.items() if name == function)


def top_functions(profiler: cProfile.Profile, n: int = 15) -> list[dict]:
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (primitive calls, calls, own time, cumulative, callers)
    total = sum(tt for _, _, tt, _, _ in stats.values())
    rows = sorted(stats.items(), key=lambda kv: kv[1][2], reverse=True)[:n]
    here = str(Path(__file__).resolve().parent.parent) + "/"
    return [{"function": f"{Path(file).as_posix().replace(here, '')}:{line}({name})" if file != "~" else name,
             "calls": nc, "own_s": round(tt, 3), "own_share": round(tt / total, 3), "cumulative_s": round(ct, 3)}
            for (file, line, name), (_, nc, tt, ct, _) in rows]


def _worker(args: tuple, queue) -> None:
    try:
        queue.put(_restore(*args))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the run
        queue.put({"error": traceback.format_exc()})


def run_restore(kind: str, mode: str, bootstrap: str, home: Path, broker_pid: int) -> dict:
    """One restore in a fresh interpreter (a restarted engine: nothing else in its heap)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=((kind, mode, bootstrap, str(home), broker_pid), queue))
    proc.start()
    result = queue.get(timeout=READ_TIMEOUT_S + 120)
    proc.join(timeout=60)
    if "error" in result:
        raise RuntimeError(f"restore {kind}/{mode} failed:\n{result['error']}")
    return result


# -- main ------------------------------------------------------------------------------------
def per_entity(result: dict, entities: int) -> None:
    """Microseconds per entity, and the linear extrapolation to a million entities (the same number, in seconds);
    also of the restoring process's CPU time (what an idle core would take: the machine is shared)."""
    result["us_per_entity"] = round(result["seconds"] / entities * 1e6, 1)
    result["extrapolated_1m_entities_s"] = round(result["seconds"] / entities * 1e6, 1)
    result["cpu_us_per_entity"] = round(result["cpu_seconds"] / entities * 1e6, 1)
    result["extrapolated_1m_entities_cpu_s"] = round(result["cpu_seconds"] / entities * 1e6, 1)


def table(result: dict) -> str:
    n, data, log = result["entities"], result["data"], result["changelog"]
    lines = ["| restore of 4 partitions | entities | events | records read | bytes read | restore s (best of runs) | "
             "us per entity | 1M entities (linear) | CPU s (engine / broker) | 1M entities by engine CPU | read-only s | "
             "state bytes per entity (RSS / objects) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, label, nbytes in (("rtml", "(a) rtml: state changelog", log["key_bytes"] + log["value_bytes"]),
                                ("baseline", "(b) baseline: source replay", data["source_bytes"])):
        r = result[name]
        lines.append(f"| {label} | {n:,} | {data['events']:,} | {r['records']:,} | {nbytes / 2**20:,.1f} MiB | "
                     f"{r['seconds']:,.2f} ({', '.join(f'{x:.2f}' for x in r['seconds_all'])}) | {r['us_per_entity']:,.0f} | "
                     f"{r['extrapolated_1m_entities_s']:,.0f} s | {r['cpu_seconds']:,.1f} / {r['broker_cpu_seconds']:,.1f} | "
                     f"{r['extrapolated_1m_entities_cpu_s']:,.0f} s | {r['read_only']['seconds']:,.2f} | "
                     f"{r['state_bytes_per_entity_rss']:,} / {r['state_bytes_per_entity_objects']:,} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.restore", description=__doc__.split("\n")[0])
    parser.add_argument("--entities", type=int, default=20_000, help="customers with a month of history")
    parser.add_argument("--days", type=int, default=30, help="days of history")
    parser.add_argument("--checkpoint-hours", type=float, default=3.0, help="event time between two checkpoints")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2, help="timed restores of (a) and (b) each (the fastest reported)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run of restore (a)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.monotonic()
    result: dict = {"machine": machine(), "entities_asked": args.entities,
                    "settings": {"days": args.days, "checkpoint_hours": args.checkpoint_hours, "partitions": PARTITIONS,
                                 "aggregation": VIEW, "poll_max_records": POLL_RECORDS, "seed": args.seed}}
    root = Path(tempfile.mkdtemp(prefix="rtml-bench-restore-"))
    broker = start_broker(root)
    try:
        settings = StreamingSettings(home=root / "rtml", kafka_bootstrap=broker.bootstrap, metrics_port=0)
        result["settings"]["grace_s"] = settings.grace_s
        tune_interpreter(settings)
        print(f"feeding the live engine a month for {args.entities:,} customers, producing source and changelog ...", flush=True)
        live, changelog_topic, fed = feed_and_produce(settings, args.entities, args.days, args.checkpoint_hours, args.seed)
        result["settings"].update(changelog_topic=changelog_topic, changelog_config=topic_config(settings, changelog_topic))
        live_digests, sizes = digests(live)
        n = len(live_digests)  # customers with at least one transaction
        result["entities"] = n
        result["data"] = {"events": fed["events"], "events_per_entity": round(fed["events"] / n, 1),
                          "source_bytes": fed["source_key_bytes"] + fed["source_value_bytes"],
                          "source_disk_bytes": topic_disk_bytes(broker, SOURCE_TOPIC),
                          "checkpoints": fed["checkpoints"], "produce_and_feed_seconds": fed["seconds"],
                          "live_fold_seconds": fed["live_fold_seconds"]}
        result["changelog"] = {"records": fed["changelog_records"], "keys": fed["changelog_keys"],
                               "records_per_key": round(fed["changelog_records"] / fed["changelog_keys"], 2),
                               "key_bytes": fed["changelog_key_bytes"], "value_bytes": fed["changelog_value_bytes"],
                               "mean_record_bytes": round((fed["changelog_key_bytes"] + fed["changelog_value_bytes"])
                                                          / fed["changelog_records"]),
                               "disk_bytes": topic_disk_bytes(broker, changelog_topic),
                               "records_per_entity": round(fed["changelog_records"] / n, 1)}
        a = np.asarray(sizes)
        result["online_bytes_per_entity"] = {"mean": round(float(a.mean())), "max": int(a.max())}
        result["live_state"] = {"tiles_per_entity": round(live.tile_count() / n, 1),
                                "state_bytes_per_entity_objects": round(live.state_bytes() / n)}
        del live
        gc.collect()
        print(f"    {fed['events']:,} events for {n:,} customers, {fed['changelog_records']:,} changelog records "
              f"({fed['changelog_keys']:,} keys) in {fed['seconds']:.0f}s", flush=True)

        for name, kind, label in (("rtml", "changelog", "(a) rtml: StateChangelog.restore"),
                                  ("baseline", "replay", "(b) baseline: replay of the source topic")):
            print(f"{label} ...", flush=True)
            runs = []
            for _ in range(max(1, args.repeat)):
                r = run_restore(kind, "restore", broker.bootstrap, root / "rtml", broker.proc.pid)
                restored = r.pop("digests")
                missing = set(live_digests) ^ set(restored)
                differing = sum(1 for e, d in live_digests.items() if restored.get(e, d) != d)
                r["check"] = {"entities_compared": len(live_digests), "entity_sets_differ_by": len(missing),
                              "entities_with_different_tiles": differing}
                assert not missing and not differing, f"{name} restore differs from the live engine: {r['check']}"
                runs.append(r)
            r = min(runs, key=lambda x: x["seconds"])
            r["seconds_all"] = [x["seconds"] for x in runs]
            r["cpu_seconds_all"] = [x["cpu_seconds"] for x in runs]
            per_entity(r, n)
            result[name] = r
            assert r["entities"] == n
            r["read_only"] = run_restore(kind, "read", broker.bootstrap, root / "rtml", broker.proc.pid)
            print(f"    {r['seconds']:.2f}s ({r['records']:,} records; read-only pass {r['read_only']['seconds']:.2f}s), "
                  f"{r['us_per_entity']:,.0f} us per entity, identical tiles for all {n:,} entities", flush=True)
        for name, what in (("rtml", result["changelog"]), ("baseline", result["data"])):
            what["bytes_read"] = result[name]["read_only"]["bytes"]  # keys and values read back
        if not args.no_profile:
            print("cProfile of restore (a) ...", flush=True)
            p = run_restore("changelog", "profile", broker.bootstrap, root / "rtml", broker.proc.pid)
            result["profile_rtml"] = {"seconds_under_profile": p["restore_seconds"],
                                      "read_partitions_seconds": p["phases"]["read"],
                                      "restore_chunk_seconds": p["phases"]["merge"],
                                      "finish_restore_seconds": p["phases"]["finish"], "top_by_own_time": p["profile"]}
    finally:
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)
    result["speedup"] = round(result["baseline"]["seconds"] / result["rtml"]["seconds"], 2)
    result["wall_seconds"] = round(time.monotonic() - started, 1)
    result["load_avg_end"] = load_avg()
    print()
    print(table(result))
    c = result["changelog"]
    print(f"\nchangelog: {c['records']:,} records for {c['keys']:,} keys ({c['records_per_key']} per key), "
          f"{c['mean_record_bytes']} bytes a record, {(c['key_bytes'] + c['value_bytes']) / 2**20:,.1f} MiB "
          f"({c['disk_bytes'] / 2**20:,.1f} MiB on disk); source: {result['data']['events']:,} records, "
          f"{result['data']['source_bytes'] / 2**20:,.1f} MiB ({result['data']['source_disk_bytes'] / 2**20:,.1f} MiB on disk)")
    o = result["online_bytes_per_entity"]
    print(f"online bytes per entity: mean {o['mean']:,}, max {o['max']:,}; tiles per entity {result['live_state']['tiles_per_entity']}")
    for name in ("rtml", "baseline"):
        r = result[name]
        drain = f", drain {r['drain_seconds']:.2f}s" if "drain_seconds" in r else ""
        print(f"{name:8}: connect {r['connect_seconds']:.2f}s, restore {r['restore_seconds']:.2f}s{drain}; "
              f"RSS +{r['rss_delta_mb']} MiB (peak +{r['peak_rss_delta_mb']}); load {r['load_avg_before']} -> {r['load_avg_after']}")
    print(f"changelog restore is {result['speedup']}x faster than the replay")
    if "profile_rtml" in result:
        p = result["profile_rtml"]
        print(f"\ncProfile of (a): {p['seconds_under_profile']:.2f}s under the profiler (read_partitions "
              f"{p['read_partitions_seconds']:.2f}s, restore_chunk {p['restore_chunk_seconds']:.2f}s, finish_restore "
              f"{p['finish_restore_seconds']:.2f}s); top by own time:")
        for f in p["top_by_own_time"]:
            print(f"  {f['own_s']:7.3f}s {100 * f['own_share']:5.1f}%  {f['calls']:>10,}  {f['function']}")
    print(f"load average: start {result['machine']['load_avg']}, end {result['load_avg_end']} (1 / 5 / 15 min)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs = runs if isinstance(runs, dict) else {}
    runs[f"{args.entities}-entities"] = result  # one entry per entity count, the others kept from their last run
    args.out.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"wrote {args.out} ({result['wall_seconds']} s)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
