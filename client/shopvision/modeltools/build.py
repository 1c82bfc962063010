"""``shopvision model build``: write a servable ``model.onnx`` and its provenance."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import onnx

from shopvision.contract import MODEL_FILE, PROVENANCE_FILE, PROVENANCE_PARAMETER_PREFIX, RESNET_MODEL
from shopvision.modeltools.sources import (
    DEFAULT_ZOO_MODEL,
    SYNTHETIC,
    ZOO_MODELS,
    WeightsUnavailable,
    fetch_zoo_model,
    sha256_of,
)
from shopvision.modeltools.surgery import canonicalize
from shopvision.modeltools.synthetic import build_synthetic_resnet50

AUTO = "auto"
"""Real zoo weights when the network allows, synthetic ones (with a warning) when not."""
PYTHON_RUNNER = "model.py"
VERSION_POLICY_LINE = re.compile(r"^version_policy: .*$", re.MULTILINE)
_PROVENANCE_BLOCK = re.compile(
    r"(# BEGIN weights provenance[^\n]*\n)(.*?)(# END weights provenance)", re.DOTALL
)


@dataclass(frozen=True)
class Provenance:
    source: str
    """Zoo model name, local file path, or ``synthetic``."""
    source_sha256: str
    """sha256 of the weights as obtained, before surgery (for synthetic: of the generated graph)."""
    model_sha256: str
    """sha256 of the ``model.onnx`` the server loads."""
    synthetic: bool
    built_at: str
    seed: int | None = None

    def as_parameters(self) -> dict[str, str]:
        return {f"{PROVENANCE_PARAMETER_PREFIX}{key}": _text(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class BuildResult:
    model_path: Path
    provenance: Provenance
    fallback_reason: str | None = None
    """Why ``auto`` fell back to synthetic weights, if it did."""


def copy_without_weights(source: Path, target: Path) -> Path:
    """A copy of a model repository (configs, model.py files, labels) without any built weights."""
    shutil.copytree(source, target, symlinks=True,
                    ignore=shutil.ignore_patterns(MODEL_FILE, PROVENANCE_FILE, "__pycache__"))
    return target


def build_model(weights: str, repository: Path, *, version: int = 1, seed: int = 0) -> BuildResult:
    """Build ``repository/resnet50/<version>/model.onnx`` from ``weights`` atomically."""
    source_model, provenance_source, source_sha, fallback_reason = _resolve_source(weights, seed=seed)
    served = canonicalize(source_model)
    model_dir = repository / RESNET_MODEL
    version_dir = model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    _ensure_python_runner(model_dir, version_dir)
    model_path = version_dir / MODEL_FILE
    _atomic_write(model_path, served.SerializeToString())
    provenance = Provenance(
        source=provenance_source,
        source_sha256=source_sha,
        model_sha256=sha256_of(model_path),
        synthetic=provenance_source == SYNTHETIC,
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seed=seed if provenance_source == SYNTHETIC else None,
    )
    _atomic_write(version_dir / PROVENANCE_FILE, (json.dumps(asdict(provenance), indent=2) + "\n").encode())
    if serves_latest(model_dir):
        # Under `latest` the newest build is what serves; under `specific` (after a promotion) a new
        # version serves only once `shopvision model promote` has checked it, which stamps it then.
        stamp_provenance(model_dir, provenance)
    return BuildResult(model_path, provenance, fallback_reason)


def serves_latest(model_dir: Path) -> bool:
    """Whether resnet50's version policy serves the newest version (the default) rather than pinned ones."""
    match = VERSION_POLICY_LINE.search((model_dir / "config.pbtxt").read_text())
    return match is None or "latest" in match.group(0)


def stamp_provenance(model_dir: Path, provenance: Provenance) -> None:
    """Expose provenance as model-config ``parameters`` in every config of the model."""
    block = "".join(
        f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
        for key, value in provenance.as_parameters().items()
    )
    for config in [model_dir / "config.pbtxt", *sorted((model_dir / "configs").glob("*.pbtxt"))]:
        text = config.read_text()
        if not _PROVENANCE_BLOCK.search(text):
            raise ValueError(f"{config} has no '# BEGIN weights provenance' block to rewrite")
        updated = _PROVENANCE_BLOCK.sub(lambda match: match.group(1) + block + match.group(3), text)
        _atomic_write(config, updated.encode())


def _ensure_python_runner(model_dir: Path, version_dir: Path) -> None:
    """The python_ort config runs ``<version>/model.py``; new versions get version 1's."""
    runner = version_dir / PYTHON_RUNNER
    template = model_dir / "1" / PYTHON_RUNNER
    if not runner.exists() and template.exists():
        shutil.copyfile(template, runner)


def read_provenance(version_dir: Path) -> Provenance | None:
    path = version_dir / PROVENANCE_FILE
    if not path.exists():
        return None
    return Provenance(**json.loads(path.read_text()))


def _resolve_source(weights: str, *, seed: int) -> tuple[onnx.ModelProto, str, str, str | None]:
    if weights == AUTO:
        try:
            return (*_load_zoo(DEFAULT_ZOO_MODEL), None)
        except WeightsUnavailable as error:
            return (*_synthetic(seed), str(error))
    if weights == SYNTHETIC:
        return (*_synthetic(seed), None)
    if weights in ZOO_MODELS:
        return (*_load_zoo(weights), None)
    return (*_load_local(Path(weights)), None)


def _synthetic(seed: int) -> tuple[onnx.ModelProto, str, str]:
    model = build_synthetic_resnet50(seed=seed)
    return model, SYNTHETIC, hashlib.sha256(model.SerializeToString()).hexdigest()


def _load_zoo(name: str) -> tuple[onnx.ModelProto, str, str]:
    path = fetch_zoo_model(ZOO_MODELS[name])
    return onnx.load(str(path)), name, ZOO_MODELS[name].sha256


def _load_local(path: Path) -> tuple[onnx.ModelProto, str, str]:
    if not path.is_file():
        known = ", ".join([AUTO, SYNTHETIC, *ZOO_MODELS])
        raise FileNotFoundError(f"--weights {path}: no such file (or use one of: {known})")
    return onnx.load(str(path)), str(path.resolve()), sha256_of(path)


def _atomic_write(path: Path, data: bytes) -> None:
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)


def _text(value: object) -> str:
    """Config parameters are strings: booleans as true/false, a missing value as empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
