"""Where backbone weights come from: the ONNX Model Zoo, a local ONNX file, or synthetic (ResNet50 only)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from shopvision._files import cache_dir, sha256_of
from shopvision.contract import RESNET50_BACKBONE
from shopvision.errors import ModelBuildError

SYNTHETIC = "synthetic"
MIRROR_ENV = "SHOPVISION_WEIGHTS_MIRROR"
"""Base URL that replaces the zoo's, for air-gapped installs (and the download tests)."""
_ZOO_BASE = "https://github.com/onnx/models/raw/main/validated/vision/classification"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ZooModel:
    name: str
    sha256: str
    top1: float
    """ImageNet top-1 published by the ONNX Model Zoo (not measured here)."""
    zoo_folder: str = "resnet/model"
    """Where the zoo keeps it, under ``validated/vision/classification``."""
    architecture: str = "ResNet50 v1"

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"

    def url(self) -> str:
        """The zoo's file, or the mirror's: a mirror holds every known model flat, under its ``filename``."""
        mirror = os.environ.get(MIRROR_ENV)
        base = mirror.rstrip("/") if mirror else f"{_ZOO_BASE}/{self.zoo_folder}"
        return f"{base}/{self.filename}"


ZOO_MODELS = {
    model.name: model
    for model in (
        ZooModel(RESNET50_BACKBONE, "3f03fdef724b22947eed826f1eef1dc5c34151bb4c37d634f1db89dfa2dd1526", 74.97),
        ZooModel("resnet50-v1-12-int8", "c234f30975989788b4405f25253275aae247ab6dbdd34aaa69ab0a59ff76f6d0", 74.77),
        # A small real backbone for cheap CPU nodes, and the one real network these machines hold
        # (../shared/data/mobilenetv2-12-int8/model.onnx is this file, byte for byte).
        ZooModel("mobilenetv2-12-int8", "cc028fe6cae7bc11a4ff53cfc9b79c920e8be65ce33a904ec3e2a8f66d77f95f", 68.30,
                 zoo_folder="mobilenet/model", architecture="MobileNet v2 1.0"),
    )
}
DEFAULT_ZOO_MODEL = RESNET50_BACKBONE


def known_model_by_sha256(sha256: str) -> ZooModel | None:
    """The known zoo model a file is, by content: a local copy keeps its published name."""
    return next((model for model in ZOO_MODELS.values() if model.sha256 == sha256), None)


class WeightsUnavailable(ModelBuildError):
    """The weights could not be fetched; the message says what to do instead."""


class ChecksumMismatch(ModelBuildError):
    """A download's sha256 differs from the published one; nothing was kept."""


def fetch_zoo_model(model: ZooModel, *, timeout_s: float = 30.0) -> Path:
    """The verified zoo file, from the cache or downloaded into it."""
    target = cache_dir("weights") / model.filename
    if target.exists() and sha256_of(target) == model.sha256:
        return target
    download(model.url(), target, expected_sha256=model.sha256, timeout_s=timeout_s)
    return target


def download(url: str, target: Path, *, expected_sha256: str, timeout_s: float = 30.0) -> None:
    """Stream ``url`` to ``target``, verifying sha256; ``target`` appears only if it matches."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    handle, partial_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    partial = Path(partial_name)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            while chunk := response.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise ChecksumMismatch(
                f"refusing {url}: sha256 is {actual}, expected {expected_sha256}; the download was discarded"
            )
        os.replace(partial, target)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        raise WeightsUnavailable(
            f"could not download {url}: {reason}. Without network access, build with "
            f"`--weights {SYNTHETIC}` (seeded random weights, for testing only), pass a local ONNX file, "
            f"or point {MIRROR_ENV} at a mirror holding {target.name}."
        ) from error
    finally:
        partial.unlink(missing_ok=True)
