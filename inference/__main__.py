"""``python -m inference --role all|transformer|predictor [...]``: serve the fraud model over V2 REST and gRPC.

Every flag has an ``RTML_`` environment variable (see inference/settings.py); flags win.
"""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The CLI flags; the underscore spellings the KServe controller passes (--model_name, --http_port,
    --predictor_host ...) are accepted too, and its other flags (--workers ...) are ignored."""
    p = argparse.ArgumentParser(prog="python -m inference", description=__doc__, allow_abbrev=False)
    p.add_argument("--role", choices=["all", "transformer", "predictor"], default="all", help="What this process serves.")
    p.add_argument("--model-name", "--model_name", help="Model name on /v2/models/<name> (RTML_MODEL_NAME).")
    p.add_argument("--storage-uri", "--storage_uri", help="Model version dir or URI (RTML_STORAGE_URI).")
    p.add_argument("--http-port", "--http_port", type=int, help="REST port (RTML_HTTP_PORT).")
    p.add_argument("--grpc-port", "--grpc_port", type=int, help="gRPC port, 0 = off (RTML_GRPC_PORT).")
    p.add_argument("--predictor-host", "--predictor_host", help="Remote predictor host:port, transformer role (RTML_PREDICTOR_HOST).")
    p.add_argument("--predictor-protocol", "--predictor_protocol", choices=["v2", "grpc-v2"], help="Remote predictor protocol (RTML_PREDICTOR_PROTOCOL).")
    p.add_argument("--candidate-storage-uri", "--candidate_storage_uri", help="Canary candidate model version dir or URI (RTML_CANDIDATE_STORAGE_URI).")
    p.add_argument("--candidate-predictor-host", "--candidate_predictor_host", help="Canary candidate's remote predictor host:port, transformer role (RTML_CANDIDATE_PREDICTOR_HOST).")
    p.add_argument("--canary-percent", "--canary_percent", type=float, help="Percent of requests the candidate answers (RTML_CANARY_PERCENT).")
    p.add_argument("--max-request-bytes", "--max_request_bytes", type=int, help="Body/message limit, 413 above (RTML_MAX_REQUEST_BYTES).")
    args, ignored = p.parse_known_args(argv)
    if ignored:
        print(f"python -m inference: ignoring {' '.join(ignored)}", file=sys.stderr)
    return args


def main(argv: list[str] | None = None) -> None:
    """Parse flags, build settings, serve."""
    args = parse_args(argv)
    # kserve parses sys.argv when imported: hide our flags from it.
    sys.argv = sys.argv[:1]
    from inference.server import serve, settings_for

    overrides = {k: v for k, v in vars(args).items() if k != "role"}
    if args.role == "predictor":
        overrides = {k: v for k, v in overrides.items() if not k.startswith(("predictor_", "candidate_", "canary_"))}
    serve(args.role, settings_for(args.role, **overrides))


if __name__ == "__main__":
    main()
