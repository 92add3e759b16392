"""Settings of the local runtime and CLI (the deployable that runs everything on one machine)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from feature_repo.store import FeatureStoreSettings
from rtml_common.settings import KafkaSettings


class RuntimeSettings(KafkaSettings, FeatureStoreSettings):
    """The local stack: where it keeps state, and whether it starts its own Kafka broker.

    ``kafka_bootstrap`` left at its default means "start a local broker"; set
    ``RTML_KAFKA_BOOTSTRAP`` to use an existing cluster instead.
    """

    kafka_bootstrap: str = Field("", description="Existing Kafka cluster; empty starts a local KRaft broker.")
    registry_dir: Path | None = Field(None, description="Local model registry directory; <home>/registry when unset.")
    model_registry_server: str = Field(
        "", description="Kubeflow Model Registry REST address with scheme (https://...); empty keeps the local registry only.")
    model_registry_port: int = Field(443, description="Port of the Kubeflow Model Registry server.")
    model_name: str = Field("fraud-detector", description="Name models are registered and served under.")
    http_port: int = Field(8080, description="V2 REST port of the local model server.")
    grpc_port: int = Field(8081, description="V2 gRPC port of the local model server.")
    engine_metrics_port: int = Field(9100, description="/metrics port of the local streaming engine.")

    @property
    def registry_path(self) -> Path:
        return self.registry_dir or self.home / "registry"

    @property
    def pids(self) -> Path:
        return self.home / "pids"
