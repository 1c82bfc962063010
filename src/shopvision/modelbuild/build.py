"""``shopvision model build``: backbone weights (zoo, local file or synthetic ResNet50) into the built repository."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import onnx

from shopvision._files import atomic_write, sha256_of
from shopvision.contract import MODEL_FILE, SYNTHETIC_BACKBONE
from shopvision.errors import ModelBuildError
from shopvision.modelbuild.surgery import canonicalize, embedding_width
from shopvision.modelbuild.synthetic import build_synthetic_resnet50
from shopvision.modelbuild.weights import (
    DEFAULT_ZOO_MODEL,
    SYNTHETIC,
    ZOO_MODELS,
    WeightsUnavailable,
    fetch_zoo_model,
    known_model_by_sha256,
)
from shopvision.repository.files import ModelRepository, assemble, ensure_python_runner
from shopvision.repository.records import write_weights_provenance
from shopvision.types import WeightsProvenance

AUTO = "auto"
"""Real zoo weights when the network allows, synthetic ones (with a warning) when not."""


@dataclass(frozen=True)
class BuildResult:
    model_path: Path
    provenance: WeightsProvenance
    fallback_reason: str | None = None
    """Why ``auto`` fell back to synthetic weights, if it did."""


def build_model(weights: str, repository: Path, *, template: Path | None = None, version: int = 1,
                seed: int = 0, embedding_node: str | None = None) -> BuildResult:
    """Build ``repository/resnet50/<version>/model.onnx`` from ``weights`` atomically.

    ``weights`` is any ImageNet-style ONNX classifier (NCHW float input at 224, 1000 classes, fp32 or quantised),
    a known zoo name, ``auto`` or ``synthetic``. The served model's step keeps the name ``resnet50`` whatever
    the backbone (clients, dashboards and perf_analyzer address it by that name); its identity and embedding
    width are in the provenance every config states. ``embedding_node`` names the node whose output is the
    embedding where inspection cannot find the global-average pool.
    With ``template``, the repository is (re)assembled from it first; without, it must be built already.
    """
    files = assemble(template, repository) if template is not None else ModelRepository(repository)
    source_model, provenance_source, source_sha, fallback_reason = _resolve_source(weights, seed=seed)
    served = canonicalize(source_model, embedding_node=embedding_node)
    version_dir = files.model_dir / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    ensure_python_runner(files.model_dir, version_dir)
    model_path = version_dir / MODEL_FILE
    atomic_write(model_path, served.SerializeToString())
    provenance = WeightsProvenance(
        source=provenance_source,
        source_sha256=source_sha,
        model_sha256=sha256_of(model_path),
        synthetic=provenance_source == SYNTHETIC,
        built_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seed=seed if provenance_source == SYNTHETIC else None,
        backbone=_backbone_name(provenance_source, source_sha),
        embedding_dim=embedding_width(served),
    )
    write_weights_provenance(version_dir, provenance)
    # Under `latest` the newest build is what serves; under `specific` (after a promotion) a new
    # version serves only once `shopvision model promote` has checked it.
    files.restore_serving_state()
    return BuildResult(model_path, provenance, fallback_reason)


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


def _backbone_name(source: str, source_sha256: str) -> str:
    """The zoo's name for a known file wherever it came from; a local file's own name otherwise."""
    if source == SYNTHETIC:
        return SYNTHETIC_BACKBONE
    known = known_model_by_sha256(source_sha256)
    if known is not None:
        return known.name
    return Path(source).stem


def _synthetic(seed: int) -> tuple[onnx.ModelProto, str, str]:
    model = build_synthetic_resnet50(seed=seed)
    return model, SYNTHETIC, hashlib.sha256(model.SerializeToString()).hexdigest()


def _load_zoo(name: str) -> tuple[onnx.ModelProto, str, str]:
    path = fetch_zoo_model(ZOO_MODELS[name])
    return onnx.load(str(path)), name, ZOO_MODELS[name].sha256


def _load_local(path: Path) -> tuple[onnx.ModelProto, str, str]:
    if not path.is_file():
        known = ", ".join([AUTO, SYNTHETIC, *ZOO_MODELS])
        raise ModelBuildError(f"--weights {path}: no such file (or use one of: {known})")
    return onnx.load(str(path)), str(path.resolve()), sha256_of(path)


