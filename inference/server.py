"""Starting the kserve ModelServer (REST + gRPC) for a role: predictor, transformer or both in one process."""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from kserve import ModelServer
from kserve.errors import InvalidInput
from kserve.predictor_config import PredictorConfig

from inference import http
from inference.predictor import TorchPredictor
from inference.settings import PredictorSettings, ServingSettings, TransformerSettings
from inference.tensors import BadRequest
from inference.transformer import FraudTransformer

Role = Literal["predictor", "transformer", "all"]
log = logging.getLogger("rtml.inference")


def build_models(role: Role, settings) -> list:
    """Load the models a role serves (all: the transformer, plus its predictor under <name><suffix> and a
    canary candidate, if any, under <name><suffix>-candidate)."""
    if role == "predictor":
        models = [TorchPredictor(settings.model_name, settings)]
    elif role == "transformer":
        models = [FraudTransformer(settings.model_name, settings)]
    else:
        predictor = TorchPredictor(settings.model_name + settings.predictor_suffix, settings)
        candidate = None
        if settings.candidate_storage_uri:
            candidate_settings = settings.model_copy(update={"storage_uri": settings.candidate_storage_uri})
            candidate = TorchPredictor(settings.model_name + settings.predictor_suffix + "-candidate", candidate_settings)
        transformer = FraudTransformer(settings.model_name, settings, predictor=predictor, candidate=candidate)
        models = [transformer, predictor] + ([candidate] if candidate is not None else [])
    for model in models:
        if not model.ready:
            model.load()
    return models


def settings_for(role: Role, **overrides):
    """The settings class of a role, with CLI overrides (None values ignored)."""
    cls = {"predictor": PredictorSettings, "transformer": TransformerSettings, "all": ServingSettings}[role]
    return cls(**{k: v for k, v in overrides.items() if v is not None})


def _strict_decode(dataplane) -> None:
    """Malformed binary-extension bodies make kserve's decoder raise KeyError/TypeError (a 500): make them 400."""
    original = dataplane.decode_inference_request

    def decode(body, headers, model_name):
        try:
            return original(body, headers, model_name)
        except (KeyError, TypeError, ValueError, IndexError) as e:
            if isinstance(e, InvalidInput):
                raise
            raise BadRequest(f"malformed binary inference request: {type(e).__name__}: {e}") from e

    dataplane.decode_inference_request = decode


def _quiet_hot_path_logs() -> None:
    # kserve logs a line per request (timings, gRPC method, access log): none of it on the hot path.
    for name in ("kserve", "kserve.trace", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    # kserve calls get_event_loop() before asyncio.run(), which uvloop's policy refuses without a current loop.
    asyncio.set_event_loop(asyncio.new_event_loop())


def serve(role: Role, settings) -> None:
    """Load the role's models and serve them until SIGTERM/SIGINT."""
    import kserve.model_server as kms

    models = build_models(role, settings)
    remote = getattr(settings, "predictor_host", "") if role == "transformer" else ""
    protocol = getattr(settings, "predictor_protocol", "v2")
    # kserve hands its module-level args to the gRPC server as options: the message limit lives there.
    kms.args.grpc_max_receive_message_length = settings.max_request_bytes
    server = ModelServer(
        http_port=settings.http_port,
        grpc_port=settings.grpc_port or 0,
        enable_grpc=bool(settings.grpc_port),
        max_threads=settings.grpc_threads,
        enable_latency_logging=False,
        enable_docs_url=False,
        grace_period=settings.shutdown_grace_s,
        predictor_config=PredictorConfig(predictor_host=remote or None, predictor_protocol=protocol),
    )
    _quiet_hot_path_logs()
    _strict_decode(server.dataplane)
    registry = server.registered_models

    def version_of(name: str) -> str | None:
        model = registry.get_model(name)
        return getattr(model, "version", "") if model is not None else None

    def score_stream(name: str):
        return getattr(registry.get_model(name), "scores", None)

    http.install(kms.app, settings.max_request_bytes, version_of, server.dataplane, score_stream)
    _use_uvloop()
    log.warning(
        "rtml inference (%s) serving %s on http :%d grpc :%s",
        role,
        ", ".join(f"{m.name} v{m.version}" for m in models),
        settings.http_port,
        settings.grpc_port or "off",
    )
    server.start(models)
