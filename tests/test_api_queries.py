"""The queries a shop asks of its catalog through the search service (issue 27, first part): metadata changed
without re-embedding, the catalog listed a page at a time, results paged and cut at a score. Offline: the KServe
v2 stub stands in for Triton (it counts the inferences it answers), the catalog is a real FAISS one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from shopvision.api.settings import ApiSettings
from shopvision.contract import MAX_METADATA_BYTES, MAX_METADATA_FIELDS
from shopvision.samples import product_jpeg
from tests.support.search_service import ServiceThread
from tests.support.stub_triton import StubTriton
from tests.test_api_offline import image, problem

WRITER = "writer-key"
PRODUCTS = 30
MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}


@pytest.fixture(scope="module")
def service(stub_triton: StubTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    settings = ApiSettings(triton_url=stub_triton.url, catalog=str(tmp_path_factory.mktemp("catalog") / "index"),
                           api_key=WRITER)
    with ServiceThread(settings) as running, running.client(headers={"X-API-Key": WRITER}) as http:
        for index in range(PRODUCTS):
            metadata = {"price": str(10 + index), "colour": ("red", "blue", "green")[index % 3]}
            response = http.put(f"/v1/products/p{index:02d}", files=image(product_jpeg(index, size=(64, 64))),
                                data={"metadata": json.dumps(metadata)})
            assert response.status_code == 201, response.text
        yield running


def test_a_metadata_patch_changes_fields_and_embeds_nothing(service, stub_triton) -> None:
    with service.client(headers={"X-API-Key": WRITER}) as http:
        query = product_jpeg(4, size=(64, 64))
        before = http.post("/v1/search", files=image(query), params={"k": 3}).json()["results"]
        photo_before = http.get("/v1/products/p04").json()["content_sha256"]
        inferences = stub_triton.inferences
        patched = http.patch("/v1/products/p04", content=json.dumps({"price": "9.99", "brand": "acme",
                                                                     "colour": None}), headers=MERGE_PATCH)
        assert patched.status_code == 200, patched.text
        assert patched.json()["extra"] == {"price": "9.99", "brand": "acme"}
        assert stub_triton.inferences == inferences  # nothing was embedded again
        record = http.get("/v1/products/p04").json()
        assert record["extra"] == {"price": "9.99", "brand": "acme"}
        assert record["content_sha256"] == photo_before
        assert http.get("/v1/products/p04/image").content == query  # the photo kept
        after = http.post("/v1/search", files=image(query), params={"k": 3}).json()["results"]
        assert [hit["product_id"] for hit in after] == [hit["product_id"] for hit in before]  # the vector kept
        assert after[0]["score"] == pytest.approx(before[0]["score"])
        branded = http.post("/v1/search", files=image(query), params={"where": "brand=acme"}).json()["results"]
        assert [hit["product_id"] for hit in branded] == ["p04"]
        # Plain application/json is a merge patch too.
        assert http.patch("/v1/products/p04", json={"brand": None}).json()["extra"] == {"price": "9.99"}


def test_a_metadata_patch_is_refused_as_a_write_is(service) -> None:
    with service.client() as http:
        problem(http.patch("/v1/products/p05", json={"price": "1"}), 401)
    with service.client(headers={"X-API-Key": WRITER}) as http:
        problem(http.patch("/v1/products/nosuch", json={"price": "1"}), 404, "Unknown product")
        problem(http.patch("/v1/products/p05", content=b"price=1",
                           headers={"Content-Type": "application/x-www-form-urlencoded"}), 415)
        for body in ('{"price": 1}', '[1]', '{"a": {"b": "c"}}', "{", '{"a": "\\ud800"}'):
            problem(http.patch("/v1/products/p05", content=body, headers=MERGE_PATCH), 422)
        problem(http.patch("/v1/products/p05", json={"description": "x" * MAX_METADATA_BYTES}), 422)
        too_many = {f"field{n}": "x" for n in range(MAX_METADATA_FIELDS)}  # with price and colour: past the bound
        problem(http.patch("/v1/products/p05", json=too_many), 422)
        problem(http.patch("/v1/products/p05/image", json={"price": "1"}), 422, "Ambiguous product id")
        assert http.get("/v1/products/p05").json()["extra"] == {"price": "15", "colour": "green"}  # all refused


def test_the_catalog_lists_a_page_at_a_time_with_a_cursor(service) -> None:
    with service.client() as http:
        seen, cursor, pages = [], None, 0
        while True:
            params = {"limit": 8, **({"cursor": cursor} if cursor else {})}
            page = http.get("/v1/products", params=params).json()
            seen += [product["product_id"] for product in page["products"]]
            pages += 1
            assert len(page["products"]) <= 8
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == sorted(seen) and len(set(seen)) == len(seen)
        assert {f"p{index:02d}" for index in range(PRODUCTS)} <= set(seen) and pages >= 4
        first = http.get("/v1/products", params={"limit": 2}).json()["products"][0]
        assert first["image_url"] == f"/v1/products/{quote(first['product_id'], safe='')}/image"
        problem(http.get("/v1/products", params={"limit": 0}), 422)
        problem(http.get("/v1/products", params={"limit": 10_000}), 422)
        assert http.get("/v1/products", params={"cursor": "~"}).json() == {"products": [], "next_cursor": None}


def test_results_page_with_offset_and_stop_at_a_score(service) -> None:
    with service.client() as http:
        query = image(product_jpeg(7, size=(64, 64)))
        ranking = http.post("/v1/search", files=query, params={"k": 20}).json()["results"]
        second = http.post("/v1/search", files=query, params={"k": 5, "offset": 5}).json()["results"]
        assert [hit["product_id"] for hit in second] == [hit["product_id"] for hit in ranking[5:10]]
        threshold = ranking[3]["score"]
        above = http.post("/v1/search", files=query, params={"k": 20, "score_threshold": threshold}).json()["results"]
        assert [hit["product_id"] for hit in above] == [hit["product_id"] for hit in ranking[:4]]
        assert all(hit["score"] >= threshold for hit in above)
        similar = http.get("/v1/products/p07/similar", params={"k": 20}).json()["results"]
        paged = http.get("/v1/products/p07/similar", params={"k": 4, "offset": 4}).json()["results"]
        assert [hit["product_id"] for hit in paged] == [hit["product_id"] for hit in similar[4:8]]
        problem(http.post("/v1/search", files=query, params={"k": 100, "offset": 950}), 422)
        problem(http.post("/v1/search", files=query, params={"score_threshold": 2}), 422)
        problem(http.post("/v1/search", files=query, params={"offset": -1}), 422)
