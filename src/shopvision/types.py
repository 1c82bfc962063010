"""Plain result types returned by the clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

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
    """Where the served weights came from, as the server's model config states it."""

    source: str
    synthetic: bool
    model_sha256: str | None = None
    details: dict[str, str] = field(default_factory=dict)
    backbone: str = "unknown"
    """The network: a known zoo name such as ``resnet50-v1-12`` or ``mobilenetv2-12-int8``, a file's name, or
    ``resnet50-synthetic``."""
    embedding_dim: int = 0
    """The served embedding's width, from the ensemble's metadata (2048 for ResNet50, 1280 for MobileNet v2)."""


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
