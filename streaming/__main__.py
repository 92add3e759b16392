"""``python -m streaming``: run one feature-engine process (settings from RTML_ variables)."""

from __future__ import annotations

import argparse
import logging
import signal
import threading

from prometheus_client import start_http_server

from streaming.metrics import REGISTRY
from streaming.process import tune_interpreter
from streaming.runner import StreamRunner
from streaming.settings import StreamingSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streaming", description="rtml streaming feature engine")
    parser.add_argument("--idle-timeout", type=float, default=None, help="exit after this many seconds without records")
    parser.add_argument("--kafka-bootstrap", default=None, help="overrides RTML_KAFKA_BOOTSTRAP")
    parser.add_argument("--metrics-port", type=int, default=None, help="overrides RTML_METRICS_PORT")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in {"kafka_bootstrap": args.kafka_bootstrap, "metrics_port": args.metrics_port}.items() if v is not None}
    settings = StreamingSettings(**overrides)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="0.0.0.0", registry=REGISTRY)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runner = StreamRunner(settings)  # state is rebuilt per assigned partition (streaming.restore)
    tune_interpreter(settings)
    stats = runner.run(stop=stop, idle_timeout_s=args.idle_timeout)
    logging.getLogger("streaming").info("stopped: %s", stats)


if __name__ == "__main__":
    main()
