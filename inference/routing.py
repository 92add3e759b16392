"""Where the transformer sends a request: one model version (a route), or a champion/candidate split.

A route bundles what differs between model versions besides the forward pass: the version's
default features for unknown entities and its decision threshold. The local canary split
sends whole requests, chosen by a hash of the request id: a retried request (same id) meets
the same version, and the share of a large run of ids converges on ``percent`` without any
state shared between transformer replicas. On Kubernetes KServe splits the traffic and the
transformer has one route.
"""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
from kserve.inference_client import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.infer_type import InferInput, InferRequest

from inference.artifact import ModelMetadata
from inference.predictor import TorchPredictor
from rtml_common.errors import ConfigurationError, NotReadyError

_HASH_SPACE = float(1 << 64)


class Route:
    """One model version: its metadata and threshold, and how to score rows."""

    def __init__(self, metadata: ModelMetadata, threshold: float | None = None):
        self.metadata = metadata
        self.version = metadata.version
        self.threshold = metadata.threshold if threshold is None else threshold

    async def score(self, x: np.ndarray, request_id: str) -> tuple[np.ndarray, str]:
        """FP32 [N] probabilities for the assembled rows ``x``, and the version that computed them."""
        raise NotImplementedError


class LocalRoute(Route):
    """A predictor in the same process: rows go straight into its micro-batcher."""

    def __init__(self, predictor: TorchPredictor, threshold: float | None = None):
        if not predictor.ready:
            predictor.load()
        super().__init__(predictor.metadata, threshold)
        self.predictor = predictor

    async def score(self, x: np.ndarray, request_id: str) -> tuple[np.ndarray, str]:
        return await self.predictor.score(x), self.version


class RemoteRoute(Route):
    """A V2 predictor server over REST or gRPC, through one pooled client for the server's life."""

    def __init__(self, metadata: ModelMetadata, host: str, protocol: str, model_name: str, timeout_s: float, threshold: float | None = None):
        super().__init__(metadata, threshold)
        self.host, self.protocol, self.model_name, self.timeout_s = host, protocol, model_name, timeout_s
        self._rest: InferenceRESTClient | None = None
        self._grpc: InferenceGRPCClient | None = None

    async def score(self, x: np.ndarray, request_id: str) -> tuple[np.ndarray, str]:
        features = InferInput("features", list(x.shape), "FP32")
        # JSON, not the binary extension: the predictor's REST fast path takes JSON (gRPC sends raw bytes anyway).
        features.set_data_from_numpy(x, binary_data=self.protocol == "grpc-v2")
        request = InferRequest(self.model_name, [features], request_id=request_id)
        try:
            if self.protocol == "grpc-v2":
                if self._grpc is None:
                    self._grpc = InferenceGRPCClient(self.host, timeout=self.timeout_s)
                response = await self._grpc.infer(request)
            else:
                if self._rest is None:
                    self._rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=self.timeout_s))
                response = await self._rest.infer(f"http://{self.host}", model_name=self.model_name, data=request)
            out = response.get_output_by_name("fraud_probability")
            return out.as_numpy().reshape(-1).astype(np.float32, copy=False), response.model_version or self.version
        except Exception as e:
            raise NotReadyError(f"predictor at {self.host} failed: {type(e).__name__}: {e}") from e


def request_share(request_id: str) -> float:
    """Where a request id falls in [0, 100): uniform over ids, the same for the same id."""
    digest = hashlib.blake2b(request_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _HASH_SPACE * 100.0


class CanarySplit:
    """Chooses the route of each request: the candidate for ``percent`` of request ids, else the champion."""

    def __init__(self, champion: Route, candidate: Route | None = None, percent: float = 0.0):
        if not 0.0 <= percent <= 100.0:
            raise ConfigurationError(f"canary percent must be within 0..100, got {percent}")
        if percent > 0 and candidate is None:
            raise ConfigurationError(f"canary percent {percent} needs a candidate (RTML_CANDIDATE_STORAGE_URI)")
        if candidate is not None and candidate.version == champion.version:
            raise ConfigurationError(
                f"champion and candidate are both version {champion.version}: their metrics could not be told apart"
            )
        self.champion, self.candidate, self.percent = champion, candidate, percent

    @property
    def routes(self) -> list[Route]:
        """The champion, then the candidate if any."""
        return [self.champion] + ([self.candidate] if self.candidate is not None else [])

    def choose(self, request_id: str | None) -> tuple[Route, str]:
        """The route for a request and its id (a fresh uuid4 when the caller sent none)."""
        request_id = request_id or str(uuid.uuid4())
        if self.candidate is None or self.percent <= 0.0:
            return self.champion, request_id
        if self.percent >= 100.0 or request_share(request_id) < self.percent:
            return self.candidate, request_id
        return self.champion, request_id
