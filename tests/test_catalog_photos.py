"""Several photos per product, on both engines: a search answers each product once, scored by its best photo.

The oracle is brute force: a product's score is the largest inner product of the query with any of its photos.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest

from shopvision.catalog import Catalog, Product, ProductPhoto, photos_fingerprint
from tests.support.vectors import clustered_vectors
from tests.test_catalog_stores import ENGINES

PRODUCTS = 120


def shop(count: int = PRODUCTS, *, seed: int = 0) -> tuple[list[Product], np.ndarray, list[int]]:
    """Products of 1 to 4 photos (each photo a vector), the vectors a row a photo, and each product's first row."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 5, size=count).tolist()
    vectors = clustered_vectors(sum(sizes), seed=seed)
    items, starts, start = [], [], 0
    for i, size in enumerate(sizes):
        photos = [ProductPhoto(f"https://shop.example/{i}/{n}.jpg", f"{i:032x}{n:032x}") for n in range(size)]
        items.append(Product(product_id=f"sku-{i}", path=photos[0].path, content_sha256=photos[0].content_sha256,
                             label=("shoe", "bag")[i % 2], extra={"price": str(i)}, more_photos=tuple(photos[1:])))
        starts.append(start)
        start += size
    return items, vectors, starts


def oracle(query: np.ndarray, items: list[Product], vectors: np.ndarray, starts: list[int], k: int,
           keep=lambda product: True) -> list[tuple[str, int]]:
    """(product id, best photo) of the k best products by their best photo."""
    scored = []
    for product, start in zip(items, starts, strict=True):
        if keep(product):
            scores = vectors[start:start + len(product.photos)] @ query
            scored.append((-float(scores.max()), product.product_id, int(scores.argmax())))
    return [(product_id, photo) for _, product_id, photo in sorted(scored)[:k]]


@pytest.fixture(params=[*ENGINES, "faiss-hnsw"])
def catalog(request: pytest.FixtureRequest, tmp_path):
    if request.param == "milvus-lite":
        opened = Catalog.open(str(tmp_path / "catalog.db"))
    else:
        opened = Catalog.open(tmp_path / "catalog", index="hnsw" if request.param == "faiss-hnsw" else "exact")
    with opened:
        yield opened


def test_a_search_answers_each_product_once_by_its_best_photo(catalog) -> None:
    items, vectors, starts = shop()
    catalog.upsert(items, vectors)
    catalog.flush()
    assert catalog.count() == PRODUCTS
    queries = clustered_vectors(20, seed=7)
    for query in queries:
        hits = catalog.search(query, k=10)
        assert [(hit.product_id, hit.photo) for hit in hits] == oracle(query, items, vectors, starts, 10)
        for hit in hits:
            product = items[int(hit.product_id.removeprefix("sku-"))]
            assert hit.photos == product.photos and hit.path == product.photos[hit.photo].path
    # A query that is one product's third photo finds that product, by that photo, at a score of 1.
    many = next(i for i, product in enumerate(items) if len(product.photos) >= 3)
    top = catalog.search(vectors[starts[many] + 2], k=1)[0]
    assert (top.product_id, top.photo, round(top.score, 4)) == (f"sku-{many}", 2, 1.0)
    # Filters keep every photo of the products that pass, and none of the others'.
    passing = {"bag"}
    for query in queries[:5]:
        hits = catalog.search(query, k=5, labels=sorted(passing), where=["price<60"])
        keep = lambda product: product.label in passing and int(product.extra["price"]) < 60  # noqa: E731
        assert [(hit.product_id, hit.photo) for hit in hits] == oracle(query, items, vectors, starts, 5, keep)


def test_the_photos_are_stored_replaced_and_removed_with_their_product(catalog) -> None:
    items, vectors, starts = shop(30)
    catalog.upsert(items, vectors)
    many = next(i for i, product in enumerate(items) if len(product.photos) == 4)
    product_id = f"sku-{many}"
    stored, held = catalog.stored(product_id)
    assert stored == items[many]
    assert np.allclose(held, vectors[starts[many]:starts[many] + 4], atol=1e-6)
    assert catalog.fingerprints()[product_id] == stored.fingerprint == photos_fingerprint(
        [photo.content_sha256 for photo in items[many].photos])
    assert catalog.photo_contents() == {photo.content_sha256 for product in items for photo in product.photos}
    assert catalog.page(after=f"sku-{many - 1}", limit=1) == [items[many]] if many else True

    # Metadata alone: every photo keeps its vector.
    catalog.update_metadata(product_id, {"price": "5"})
    after, kept = catalog.stored(product_id)
    assert after.more_photos == items[many].more_photos and after.extra == {"price": "5"}
    assert np.array_equal(kept, held)

    # Replaced by one photo: the other three are gone from search, not just from the record.
    fourth = vectors[starts[many] + 3]
    replacement = dataclasses.replace(items[many], more_photos=())
    catalog.upsert([replacement], clustered_vectors(1, seed=99))
    catalog.flush()
    assert catalog.stored(product_id)[1].shape[0] == 1
    assert catalog.search(fourth, k=1)[0].product_id != product_id or catalog.search(fourth, k=1)[0].score < 0.999
    assert items[many].more_photos[2].content_sha256 not in catalog.photo_contents()
    assert catalog.count() == 30

    # Removed: all of its photos go.
    other = next(i for i, product in enumerate(items) if len(product.photos) >= 2 and i != many)
    assert catalog.remove([f"sku-{other}"]) == 1
    catalog.flush()
    assert catalog.count() == 29 and catalog.stored(f"sku-{other}") is None
    for photo in range(len(items[other].photos)):
        assert all(hit.product_id != f"sku-{other}" for hit in catalog.search(vectors[starts[other] + photo], k=5))


def test_more_like_this_compares_every_photo(catalog) -> None:
    items, vectors, starts = shop(60)
    catalog.upsert(items, vectors)
    catalog.flush()
    many = next(i for i, product in enumerate(items) if len(product.photos) >= 3)
    own = vectors[starts[many]:starts[many] + len(items[many].photos)]
    best: dict[str, float] = {}
    for product, start in zip(items, starts, strict=True):
        if product.product_id != f"sku-{many}":
            best[product.product_id] = float((vectors[start:start + len(product.photos)] @ own.T).max())
    expected = sorted(best, key=lambda product_id: -best[product_id])[:5]
    assert [hit.product_id for hit in catalog.similar(f"sku-{many}", k=5)] == expected


def test_a_faiss_catalog_reopened_keeps_every_photo(tmp_path) -> None:
    items, vectors, starts = shop(50)
    with Catalog.open(tmp_path / "catalog") as catalog:
        catalog.upsert(items[:25], vectors[:starts[25]])
    with Catalog.open(tmp_path / "catalog") as catalog:  # from the checkpoint, then written past it
        catalog.upsert(items[25:], vectors[starts[25]:])
    with Catalog.open(tmp_path / "catalog") as catalog:
        for query in clustered_vectors(5, seed=3):
            hits = catalog.search(query, k=8)
            assert [(hit.product_id, hit.photo) for hit in hits] == oracle(query, items, vectors, starts, 8)


def test_a_csv_with_a_products_photos_on_several_rows_builds_one_product(stub_triton, tmp_path) -> None:
    """``index build products.csv``: a product's further rows are its further photos; a rebuild skips it while its
    photos are the same bytes in the same order, and embeds it again when one changes."""
    import shopvision
    from shopvision.samples import product_jpeg

    for seed in range(4):
        (tmp_path / f"{seed}.jpg").write_bytes(product_jpeg(seed, size=(96, 96)))
    table = tmp_path / "products.csv"
    table.write_text("product_id,image_path,title\ntote,0.jpg,Tote\nshoe,1.jpg,Shoe\ntote,2.jpg,\ntote,3.jpg,\n")
    with shopvision.Client(stub_triton.url) as client, Catalog.open(tmp_path / "catalog", client=client) as catalog:
        first = catalog.build(table)
        assert (first.added, first.failed) == (2, [])
        tote = catalog.get("tote")
        assert tote is not None and tote.extra == {"title": "Tote"}
        assert [photo.path for photo in tote.photos] == [str(tmp_path / f"{n}.jpg") for n in (0, 2, 3)]
        top = catalog.search((tmp_path / "3.jpg").read_bytes(), k=2)
        assert [(hit.product_id, hit.photo) for hit in top][0] == ("tote", 2) and len({h.product_id for h in top}) == 2
        assert catalog.build(table).unchanged == 2
        (tmp_path / "2.jpg").write_bytes(product_jpeg(9, size=(96, 96)))
        again = catalog.build(table)
        assert (again.updated, again.unchanged) == (1, 1)
        assert catalog.get("tote").photos[1].content_sha256 == hashlib.sha256(  # type: ignore[union-attr]
            (tmp_path / "2.jpg").read_bytes()).hexdigest()
