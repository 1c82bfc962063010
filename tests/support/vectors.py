"""Generated embeddings for the tests: unit vectors around random centres, the shape of real product
embeddings (not uniform noise)."""

from __future__ import annotations

import numpy as np

from shopvision.contract import RESNET50_EMBEDDING_DIM
from shopvision.types import WeightsProvenance


def clustered_vectors(count: int, *, clusters: int = 50, seed: int = 0, spread: float = 0.35) -> np.ndarray:
    """Unit vectors around random centres: the shape of real product embeddings, not uniform noise."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, RESNET50_EMBEDDING_DIM))
    vectors = centres[rng.integers(0, clusters, size=count)] + spread * rng.normal(size=(count, RESNET50_EMBEDDING_DIM))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def labelled_vectors(categories: int, per_category: int, *, seed: int, width: int = 2048
                     ) -> tuple[np.ndarray, list[str]]:
    """Unit vectors around one random direction per category, as embeddings of distinct products are."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(categories, width))
    vectors = np.vstack([centres[c] + rng.normal(scale=2.5, size=(per_category, width)) for c in range(categories)])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32), [f"cat-{c}" for c in range(categories) for _ in range(per_category)]


def served_weights(synthetic: bool = True) -> WeightsProvenance:
    """Provenance of weights a head is trained on, as the server would state it."""
    return WeightsProvenance(source="synthetic" if synthetic else "resnet50-v1-12", synthetic=synthetic,
                             model_sha256="ab" * 32)
