"""Metadata filters (``price<50``, ``!=``, ``in``, ``exists``) on both engines, and recall under a selective filter
on HNSW. The oracle is written out per filter, not computed by the filters module."""

from __future__ import annotations

import httpx
import numpy as np
import pytest

from shopvision.catalog import Catalog, Product
from shopvision.catalog.faiss_store import FILTERED_EXACT_MAX, FaissStore
from shopvision.catalog.filters import Condition, FilterError, parse_condition
from tests.support.vectors import clustered_vectors
from tests.test_catalog_stores import ENGINES


def shop(count: int) -> list[Product]:
    """Prices 0.00 to 99.50 (some as '12.50 USD', which is text), brands, a few products without a brand."""
    items = []
    for i in range(count):
        extra = {"price": f"{(i * 7) % 200 / 2:.2f}", "brand": ("acme", "zenith", "orbit")[i % 3],
                 "stock": str(i % 5), "colour": ("red", "blue")[i % 2]}
        if i % 10 == 0:
            del extra["brand"]
        if i % 25 == 0:
            extra["price"] = f"{i % 100}.50 USD"
        items.append(Product(f"sku-{i}", "", f"{i:064x}", "shoe", extra))
    return items


ORACLES = {
    "price<20": lambda e: not e["price"].endswith("USD") and float(e["price"]) < 20,
    "price>=90.5": lambda e: not e["price"].endswith("USD") and float(e["price"]) >= 90.5,
    "price<=1": lambda e: not e["price"].endswith("USD") and float(e["price"]) <= 1,
    "stock>3": lambda e: int(e["stock"]) > 3,
    "brand!=acme": lambda e: "brand" in e and e["brand"] != "acme",
    "brand in (acme, orbit)": lambda e: e.get("brand") in ("acme", "orbit"),
    "brand exists": lambda e: "brand" in e,
    "colour=red": lambda e: e["colour"] == "red",
    "price=25.50 USD": lambda e: e["price"] == "25.50 USD",
}


@pytest.fixture(params=ENGINES)
def filled(request: pytest.FixtureRequest, tmp_path):
    location = str(tmp_path / "catalog") if request.param == "faiss" else str(tmp_path / "catalog.db")
    items, vectors = shop(300), clustered_vectors(300)
    with Catalog.open(location) as catalog:
        catalog.upsert(items, vectors)
        catalog.flush()
        yield catalog, items, vectors


@pytest.mark.parametrize("text", list(ORACLES))
def test_each_operator_keeps_exactly_the_products_it_should(filled, text: str) -> None:
    catalog, items, vectors = filled
    expected = {item.product_id for item in items if ORACLES[text](item.extra)}
    assert 0 < len(expected) < len(items), text  # the filter is a real cut
    found = catalog.search(vectors[0], k=len(items), where=[text])
    assert {hit.product_id for hit in found} == expected
    assert [hit.score for hit in found] == sorted((hit.score for hit in found), reverse=True)


def test_filters_combine_and_the_old_mapping_still_means_equality(filled) -> None:
    catalog, items, vectors = filled
    both = {item.product_id for item in items if ORACLES["price<20"](item.extra) and item.extra["colour"] == "red"}
    assert {hit.product_id for hit in catalog.search(vectors[1], k=300, where=["price<20", "colour=red"])} == both
    red = {item.product_id for item in items if item.extra["colour"] == "red"}
    assert {hit.product_id for hit in catalog.search(vectors[1], k=300, where={"colour": "red"})} == red
    similar = catalog.similar("sku-3", k=300, where=[Condition("stock", ">", ("3",))])
    assert similar is not None and {hit.product_id for hit in similar} == {
        item.product_id for item in items if int(item.extra["stock"]) > 3 and item.product_id != "sku-3"}
    assert "#numbers" not in catalog.get("sku-3").extra  # type: ignore[union-attr]  # Milvus's number index
    catalog.update_metadata("sku-3", {"price": "1.00"})  # a rewrite moves the product into price<20
    assert "sku-3" in {hit.product_id for hit in catalog.search(vectors[3], k=300, where=["price<20"])}


@pytest.mark.parametrize("text, message", [
    ("price<cheap", "compares numbers"), ("price", "is not a filter"), ("brand in ()", "takes 1 to"),
    ("<5", "is not a filter"), ("price<nan", "compares numbers"), ("price<1e999", "compares numbers"),
])
def test_a_bad_filter_is_refused_with_what_to_write(text: str, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_condition(text)


def test_values_may_hold_operators_and_quotes() -> None:
    assert parse_condition("availability=in stock") == Condition("availability", "=", ("in stock",))
    assert parse_condition("note=a<b") == Condition("note", "=", ("a<b",))
    assert parse_condition("size in (S, M,L)") == Condition("size", "in", ("S", "M", "L"))
    assert parse_condition(" gtin  EXISTS ") == Condition("gtin", "exists")


def test_a_version_2_catalog_is_migrated_and_compares_its_numbers(tmp_path) -> None:
    import sqlite3

    location = tmp_path / "catalog"
    items, vectors = shop(60), clustered_vectors(60)
    with Catalog.open(location) as catalog:
        catalog.upsert(items, vectors)
    with sqlite3.connect(location / "catalog.sqlite") as db:  # as version 2 left it: no number index
        db.execute("DROP TABLE product_numbers")
        db.execute("UPDATE metadata SET value = '2' WHERE name = 'schema_version'")
    with Catalog.open(location) as catalog:
        found = {hit.product_id for hit in catalog.search(vectors[0], k=60, where=["price<20"])}
        assert found == {item.product_id for item in items if ORACLES["price<20"](item.extra)}


def test_a_selective_filter_on_hnsw_still_returns_k_of_100k(tmp_path) -> None:
    """100,000 products in an HNSW graph, 1 % of them passing: the k nearest passing ones, as exact search has."""
    rng = np.random.default_rng(7)
    count, width, k = 100_000, 64, 10
    centres = rng.normal(size=(200, width))
    vectors = centres[rng.integers(0, 200, size=count)] + 0.3 * rng.normal(size=(count, width))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    chosen = rng.permutation(count)[: count // 100]  # 1 %, scattered over every cluster
    items = [Product(f"p{i}", "", f"{i:064x}", "x", {"sale": "yes"} if i in set(chosen.tolist()) else {"sale": "no"})
             for i in range(count)]
    store = FaissStore(tmp_path / "catalog", index="hnsw")
    with Catalog(store) as catalog:
        for start in range(0, count, 20_000):
            catalog.upsert(items[start:start + 20_000], vectors[start:start + 20_000])
        catalog.flush()
        assert catalog.stats().index == "hnsw" and len(chosen) <= FILTERED_EXACT_MAX
        queries = vectors[rng.integers(0, count, size=20)]
        on_sale = vectors[np.sort(chosen)]
        for query in queries:
            exact = np.sort(chosen)[np.argsort(-(on_sale @ query), kind="stable")[:k]]
            found = catalog.search(query, k=k, where=["sale=yes"])
            assert len(found) == k
            assert [hit.product_id for hit in found] == [f"p{i}" for i in exact]


def test_the_service_takes_the_filters_and_refuses_a_bad_one_with_422(stub_triton, tmp_path) -> None:
    import base64
    import json

    from shopvision.api.settings import ApiSettings
    from shopvision.samples import product_jpeg
    from tests.support.search_service import ServiceThread

    settings = ApiSettings(triton_url=stub_triton.url, catalog=str(tmp_path / "catalog"), api_key="writer")
    photos = [product_jpeg(seed, size=(64, 64)) for seed in range(12)]
    lines = [json.dumps({"op": "put", "product_id": f"p{i}", "image": base64.b64encode(photo).decode(),
                         "metadata": {"price": f"{i * 10}", "brand": ("acme", "zenith")[i % 2]}})
             for i, photo in enumerate(photos)]
    with ServiceThread(settings) as service, service.client(headers={"X-API-Key": "writer"}) as http:
        answer = http.post("/v1/products:bulk", content="\n".join(lines),
                           headers={"Content-Type": "application/x-ndjson"})
        assert answer.json()["succeeded"] == 12

        def search(*where: str) -> httpx.Response:
            return http.post("/v1/search", params={"k": 12, "where": list(where)},
                             files={"image": ("q.jpg", photos[0], "image/jpeg")})

        found = search("price<50", "brand!=zenith").json()["results"]
        assert sorted(hit["product_id"] for hit in found) == ["p0", "p2", "p4"]
        found = search("brand in (zenith)", "price>=100").json()["results"]
        assert sorted(hit["product_id"] for hit in found) == ["p11"]
        refused = search("price<cheap")
        assert refused.status_code == 422 and "compares numbers" in refused.json()["detail"]
        assert search("colour exists").status_code == 422  # no product has the column: said so


def test_a_feed_declares_a_numeric_column() -> None:
    import io

    from shopvision.catalog.feeds import FeedMapping, FeedRow, RowProblem, read_rows

    tsv = b"id\timage_link\tprice\na\thttps://x/a.jpg\t12.00 USD\nb\thttps://x/b.jpg\tcall us\nc\thttps://x/c.jpg\t7\n"
    rows = list(read_rows(io.BytesIO(tsv), "tsv", FeedMapping(numbers=frozenset({"price"}))))
    assert rows[0] == FeedRow(2, "a", "https://x/a.jpg", (), {"price": "12.00", "price_unit": "USD"})
    assert isinstance(rows[1], RowProblem)
    assert rows[1].reason == "price: 'call us' is not a number (declared with --number)"
    assert rows[2] == FeedRow(4, "c", "https://x/c.jpg", (), {"price": "7"})
