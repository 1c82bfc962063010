"""Catalog and SDK values as the API's response models (:mod:`shopvision.api.schemas`)."""

from __future__ import annotations

from urllib.parse import quote

from shopvision.api.schemas import ClassScore, PhotoRecord, ProductHit, ProductRecord, Provenance
from shopvision.catalog import CATEGORY_COLUMN, Product, SearchHit
from shopvision.types import Prediction, WeightsProvenance

SCORE_DECIMALS = 6
"""Scores in answers are rounded to this many decimals."""


def image_url(product_id: str, photo: int = 0) -> str:
    """A product's photo: its main one, or ``?photo=N`` for another."""
    return f"/v1/products/{quote(product_id, safe='')}/image" + (f"?photo={photo}" if photo else "")


def photo_urls(product_id: str, photos: int) -> list[str]:
    return [image_url(product_id, photo) for photo in range(photos)]


def hits(found: list[SearchHit]) -> list[ProductHit]:
    return [ProductHit(product_id=hit.product_id, score=round(hit.score, SCORE_DECIMALS), label=hit.label,
                       category=hit.extra.get(CATEGORY_COLUMN), extra=hit.extra,
                       image_url=image_url(hit.product_id, hit.photo), photo=hit.photo,
                       photo_urls=photo_urls(hit.product_id, max(1, len(hit.photos))))
            for hit in found]


def scores(predictions: list[Prediction]) -> list[ClassScore]:
    return [ClassScore(label=p.label, index=p.index, score=round(p.score, SCORE_DECIMALS)) for p in predictions]


def record(product: Product) -> ProductRecord:
    return ProductRecord(product_id=product.product_id, label=product.label, extra=product.extra,
                         content_sha256=product.content_sha256, image_url=image_url(product.product_id),
                         photos=[PhotoRecord(image_url=image_url(product.product_id, number),
                                             content_sha256=photo.content_sha256)
                                 for number, photo in enumerate(product.photos)])


def provenance(served: WeightsProvenance) -> Provenance:
    return Provenance(source=served.source, synthetic=served.synthetic, model_sha256=served.model_sha256,
                      backbone=served.backbone, embedding_dim=served.embedding_dim)
