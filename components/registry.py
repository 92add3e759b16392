"""Model registry: versions with metrics, lineage and stages; a local directory by default.

Layout (the serving side loads exactly this)::

    <root>/<name>/<version>/model.pt        TorchScript: FP32 [N, 15] raw inputs (MODEL_INPUTS order) -> FP32 [N]
    <root>/<name>/<version>/metadata.json   name, version, inputs, threshold, metrics, created_at, lineage, defaults
    <root>/<name>/stages.json               {version: candidate | canary | champion | archived}

Versions are 1, 2, 3, ... A version directory appears complete or not at all (written
under a temporary name, then renamed). The Kubeflow Model Registry backend records the same
versions there as well, through the optional ``model-registry`` client.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from feature_repo.model_inputs import MODEL_INPUTS
from rtml_common.errors import ConfigurationError, InvalidInputError, NotFoundError

MODEL_FILE = "model.pt"
METADATA_FILE = "metadata.json"
STAGES_FILE = "stages.json"
STAGES = ("candidate", "canary", "champion", "archived")


def code_version() -> str:
    """The git commit of the code when known (RTML_CODE_VERSION, else ``git rev-parse``), else 'unknown'."""
    if os.environ.get("RTML_CODE_VERSION"):
        return os.environ["RTML_CODE_VERSION"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


class LocalRegistry:
    """Directory-backed registry; every method is one call so that promotion and rollback are one command."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _model_dir(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise InvalidInputError(f"invalid model name {name!r}")
        return self.root / name

    def versions(self, name: str) -> list[str]:
        """Registered versions, oldest first."""
        d = self._model_dir(name)
        if not d.is_dir():
            return []
        return sorted((p.name for p in d.iterdir() if p.is_dir() and p.name.isdigit()), key=int)

    def metadata(self, name: str, version: str) -> dict:
        path = self._model_dir(name) / str(version) / METADATA_FILE
        if not path.is_file():
            raise NotFoundError(f"model {name!r} has no version {version!r} in {self.root} (versions: {self.versions(name)})")
        return json.loads(path.read_text())

    def model_path(self, name: str, version: str) -> Path:
        self.metadata(name, version)
        return self._model_dir(name) / str(version) / MODEL_FILE

    def stages(self, name: str) -> dict[str, str]:
        path = self._model_dir(name) / STAGES_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def version_in(self, name: str, stage: str) -> str | None:
        """The newest version in ``stage`` (e.g. the champion), or None."""
        found = [v for v, s in self.stages(name).items() if s == stage]
        return max(found, key=int) if found else None

    def register(self, name: str, model_file: Path, metrics: dict, lineage: dict, defaults: dict,
                 threshold: float = 0.5, stage: str = "candidate") -> dict:
        """Copy a validated TorchScript file in as the next version; returns its metadata."""
        from components.train import load_scripted  # torch is heavy: only registration needs it

        load_scripted(Path(model_file))  # never register a broken artifact
        missing = [c for c in MODEL_INPUTS if c not in defaults]
        if missing:
            raise InvalidInputError(f"defaults lack model inputs {missing}")
        if stage not in STAGES:
            raise InvalidInputError(f"unknown stage {stage!r}; expected one of {STAGES}")
        model_dir = self._model_dir(name)
        model_dir.mkdir(parents=True, exist_ok=True)
        tmp = model_dir / f".incoming-{os.getpid()}-{datetime.now().timestamp():.6f}"
        tmp.mkdir()
        shutil.copyfile(model_file, tmp / MODEL_FILE)
        while True:  # rename is atomic and fails when another writer took the number first
            version = str(int(self.versions(name)[-1]) + 1 if self.versions(name) else 1)
            meta = {"name": name, "version": version, "inputs": MODEL_INPUTS, "threshold": threshold, "metrics": metrics,
                    "created_at": datetime.now(timezone.utc).isoformat(), "lineage": lineage,
                    "defaults": {c: float(defaults[c]) for c in MODEL_INPUTS}}
            _write_json(tmp / METADATA_FILE, meta)
            try:
                os.rename(tmp, model_dir / version)
                break
            except OSError:
                continue
        self._put_stage(name, version, stage)
        return meta

    def set_stage(self, name: str, version: str, stage: str) -> dict[str, str]:
        """Put one version in a stage; a new champion archives the previous one. Returns all stages."""
        return self._put_stage(name, version, stage)[1]

    def _put_stage(self, name: str, version: str, stage: str) -> tuple[dict[str, str], dict[str, str]]:
        """Write one version's stage (archiving the previous champion for a new one); returns the stages before and after."""
        if stage not in STAGES:
            raise InvalidInputError(f"unknown stage {stage!r}; expected one of {STAGES}")
        self.metadata(name, version)
        before = self.stages(name)
        stages = dict(before)
        if stage == "champion":
            stages = {v: ("archived" if s == "champion" else s) for v, s in stages.items()}
        stages[str(version)] = stage
        _write_json(self._model_dir(name) / STAGES_FILE, stages)
        return before, stages

    def promote(self, name: str, version: str) -> dict[str, str]:
        """Make ``version`` the champion (the previous champion is archived)."""
        return self.set_stage(name, version, "champion")

    def rollback(self, name: str, version: str | None = None) -> str:
        """Make an earlier version champion again: ``version``, or the newest archived one older than the champion."""
        if version is None:
            champion = self.version_in(name, "champion")
            older = [v for v, s in self.stages(name).items() if s == "archived" and (champion is None or int(v) < int(champion))]
            if not older:
                raise NotFoundError(f"model {name!r} has no archived version older than the champion to roll back to")
            version = max(older, key=int)
        self.promote(name, str(version))
        return str(version)


class KubeflowModelRegistry(LocalRegistry):
    """Keeps the local layout (serving reads it) and records every version in the Kubeflow Model Registry too.

    Each version there carries its metrics, code version and stage as custom properties; stage
    changes (promote, rollback, canary) are mirrored, and archived versions get state ARCHIVED.
    """

    def __init__(self, root: Path, server: str, port: int = 443, author: str = "rtml", storage_uri_prefix: str = "",
                 is_secure: bool | None = None):
        """``server`` with its scheme (``https://...`` or ``http://...``); TLS follows the scheme unless ``is_secure``."""
        super().__init__(root)
        try:
            from model_registry import ModelRegistry
        except ImportError as exc:
            raise ConfigurationError("a Kubeflow Model Registry server is configured but the 'model-registry' "
                                     "package is not installed (pip install model-registry)") from exc
        self.client = ModelRegistry(server, port, author=author, is_secure=is_secure)
        self.storage_uri_prefix = storage_uri_prefix or self.root.as_uri()

    def register(self, name, model_file, metrics, lineage, defaults, threshold=0.5, stage="candidate") -> dict:
        before = self.stages(name)
        # The local register writes stages without mirroring (the version is created there below, with its stage).
        meta = super().register(name, model_file, metrics, lineage, defaults, threshold, stage)
        self.client.register_model(
            name, f"{self.storage_uri_prefix.rstrip('/')}/{name}/{meta['version']}/{MODEL_FILE}",
            model_format_name="pytorch", model_format_version="torchscript", version=meta["version"],
            metadata={k: v for k, v in {**meta["metrics"], "stage": stage, "code_version": lineage.get("code_version", "")}.items()
                      if isinstance(v, (str, int, float, bool))})
        self._mirror(name, before, {v: s for v, s in self.stages(name).items() if v != meta["version"]})
        return meta

    def set_stage(self, name: str, version: str, stage: str) -> dict[str, str]:
        before, after = self._put_stage(name, version, stage)
        self._mirror(name, before, after)
        return after

    def _mirror(self, name: str, before: dict[str, str], after: dict[str, str]) -> None:
        """Write every stage that changed (a new champion also archives the old one) to the server."""
        from model_registry.types import ModelVersionState

        for version, stage in after.items():
            if before.get(version) == stage:
                continue
            found = self.client.get_model_version(name, version)
            if found is None:
                raise NotFoundError(f"model {name!r} version {version} is in {self.root} but not in the Kubeflow Model Registry")
            found.custom_properties = {**(found.custom_properties or {}), "stage": stage}
            found.state = ModelVersionState.ARCHIVED if stage == "archived" else ModelVersionState.LIVE
            self.client.update(found)


def open_registry(root: Path, model_registry_server: str | None = None, model_registry_port: int = 443,
                  author: str = "rtml", storage_uri_prefix: str = "") -> LocalRegistry:
    """The local registry, or the Kubeflow Model Registry backend when a server is given."""
    if model_registry_server:
        return KubeflowModelRegistry(root, model_registry_server, model_registry_port, author, storage_uri_prefix)
    return LocalRegistry(root)
