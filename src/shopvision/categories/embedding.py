"""Embeddings of labelled photos: through the server, or the vectors a catalog already stores."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from shopvision._files import sha256_of
from shopvision.categories.dataset import LabelledPhoto

if TYPE_CHECKING:
    from shopvision.aio import Progress
    from shopvision.catalog import Catalog
    from shopvision.client import Client


@dataclass
class EmbeddedPhotos:
    photos: list[LabelledPhoto]
    """The photos that were embedded, in the order of ``vectors``' rows."""
    vectors: NDArray[np.float32]
    digests: list[str]
    """sha256 of each photo's bytes: the training set's identity."""
    from_catalog: int = 0
    """How many vectors were the catalog's own (the photo unchanged since it was indexed)."""
    failed: list[tuple[str, str]] = field(default_factory=list)
    """(photo, reason) of photos that could not be read or that the server refused."""

    def training_set_sha256(self) -> str:
        """One hash of every (category, photo content) pair: the same photos and labels hash the same."""
        lines = sorted(f"{photo.category}\t{digest}\n" for photo, digest in zip(self.photos, self.digests,
                                                                                 strict=True))
        return hashlib.sha256("".join(lines).encode()).hexdigest()


def embed_photos(photos: list[LabelledPhoto], client: Client, *, catalog: Catalog | None = None,
                 progress: Progress | None = None) -> EmbeddedPhotos:
    """Embed every photo, reusing a catalog's vector where the photo is a product whose file is unchanged.

    Photos are hashed here and read again by the client when their request is sent, so memory holds one
    request's photos at a time, not the whole training set."""
    contents: list[tuple[LabelledPhoto, str]] = []
    failed: list[tuple[str, str]] = []
    for photo in photos:
        try:
            digest = sha256_of(photo.path)
        except OSError as error:
            failed.append((str(photo.path), f"cannot read: {error.strerror or error}"))
            continue
        contents.append((photo, digest))
    stored: dict[int, NDArray[np.float32]] = {}
    if catalog is not None:
        catalog.check_model(client.provenance(), url=client.url)
        for position, (photo, digest) in enumerate(contents):
            known = catalog.stored(photo.product_id) if photo.product_id else None
            if known is not None and known[0].content_sha256 == digest:
                stored[position] = known[1][0]  # the main photo's vector
    to_embed = [position for position in range(len(contents)) if position not in stored]
    results = client.analyze([contents[position][0].path for position in to_embed], top_k=0, on_error="report",
                             progress=progress)
    embedded = dict(zip(to_embed, results, strict=True))
    kept: list[tuple[LabelledPhoto, str, NDArray[np.float32]]] = []
    for position, (photo, digest) in enumerate(contents):
        if position in stored:
            kept.append((photo, digest, stored[position]))
            continue
        result = embedded[position]
        if result.error is not None:
            failed.append((str(photo.path), result.error.reason))
        else:
            kept.append((photo, digest, result.vector))
    vectors = (np.stack([vector for _, _, vector in kept]).astype(np.float32, copy=False) if kept
               else np.empty((0, client.provenance().embedding_dim), dtype=np.float32))
    return EmbeddedPhotos(photos=[photo for photo, _, _ in kept], vectors=vectors,
                          digests=[digest for _, digest, _ in kept], from_catalog=len(stored), failed=failed)
