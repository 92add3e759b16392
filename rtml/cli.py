"""``rtml``: the command line of the local runtime. Flags override RTML_ settings, never the reverse."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path


def _settings(args: argparse.Namespace):
    from rtml.settings import RuntimeSettings

    overrides = {}
    if getattr(args, "home", None):
        overrides["home"] = Path(args.home)
    if getattr(args, "kafka_bootstrap", None):
        overrides["kafka_bootstrap"] = args.kafka_bootstrap
    return RuntimeSettings(**overrides)


def cmd_demo(args: argparse.Namespace) -> int:
    from rtml.local.demo import DemoConfig, run_demo

    cfg = DemoConfig(customers=args.customers, terminals=args.terminals, days=args.days, live_seconds=args.live_seconds,
                     live_rate=args.live_rate)
    summary = run_demo(_settings(args), cfg)
    return 0 if summary.get("ok") else 1


def cmd_stop(args: argparse.Namespace) -> int:
    from rtml.local.stack import stop_stale

    stopped = stop_stale(_settings(args))
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def cmd_kafka(args: argparse.Namespace) -> int:
    import signal
    import threading

    from rtml.local.kafka import LocalKafka

    settings = _settings(args)
    kafka = LocalKafka(settings.home / "kafka", port=args.port, partitions=args.partitions).start()
    print(f"Kafka {kafka.version} (KRaft) on {kafka.bootstrap}; log {kafka.log_file}. Ctrl-C stops it.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        kafka.stop()
    return 0


def cmd_feast_apply(args: argparse.Namespace) -> int:
    from feature_repo.store import apply_definitions

    store = apply_definitions(_settings(args))
    print("applied:", ", ".join(fv.name for fv in store.list_feature_views()))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from rtml import simulator

    settings = _settings(args)
    if not settings.kafka_bootstrap:
        print("set --kafka-bootstrap or RTML_KAFKA_BOOTSTRAP (start a broker with `rtml kafka`)", file=sys.stderr)
        return 2
    if args.replay:
        df = simulator.load_dataset(args.replay)
    elif args.generator == "handbook":
        from rtml import handbook_data

        df = handbook_data.simulate_with("handbook", args.customers, args.terminals, args.days, args.start,
                                         radius=args.radius).transactions
    else:
        df = simulator.generate_transactions(args.customers, args.terminals, args.days, args.start, radius=args.radius)
    if args.save:
        simulator.save_dataset(df, args.save)
    n = simulator.produce_events(settings, simulator.to_events(df), rate=args.rate, limit=args.limit)
    print(f"produced {n} events ({len(df)} transactions, {int(df['TX_FRAUD'].sum())} frauds)")
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    from streaming.__main__ import main as stream_main

    stream_main(([f"--idle-timeout={args.idle_timeout}"] if args.idle_timeout else [])
                + ([f"--kafka-bootstrap={args.kafka_bootstrap}"] if args.kafka_bootstrap else []))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from pipelines import run

    settings = _settings(args)
    if args.kfp_host:
        result = run.submit(args.kfp_host, {"train_start": args.train_start, "model_name": settings.model_name},
                            cron=args.recurring)
    else:
        result = run.run_local(home=settings.home, offline_dir=settings.offline_path, registry_dir=settings.registry_path,
                               train_start=args.train_start, model_name=settings.model_name,
                               model_registry_server=settings.model_registry_server, model_registry_port=settings.model_registry_port)
    print(json.dumps(result, indent=2, default=str))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines import run

    for path in run.compile_all(Path(args.out)):
        print(path)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from components.registry import open_registry

    settings = _settings(args)
    # With RTML_MODEL_REGISTRY_SERVER set, promotions and rollbacks are mirrored to the Kubeflow Model Registry.
    registry = open_registry(settings.registry_path, settings.model_registry_server or None, settings.model_registry_port)
    name = args.name or settings.model_name
    if args.action == "promote":
        print(json.dumps(registry.promote(name, args.version), indent=2))
    elif args.action == "rollback":
        print(f"{name}: champion is now v{registry.rollback(name, args.version)}")
    else:
        stages = registry.stages(name)
        for version in registry.versions(name):
            metrics = registry.metadata(name, version).get("metrics", {})
            print(f"{name} v{version:<4} {stages.get(version, '-'):<10} {json.dumps(metrics, default=str)[:120]}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from inference.__main__ import main as serve_main

    serve_main(args.rest)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtml", description="rtml: real-time AI predictions on Kafka, Feast, KFP and KServe.")
    parser.add_argument("--home", help="state directory (RTML_HOME, default ./.rtml)")
    parser.add_argument("--kafka-bootstrap", help="existing Kafka cluster (RTML_KAFKA_BOOTSTRAP)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the whole flow locally and print a summary")
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--terminals", type=int, default=2000)
    p.add_argument("--days", type=int, default=60, help="simulated days; the last 2 are streamed live while serving")
    p.add_argument("--live-seconds", type=float, default=20.0)
    p.add_argument("--live-rate", type=float, default=100.0, help="live transactions (and predictions) per second")
    p.set_defaults(func=cmd_demo)

    sub.add_parser("stop", help="stop processes a previous run left behind").set_defaults(func=cmd_stop)

    p = sub.add_parser("kafka", help="run a local KRaft broker in the foreground")
    p.add_argument("--port", type=int, default=9092)
    p.add_argument("--partitions", type=int, default=4)
    p.set_defaults(func=cmd_kafka)

    sub.add_parser("feast-apply", help="register the feature repo's objects").set_defaults(func=cmd_feast_apply)

    p = sub.add_parser("simulate", help="produce simulated (or replayed) transactions and fraud labels")
    p.add_argument("--customers", type=int, default=1000)
    p.add_argument("--terminals", type=int, default=2000)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--start", default="2018-04-01")
    p.add_argument("--radius", type=float, default=5.0)
    p.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--replay", help="replay a stored dataset (parquet, csv or a directory of the handbook's .pkl files)")
    p.add_argument("--generator", choices=("vectorised", "handbook"), default="vectorised",
                   help="vectorised: the handbook's statistics in seconds; handbook: the book's exact rows "
                        "(with --customers 5000 --terminals 10000 --days 183: its published dataset)")
    p.add_argument("--save", help="also save the generated dataset to this parquet file")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("stream", help="run the streaming feature engine")
    p.add_argument("--idle-timeout", type=float, default=None)
    p.set_defaults(func=cmd_stream)

    p = sub.add_parser("train", help="run the training pipeline (kfp.local, or on a KFP endpoint)")
    p.add_argument("--train-start", required=True, help="first day of the training week, YYYY-MM-DD")
    p.add_argument("--kfp-host", help="submit to this Kubeflow Pipelines endpoint instead of running locally")
    p.add_argument("--recurring", help="with --kfp-host: also create a recurring run with this cron expression")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compile", help="compile the pipelines to KFP IR YAML")
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "pipelines" / "compiled"))
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("models", help="the model registry: list versions, promote one, roll back")
    p.add_argument("action", choices=["list", "promote", "rollback"])
    p.add_argument("--name", help="model name (default RTML_MODEL_NAME)")
    p.add_argument("--version", help="promote: required; rollback: the version to return to (default: the previous champion)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("serve", help="run the model server (python -m inference)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="flags passed to python -m inference")
    p.set_defaults(func=cmd_serve)

    try:
        from rtml.canary import add_cli
    except ImportError:  # packaging module not installed in a trimmed image
        add_cli = None
    if add_cli is not None:
        add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("kafka", "feast", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
