"""Offline Kubernetes tooling: helm, kubeconform and kustomize via ``go install``, plus JSON schemas.

Nothing here needs a cluster or the internet beyond the Go module proxy:

* :func:`ensure_tools` builds the three CLIs into ``~/.cache/rtml/bin`` once (idempotent).
* :func:`crd_schemas` converts the vendored CRDs (``tests/k8s/crds`` or ``RTML_CRDS_DIR``)
  into kubeconform JSON schemas, following ``crds/README.md``.
* :func:`core_schemas` generates the Kubernetes core schemas from the OpenAPI v2 spec shipped
  in the ``k8s.io/kubernetes`` Go module (``api/openapi-spec/swagger.json``), fetched with
  ``go mod download``; the public schema mirror kubeconform uses by default is not reachable here.

Both schema sets are written as ``{group}_{kind}_{version}.json`` (kind lower-cased, core group
empty), matching kubeconform's ``{{.Group}}_{{.ResourceKind}}_{{.ResourceAPIVersion}}`` template,
and are *strict*: objects with declared properties reject unknown keys.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable

import yaml

from rtml_common.errors import RtmlError

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("RTML_CACHE_DIR", Path.home() / ".cache" / "rtml"))
BIN_DIR = CACHE_DIR / "bin"
SCHEMA_DIR = CACHE_DIR / "schemas"
KUBERNETES_VERSION = "v1.34.4"
SCHEMA_FORMAT = "1"  # bump when the converter changes, so cached schemas are rebuilt

# Pinned so that a cached binary means the same thing on every machine.
TOOLS: dict[str, str] = {
    "helm": "helm.sh/helm/v3/cmd/helm@v3.22.0",
    "kubeconform": "github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0",
    "kustomize": "sigs.k8s.io/kustomize/kustomize/v5@v5.7.1",
}

SCHEMA_LOCATION_TEMPLATE = "{{.Group}}_{{.ResourceKind}}_{{.ResourceAPIVersion}}.json"


class ToolError(RtmlError):
    """A Kubernetes tool could not be installed or a schema could not be produced."""


def go_available() -> bool:
    """True when a ``go`` toolchain is on PATH (everything else here depends on it)."""
    return shutil.which("go") is not None


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOBIN"] = str(BIN_DIR)
    env.setdefault("GOFLAGS", "-buildvcs=false")
    env.setdefault("CGO_ENABLED", "0")
    return env


def tool_path(name: str) -> Path:
    """Path of a cached tool binary (it may not exist yet)."""
    return BIN_DIR / name


def ensure_tools(names: Iterable[str] = tuple(TOOLS)) -> dict[str, Path]:
    """Install the named tools into ``~/.cache/rtml/bin`` when missing; return their paths."""
    if not go_available():
        raise ToolError("`go` is not on PATH: cannot install helm/kubeconform/kustomize")
    BIN_DIR.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        if name not in TOOLS:
            raise ToolError(f"unknown tool {name!r}; known: {sorted(TOOLS)}")
        path = tool_path(name)
        if not path.exists():
            proc = subprocess.run(["go", "install", TOOLS[name]], env=_go_env(), capture_output=True, text=True)
            if proc.returncode != 0 or not path.exists():
                raise ToolError(f"go install {TOOLS[name]} failed: {proc.stderr[-2000:]}")
        paths[name] = path
    return paths


# ---------------------------------------------------------------- control plane binaries

CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
# (module, version, main package)
ETCD = ("go.etcd.io/etcd/server/v3", "v3.6.4", "go.etcd.io/etcd/server/v3")  # etcd of Kubernetes 1.34
KWOK = ("sigs.k8s.io/kwok", "v0.7.0", "sigs.k8s.io/kwok/cmd/kwok")


def _wrapper_go_mod(version: str) -> str:
    """A module requiring k8s.io/kubernetes whose staging modules resolve to their published tags.

    k8s.io/kubernetes replaces its staging modules with ./staging paths, which only apply inside
    its own repository; a dependent module must pin each one to the matching v0.x release.
    """
    k8s_go_mod = (_k8s_module_dir(version) / "go.mod").read_text()
    staging = sorted({line.split()[0] for line in k8s_go_mod.splitlines() if "=> ./staging/" in line})
    minor = version.lstrip("v").split(".", 1)[1]
    replaces = "\n".join(f"\t{m} => {m} v0.{minor}" for m in staging)
    return (f"module rtml.local/k8sbins\n\ngo 1.24.0\n\nrequire k8s.io/kubernetes {version}\n\n"
            f"replace (\n{replaces}\n)\n")


def _version_ldflags(version: str) -> str:
    major, minor = version.lstrip("v").split(".")[:2]
    pairs = {"gitVersion": version, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean",
             "buildDate": "1970-01-01T00:00:00Z"}
    return " ".join(f"-X {pkg}.{k}={v}" for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
                    for k, v in pairs.items())


def _build_module_command(module: tuple[str, str, str], out: Path, env: dict) -> None:
    """Build a module's main package through a wrapper module.

    ``go install path@version`` refuses modules whose go.mod has replace directives (etcd's does);
    requiring them from a throwaway main module sidesteps that and uses their published siblings.
    """
    path, version, package = module
    build = CACHE_DIR / "build" / out.name
    build.mkdir(parents=True, exist_ok=True)
    (build / "go.mod").write_text(f"module rtml.local/{out.name}bin\n\ngo 1.24.0\n\nrequire {path} {version}\n")
    (build / "tools.go").write_text(f'//go:build tools\n\npackage tools\n\nimport _ "{package}"\n')
    for args in (["go", "mod", "tidy", "-e"], ["go", "build", "-trimpath", "-o", str(out), package]):
        proc = subprocess.run(args, cwd=build, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolError(f"{' '.join(args[:3])} for {path}@{version} failed: {proc.stderr[-3000:]}")


def ensure_control_plane(version: str = KUBERNETES_VERSION) -> dict[str, Path]:
    """Build kube-apiserver/-controller-manager/-scheduler, etcd and kwok into the cache (once)."""
    if not go_available():
        raise ToolError("`go` is not on PATH: cannot build the control plane")
    out = CACHE_DIR / "k8s" / version
    out.mkdir(parents=True, exist_ok=True)
    paths = {name: out / name for name in (*CONTROL_PLANE, "etcd", "kwok")}
    env = _go_env()
    missing = [n for n in CONTROL_PLANE if not paths[n].exists()]
    if missing:
        build = CACHE_DIR / "k8s-build"
        build.mkdir(parents=True, exist_ok=True)
        (build / "go.mod").write_text(_wrapper_go_mod(version))
        (build / "tools.go").write_text(
            "//go:build tools\n\npackage tools\n\n"
            + "".join(f'import _ "k8s.io/kubernetes/cmd/{n}"\n' for n in CONTROL_PLANE))
        for args in (["go", "mod", "tidy", "-e"],
                     *(["go", "build", "-trimpath", "-ldflags", _version_ldflags(version), "-o", str(paths[n]),
                        f"k8s.io/kubernetes/cmd/{n}"] for n in missing)):
            proc = subprocess.run(args, cwd=build, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ToolError(f"{' '.join(args[:3])} failed: {proc.stderr[-3000:]}")
    for name, module in (("etcd", ETCD), ("kwok", KWOK)):
        if not paths[name].exists():
            _build_module_command(module, paths[name], env)
    return paths


# ---------------------------------------------------------------- schema conversion


def _strictify(node: Any) -> Any:
    """Turn an OpenAPI v3 (CRD) or v2 (swagger) schema fragment into strict JSON Schema draft 7."""
    if isinstance(node, list):
        return [_strictify(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key == "format" and value == "int-or-string":
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _strictify(v) for k, v in value.items()}
        else:
            out[key] = _strictify(value)
    int_or_string = node.get("x-kubernetes-int-or-string") or node.get("format") == "int-or-string"
    if int_or_string:
        out.pop("type", None)
        out["type"] = ["integer", "string"]
    if node.get("nullable"):
        out.pop("nullable", None)
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = [*kind, "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _schema_file_name(group: str, kind: str, version: str) -> str:
    # kubeconform's {{.Group}} is the apiVersion's first segment: "v1" for the core group.
    return f"{group or version}_{kind.lower()}_{version}.json"


def crds_dir() -> Path:
    """The CRD folder: ``RTML_CRDS_DIR``, else the copy vendored in ``tests/k8s/crds`` (upstream
    KServe, Prometheus Operator, KEDA, Gateway API, Knative and KFP CRDs; see its README)."""
    return Path(os.environ.get("RTML_CRDS_DIR", REPO_ROOT / "tests" / "k8s" / "crds")).resolve()


def crd_schemas(out_dir: Path | None = None, source: Path | None = None) -> Path:
    """Convert every CRD under ``source`` into strict kubeconform schemas in ``out_dir``."""
    source = source or crds_dir()
    out_dir = out_dir or SCHEMA_DIR
    if not source.is_dir():
        raise ToolError(f"CRD folder {source} not found (set RTML_CRDS_DIR)")
    out_dir.mkdir(parents=True, exist_ok=True)
    files = sorted(source.rglob("*.yaml"))
    # Parsing 3 MB of CRD YAML takes seconds: skip it when the inputs and the converter are unchanged.
    fingerprint = json.dumps([SCHEMA_FORMAT, *[(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]])
    stamp = out_dir / ".crds"
    if stamp.exists() and stamp.read_text() == fingerprint:
        return out_dir
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for crd_file in files:
        for doc in yaml.load_all(crd_file.read_text(), Loader=loader):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                schema = _strictify(version.get("schema", {}).get("openAPIV3Schema", {}))
                schema["$schema"] = "http://json-schema.org/draft-07/schema#"
                name = _schema_file_name(spec["group"], spec["names"]["kind"], version["name"])
                (out_dir / name).write_text(json.dumps(schema))
    stamp.write_text(fingerprint)
    return out_dir


def _k8s_module_dir(version: str = KUBERNETES_VERSION) -> Path:
    """Download ``k8s.io/kubernetes@version`` through the Go module proxy; return its directory."""
    if not go_available():
        raise ToolError("`go` is not on PATH: cannot download the Kubernetes OpenAPI spec")
    proc = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
        capture_output=True, text=True, env=_go_env(), cwd=CACHE_DIR if CACHE_DIR.exists() else None,
    )
    if proc.returncode != 0:
        raise ToolError(f"go mod download k8s.io/kubernetes@{version} failed: {proc.stdout[-1000:]}{proc.stderr[-1000:]}")
    return Path(json.loads(proc.stdout)["Dir"])


def _refs(node: Any) -> Iterable[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str):
            yield ref.rsplit("/", 1)[-1]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def swagger_to_schemas(swagger: dict, out_dir: Path) -> int:
    """Write one strict schema per top-level kind of a Kubernetes swagger (v2) document."""
    definitions = swagger["definitions"]
    # Quantity is documented as a string but manifests write `cpu: 1`: accept numbers too.
    fixed = copy.deepcopy(definitions)
    for name, schema in fixed.items():
        if name.endswith("api.resource.Quantity"):
            fixed[name] = {"type": ["string", "number"], "description": schema.get("description", "")}
    strict = {name: _strictify(schema) for name, schema in fixed.items()}
    count = 0
    for name, schema in definitions.items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            if not {"apiVersion", "kind", "metadata"} <= set(schema.get("properties", {})):
                continue
            seen: set[str] = set()
            todo = [name]
            while todo:
                cur = todo.pop()
                if cur in seen:
                    continue
                seen.add(cur)
                todo.extend(_refs(strict[cur]))
            doc = dict(strict[name])
            doc["$schema"] = "http://json-schema.org/draft-07/schema#"
            doc["definitions"] = {d: strict[d] for d in sorted(seen)}
            out = out_dir / _schema_file_name(gvk["group"], gvk["kind"], gvk["version"])
            out.write_text(json.dumps(doc))
            count += 1
    return count


def core_schemas(out_dir: Path | None = None, version: str = KUBERNETES_VERSION) -> Path:
    """Generate strict schemas for the Kubernetes built-in kinds of ``version`` (cached)."""
    out_dir = out_dir or SCHEMA_DIR
    stamp = out_dir / f".core-{version}-{SCHEMA_FORMAT}"
    if stamp.exists():
        return out_dir
    spec = _k8s_module_dir(version) / "api" / "openapi-spec" / "swagger.json"
    if not spec.exists():
        raise ToolError(f"{spec} missing from k8s.io/kubernetes@{version}")
    out_dir.mkdir(parents=True, exist_ok=True)
    swagger = json.loads(spec.read_text())
    # swagger refs look like "#/definitions/io.k8s.api.core.v1.PodSpec": keep them resolvable locally.
    if swagger_to_schemas(swagger, out_dir) == 0:
        raise ToolError(f"no kinds found in {spec}")
    stamp.touch()
    return out_dir


def ensure_schemas() -> Path:
    """Core and CRD schemas in one folder, ready for ``kubeconform -schema-location``."""
    out = core_schemas()
    crd_schemas(out)
    return out


def kubeconform_args(schema_dir: Path) -> list[str]:
    """kubeconform flags for strict, offline validation against ``schema_dir``."""
    return ["-strict", "-summary", "-output", "json", "-schema-location", str(schema_dir / SCHEMA_LOCATION_TEMPLATE)]


def main() -> None:
    """``python -m rtml.k8s_tools``: install tools and schemas, print where they are."""
    paths = ensure_tools()
    schemas = ensure_schemas()
    for name, path in paths.items():
        print(f"{name}: {path}")
    print(f"schemas: {schemas}")


if __name__ == "__main__":
    main()
