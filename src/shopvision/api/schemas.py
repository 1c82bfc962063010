"""The JSON the service answers with (its OpenAPI schema at /docs comes from these)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Provenance(BaseModel):
    source: str = Field(description="Where the served backbone's weights came from")
    synthetic: bool = Field(description="Seeded random weights: classes and similarities mean nothing")
    model_sha256: str | None = None
    backbone: str = Field("unknown", description="The served network, e.g. resnet50-v1-12 or mobilenetv2-12-int8")
    embedding_dim: int = Field(0, description="The width of its embeddings, which the catalog's vectors share")


class ClassScore(BaseModel):
    label: str
    index: int
    score: float


class Classification(BaseModel):
    predictions: list[ClassScore]
    categories: list[ClassScore] = Field(description="Top-3 of the shop's own categories (empty: no head serves)")
    provenance: Provenance


class ProductHit(BaseModel):
    product_id: str
    score: float = Field(description="Cosine similarity to the query (1.0: same direction)")
    label: str = Field(description="Top-1 ImageNet label of the product's photo")
    category: str | None = Field(description="The product's category: the shop's own, or its head's top-1 when "
                                             "indexed (None: neither)")
    extra: dict[str, str] = Field(description="The product's metadata")
    image_url: str = Field(description="The photo that matched best: the product's score is this photo's")
    photo: int = Field(0, description="Which of the product's photos matched (0: its main one)")
    photo_urls: list[str] = Field(default_factory=list, description="All of the product's photos, the main one "
                                                                    "first")


class SearchResult(BaseModel):
    query: list[ClassScore] = Field(description="Top-5 classes of the query photo (empty for 'more like this')")
    categories: list[ClassScore] = Field(description="Top-3 of the shop's own categories of the query photo "
                                                     "(empty: no head serves, or 'more like this')")
    results: list[ProductHit]
    provenance: Provenance


class PhotoRecord(BaseModel):
    image_url: str
    content_sha256: str


class ProductRecord(BaseModel):
    product_id: str
    label: str
    extra: dict[str, str]
    content_sha256: str = Field(description="The main photo's sha256")
    image_url: str = Field(description="The main photo")
    photos: list[PhotoRecord] = Field(default_factory=list, description="All of the product's photos, the main "
                                                                        "one first")


class ProductPage(BaseModel):
    products: list[ProductRecord] = Field(description="In product-id order")
    next_cursor: str | None = Field(description="Pass as cursor= for the next page; null on the last")


class WriteResult(BaseModel):
    product: ProductRecord
    created: bool


class CatalogSummary(BaseModel):
    engine: str
    products: int
    index: str
    labels: dict[str, int]
    filter_columns: list[str] | None = Field(description="Metadata columns search can filter on (None: any)")
    model_source: str | None
    backbone: str | None = Field(None, description="The network that made the catalog's vectors")
    dimension: int = Field(0, description="The width of the catalog's vectors (0: nothing stored yet)")
    demo: str | None = Field(description="Set when the catalog is generated demo data")


class Readiness(BaseModel):
    ready: bool
    checks: dict[str, str]


class BulkLineResult(BaseModel):
    line: int = Field(description="The line of the request body (1 is the first)")
    product_id: str | None = Field(description="The line's product id (None: the line has none)")
    op: str | None = Field(description="put, patch or delete (None: the line has none)")
    status: int = Field(description="What the single-product request would have answered: 201 created, 200 "
                                    "replaced or patched, 204 deleted, or a 4xx/5xx")
    title: str | None = Field(default=None, description="For a failed line, the problem's title")
    detail: str | None = Field(default=None, description="For a failed line, what went wrong")
    content_sha256: str | None = Field(default=None, description="For a put, the stored main photo's sha256")


class BulkResult(BaseModel):
    results: list[BulkLineResult] = Field(description="One per non-empty line, in the body's order")
    succeeded: int
    failed: int
