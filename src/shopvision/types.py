"""Plain result types returned by the clients."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from shopvision.contract import (
    PROVENANCE_PARAMETER_PREFIX,
    RESNET50_BACKBONE,
    RESNET50_EMBEDDING_DIM,
    SYNTHETIC_BACKBONE,
)
from shopvision.errors import InvalidImageError


@dataclass(frozen=True)
class Prediction:
    label: str
    index: int
    """Position in the output: the ImageNet class index (0-999), or the category's in the shop's head."""
    score: float
    """Softmax probability."""


@dataclass(frozen=True)
class ImageResult:
    """Everything one pass of the model says about one image, or why it failed."""

    predictions: list[Prediction] = field(default_factory=list)
    """Top ImageNet classes."""
    embedding: NDArray[np.float32] | None = None
    """L2-normalised float32 vector, as wide as the served backbone's (``WeightsProvenance.embedding_dim``)."""
    error: InvalidImageError | None = None
    categories: list[Prediction] = field(default_factory=list)
    """Top categories of the shop's own head, when asked for (``categories=k``) and one serves."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def vector(self) -> NDArray[np.float32]:
        """The embedding of an image that succeeded; raises the image's error for one that failed."""
        if self.embedding is None:
            raise self.error or InvalidImageError("no embedding")
        return self.embedding


@dataclass(frozen=True)
class WeightsProvenance:
    """Where weights came from: the one record of it. ``shopvision model build`` writes it next to each
    resnet50 version (``provenance.json``) and into resnet50's config ``parameters``, the SDK reads it back
    from the server, and a categories head names the weights it was trained on with it."""

    source: str
    """Zoo model name, local file path, or ``synthetic``."""
    synthetic: bool
    model_sha256: str | None = None
    """sha256 of the ``model.onnx`` the server loads."""
    backbone: str = "unknown"
    """The network: a known zoo name such as ``resnet50-v1-12`` or ``mobilenetv2-12-int8``, a file's name, or
    ``resnet50-synthetic``."""
    embedding_dim: int = 0
    """The embedding's width (2048 for ResNet50, 1280 for MobileNet v2); the SDK reads the served one from the
    ensemble's metadata."""
    source_sha256: str | None = None
    """sha256 of the weights as obtained, before surgery (for synthetic ones: of the generated graph)."""
    built_at: str | None = None
    seed: int | None = None
    """The seed of synthetic weights."""

    def describe(self) -> str:
        """Which network and which weights: ``resnet50-v1-12 <model sha256> (2048-d)``."""
        return f"{self.backbone} {self.model_sha256} ({self.embedding_dim}-d)"

    def to_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> WeightsProvenance:
        """From a version's ``provenance.json``. Versions built before backbones were a choice were ResNet50."""
        known = {item.name for item in dataclasses.fields(cls)}
        defaults = {"backbone": SYNTHETIC_BACKBONE if record.get("synthetic") else RESNET50_BACKBONE,
                    "embedding_dim": RESNET50_EMBEDDING_DIM}
        return cls(**{**defaults, **{key: value for key, value in record.items() if key in known}})

    def as_parameters(self) -> dict[str, str]:
        """As model-config ``parameters``, which are strings: booleans as true/false, a missing value empty."""
        return {f"{PROVENANCE_PARAMETER_PREFIX}{key}": _parameter_text(value)
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> WeightsProvenance:
        """From model-config ``parameters`` (without their prefix), as :meth:`as_parameters` wrote them."""
        def text(key: str) -> str | None:
            return parameters.get(key) or None

        def number(key: str) -> int | None:
            value = text(key)
            return int(value) if value is not None and value.lstrip("-").isdigit() else None

        return cls(source=text("source") or "unknown", synthetic=parameters.get("synthetic") == "true",
                   model_sha256=text("model_sha256"), backbone=text("backbone") or "unknown",
                   embedding_dim=number("embedding_dim") or 0, source_sha256=text("source_sha256"),
                   built_at=text("built_at"), seed=number("seed"))


def _parameter_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class ServerInfo:
    url: str
    server_version: str
    model: str
    model_versions: list[str]
    max_batch_size: int
    provenance: WeightsProvenance
    dynamic_batching: dict[str, Any]
    """The resnet50 model's dynamic-batching settings as its config states them."""
