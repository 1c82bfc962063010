"""``POST /v1/products:bulk`` with no tritonserver (the stub embeds): a result per line, each line as its single
request would be answered, a bad line costing only itself. Part of `make test-fast`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import pytest

from shopvision.api.settings import ApiSettings
from shopvision.contract import MAX_BULK_LINES, MAX_IMAGE_BYTES
from shopvision.samples import product_jpeg
from tests.support.search_service import ServiceThread
from tests.support.stub_triton import StubTriton
from tests.test_api_offline import READER, WRITER, problem

NDJSON = {"Content-Type": "application/x-ndjson", "X-API-Key": WRITER}


def photo(seed: int) -> str:
    return base64.b64encode(product_jpeg(seed, size=(96, 96))).decode()


def body(*lines: object) -> bytes:
    return b"\n".join(line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines) + b"\n"


@pytest.fixture
def service(stub_triton: StubTriton, tmp_path) -> Iterator[ServiceThread]:
    settings = ApiSettings(triton_url=stub_triton.url, catalog=str(tmp_path / "catalog"), api_key=WRITER,
                           read_key=READER)
    with ServiceThread(settings) as running:
        yield running


def test_each_line_gets_the_answer_its_single_request_would(service: ServiceThread, stub_triton: StubTriton) -> None:
    with service.client(headers={"X-API-Key": WRITER}) as http:
        assert http.put("/v1/products/old", content=product_jpeg(1, size=(96, 96)),
                        headers={"Content-Type": "image/jpeg"}).status_code == 201
        before = stub_triton.inferences
        answer = http.post("/v1/products:bulk", headers=NDJSON, content=body(
            {"op": "put", "product_id": "new", "image": photo(2), "metadata": {"price": "9.90", "brand": "Acme"}},
            {"op": "put", "product_id": "old", "image": photo(3)},
            {"op": "patch", "product_id": "new", "metadata": {"price": "8.90", "brand": None}},
            {"op": "patch", "product_id": "nobody", "metadata": {"price": "1"}},
            {"op": "delete", "product_id": "gone-already"},
            b"{not json",
            {"op": "upsert", "product_id": "x"},
            {"op": "put", "product_id": "b64", "image": "not base64!"},
            {"op": "put", "product_id": "text", "image": base64.b64encode(b"<html>").decode()},
            {"op": "put", "product_id": "huge", "image": "A" * (MAX_IMAGE_BYTES // 3 * 4 + 8)},
            {"op": "put", "product_id": "gif", "image": base64.b64encode(b"GIF89a" + b"\0" * 32).decode()},
            {"op": "put", "product_id": "typed", "image": photo(4), "metadata": {"price": 9.9}},
            {"op": "delete", "product_id": "old", "metadata": {}},
            {"op": "put", "product_id": "", "image": photo(5)},
            {"op": "delete", "product_id": "old"},
        ))
        assert answer.status_code == 200, answer.text
        result = answer.json()
        statuses = [(line["line"], line["product_id"], line["status"], line["title"]) for line in result["results"]]
        assert statuses == [
            (1, "new", 201, None), (2, "old", 200, None), (3, "new", 200, None),
            (4, "nobody", 404, "Unknown product"), (5, "gone-already", 404, "Unknown product"),
            (6, None, 422, "Invalid parameters"), (7, "x", 422, "Invalid parameters"),
            (8, "b64", 422, "Invalid parameters"), (9, "text", 415, "Not an image"),
            (10, "huge", 413, "Image too large"), (11, "gif", 400, "Invalid image"),
            (12, "typed", 422, "Invalid parameters"), (13, "old", 422, "Invalid parameters"),
            (14, "", 422, "Invalid product id"), (15, "old", 204, None),
        ]
        assert (result["succeeded"], result["failed"]) == (4, 11)
        assert result["results"][0]["content_sha256"] and "not base64" in result["results"][7]["detail"]
        assert stub_triton.inferences - before <= 2  # the three photos went to the model together
        assert http.get("/v1/products/new").json()["extra"] == {"price": "8.90"}
        assert http.get("/v1/products/old").status_code == 404
        listed = http.get("/v1/products").json()["products"]
        assert [product["product_id"] for product in listed] == ["new"]


def test_whole_requests_are_refused_only_for_what_no_line_can_fix(service: ServiceThread) -> None:
    with service.client() as http:
        line = body({"op": "delete", "product_id": "a"})
        problem(http.post("/v1/products:bulk", content=line, headers={"Content-Type": "application/x-ndjson"}), 401)
        problem(http.post("/v1/products:bulk", content=line,
                          headers={"Content-Type": "application/x-ndjson", "X-API-Key": READER}), 403, "Read-only key")
        problem(http.post("/v1/products:bulk", content=line, headers={**NDJSON, "Content-Type": "application/json"}),
                415, "Not NDJSON")
        problem(http.post("/v1/products:bulk", content=b"\n\n", headers=NDJSON), 422)
        many = body(*[{"op": "delete", "product_id": f"p{n}"} for n in range(MAX_BULK_LINES + 1)])
        assert "at most 256" in problem(http.post("/v1/products:bulk", content=many, headers=NDJSON), 413)["detail"]
        assert http.get("/readyz").status_code == 200  # still serving



def test_a_put_of_several_photos_is_one_product_found_by_any_of_them(service: ServiceThread) -> None:
    images = [photo(seed) for seed in (21, 22, 23)]
    with service.client(headers={"X-API-Key": WRITER}) as http:
        answer = http.post("/v1/products:bulk", headers=NDJSON, content=body(
            {"op": "put", "product_id": "tote", "image": images[0], "additional_images": images[1:],
             "metadata": {"brand": "Acme"}},
            {"op": "put", "product_id": "lone", "image": photo(24)},
            {"op": "put", "product_id": "bad-second", "image": photo(25), "additional_images": ["<html>"]},
            {"op": "put", "product_id": "gif-second", "image": photo(26),
             "additional_images": [base64.b64encode(b"GIF89a" + b"\0" * 32).decode()]},
            {"op": "put", "product_id": "crowded", "image": photo(27), "additional_images": [photo(28)] * 11},
            {"op": "patch", "product_id": "lone", "additional_images": [photo(29)]},
        ))
        results = answer.json()["results"]
        assert [(line["product_id"], line["status"]) for line in results] == [
            ("tote", 201), ("lone", 201), ("bad-second", 422), ("gif-second", 400), ("crowded", 422),
            ("lone", 422)]
        assert "additional_images[0]" in results[2]["detail"] and "additional_images[0]" in results[3]["detail"]
        assert "at most 11" in results[4]["detail"]

        record = http.get("/v1/products/tote").json()
        assert [item["image_url"] for item in record["photos"]] == [
            "/v1/products/tote/image", "/v1/products/tote/image?photo=1", "/v1/products/tote/image?photo=2"]
        for number, encoded in enumerate(images):
            assert http.get("/v1/products/tote/image", params={"photo": number}).content == base64.b64decode(encoded)
            found = http.post("/v1/search", files={"image": ("q.jpg", base64.b64decode(encoded), "image/jpeg")},
                              params={"k": 2}).json()["results"]
            assert (found[0]["product_id"], found[0]["photo"], found[0]["score"]) == ("tote", number, 1.0)
            assert found[0]["image_url"] == record["photos"][number]["image_url"]
            assert found[0]["photo_urls"] == [item["image_url"] for item in record["photos"]]
            assert [hit["product_id"] for hit in found] == ["tote", "lone"]  # each product once
        assert http.get("/v1/products/tote/image", params={"photo": 3}).status_code == 404
        assert http.get("/v1/products/tote/image", params={"photo": 11}).status_code == 422

        # Replaced by one photo: the others are no longer served (their files released), nor found.
        assert http.post("/v1/products:bulk", headers=NDJSON, content=body(
            {"op": "put", "product_id": "tote", "image": images[0]})).json()["results"][0]["status"] == 200
        assert http.get("/v1/products/tote/image", params={"photo": 1}).status_code == 404
        found = http.post("/v1/search", files={"image": ("q.jpg", base64.b64decode(images[2]), "image/jpeg")},
                          params={"k": 1}).json()["results"]
        assert found[0]["score"] < 1.0
        assert len(http.get("/v1/products/tote").json()["photos"]) == 1
