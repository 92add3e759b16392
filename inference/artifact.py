"""Model artifacts: where a model version lives and what its metadata says.

A model version is a directory holding ``model.pt`` (TorchScript, FP32 [N, 15] raw inputs in
``MODEL_INPUTS`` order -> FP32 [N] fraud probabilities) and ``metadata.json``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from feature_repo.model_inputs import MODEL_INPUTS
from rtml_common.errors import ConfigurationError, NotFoundError

MODEL_FILE = "model.pt"
METADATA_FILE = "metadata.json"


@dataclass(frozen=True)
class ModelMetadata:
    """The parts of ``metadata.json`` serving relies on."""

    name: str
    version: str
    inputs: list[str]
    threshold: float
    defaults: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict, where: str) -> "ModelMetadata":
        try:
            meta = cls(
                name=str(raw["name"]),
                version=str(raw["version"]),
                inputs=list(raw["inputs"]),
                threshold=float(raw.get("threshold", 0.5)),
                defaults={k: float(v) for k, v in (raw.get("defaults") or {}).items()},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigurationError(f"{where}: metadata.json is invalid ({type(e).__name__}: {e})") from e
        if meta.inputs != MODEL_INPUTS:
            raise ConfigurationError(
                f"{where}: the model's inputs {meta.inputs} differ from feature_repo.model_inputs.MODEL_INPUTS {MODEL_INPUTS}"
            )
        return meta

    def default_vector(self) -> "list[float]":
        """Per-input fill values for entities with no online features (0 where the model gave none)."""
        return [self.defaults.get(name, 0.0) for name in MODEL_INPUTS]


def read_metadata(model_dir: Path) -> ModelMetadata:
    """Parse ``<model_dir>/metadata.json``."""
    path = model_dir / METADATA_FILE
    if not path.is_file():
        raise NotFoundError(f"{path} does not exist: not a model version directory")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigurationError(f"{path}: not JSON ({e})") from e
    return ModelMetadata.from_dict(raw, str(path))


STAGES_FILE = "stages.json"


def latest_version_dir(registry_root: Path, name: str) -> Path:
    """The version of ``name`` to serve from a local registry: its champion (``stages.json``, written
    by the training pipeline's register step), else the highest numbered version."""
    model_root = registry_root / name
    versions = [p for p in model_root.glob("*") if p.is_dir() and p.name.isdigit() and (p / METADATA_FILE).is_file()]
    if not versions:
        raise NotFoundError(f"no model version of {name!r} under {model_root}")
    try:
        stages = json.loads((model_root / STAGES_FILE).read_text())
    except (FileNotFoundError, ValueError):
        stages = {}
    # A candidate that failed the quality gate must never be served just because it is newest.
    champions = [p for p in versions if stages.get(p.name) == "champion"]
    return max(champions or versions, key=lambda p: int(p.name))


def resolve_model_dir(storage_uri: str, *, home: Path, model_name: str, model_registry_url: str = "") -> Path:
    """A local directory holding the model version ``storage_uri`` names (downloading when remote)."""
    if not storage_uri:
        return latest_version_dir(home / "registry", model_name)
    parsed = urlparse(storage_uri)
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme == "file" else storage_uri)
        if not path.is_dir():
            raise NotFoundError(f"model directory {path} does not exist")
        return path
    if parsed.scheme == "model-registry":
        return resolve_model_dir(
            _registry_artifact_uri(parsed.netloc, parsed.path.strip("/"), model_registry_url),
            home=home,
            model_name=model_name,
            model_registry_url=model_registry_url,
        )
    # s3://, gs://, https:// ...: kserve's storage helper knows the credentials conventions of KServe pods.
    from kserve_storage import Storage

    out = Path(tempfile.mkdtemp(prefix="rtml-model-"))
    return Path(Storage.download(storage_uri, str(out)))


def _registry_artifact_uri(name: str, version: str, registry_url: str) -> str:
    try:
        from model_registry import ModelRegistry
    except ImportError as e:
        raise ConfigurationError(
            f"model-registry://{name}/{version} needs the 'model-registry' package (pip install model-registry)"
        ) from e
    if not registry_url:
        raise ConfigurationError("model-registry:// URIs need RTML_MODEL_REGISTRY_URL (http://host:port)")
    parsed = urlparse(registry_url)
    registry = ModelRegistry(f"{parsed.scheme}://{parsed.hostname}", parsed.port or 8080, author="rtml-inference", is_secure=parsed.scheme == "https")
    artifact = registry.get_model_artifact(name, version)
    if artifact is None or not artifact.uri:
        raise NotFoundError(f"model registry has no artifact for {name} version {version}")
    return artifact.uri
