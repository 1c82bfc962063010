"""The search service against a real tritonserver and a real catalog, over real HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest
from PIL import Image

import shopvision
from shopvision.api.settings import ApiSettings
from shopvision.catalog import Catalog, CatalogItem
from shopvision.contract import MAX_FILTER_VALUES, MAX_IMAGE_BYTES, MAX_METADATA_BYTES
from shopvision.samples import product_jpeg
from tests.support.images import write_catalog
from tests.support.search_service import ServiceThread, index_photos
from tests.support.servers import API_KEY, RunningServer, start_server
from tests.support.threads import RecordingThread, join_all
from tests.test_bad_input import BAD_INPUTS

pytestmark = pytest.mark.integration
WRITE = {"Authorization": f"Bearer {API_KEY}"}
PROBLEM = "application/problem+json"


def altered(path: Path) -> bytes:
    """The photo as a shopper would send it again: cropped a little, smaller, recompressed."""
    with Image.open(path) as image:
        width, height = image.size
        copy = image.crop((8, 8, width - 8, height - 8)).resize((300, 300))
        out = io.BytesIO()
        copy.save(out, "JPEG", quality=70)
    return out.getvalue()


def problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_classify_answers_what_the_sdk_answers_with_provenance(search_service: ServiceThread, triton,
                                                                catalog_photos) -> None:
    data = catalog_photos[0].read_bytes()
    with shopvision.Client(triton.grpc_url) as sdk:
        expected = sdk.classify([data], top_k=3)[0]
    with search_service.client() as http:
        multipart = http.post("/v1/classify", params={"k": 3}, files={"image": ("shoe.jpg", data, "image/jpeg")})
        raw = http.post("/v1/classify?k=3", content=data, headers={"Content-Type": "image/jpeg"})
    for response in (multipart, raw):
        assert response.status_code == 200, response.text
        body = response.json()
        assert [p["label"] for p in body["predictions"]] == [p.label for p in expected]
        assert np.allclose([p["score"] for p in body["predictions"]], [p.score for p in expected], atol=1e-5)
        assert body["provenance"]["synthetic"] is True and body["provenance"]["source"] == "synthetic"


def test_search_finds_the_product_of_an_altered_catalog_photo_first(search_service, catalog_photos) -> None:
    with search_service.client() as http:
        for path in catalog_photos[:4]:
            response = http.post("/v1/search", params={"k": 5}, files={"image": ("q.jpg", altered(path))})
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["results"][0]["product_id"] == path.stem, body["results"][:3]
            assert len(body["results"]) == 5 and len(body["query"]) == 5
            assert body["results"][0]["image_url"] == f"/v1/products/{path.stem}/image"
            assert body["results"][0]["extra"]["colour"] in ("red", "blue")


def test_search_filters_by_label_and_metadata_and_refuses_bad_parameters(search_service, catalog_photos) -> None:
    data = altered(catalog_photos[1])
    with search_service.client() as http:
        blue = http.post("/v1/search", params={"k": 24, "where": "colour=blue"}, files={"image": ("q.jpg", data)})
        assert blue.status_code == 200 and {hit["extra"]["colour"] for hit in blue.json()["results"]} == {"blue"}
        assert len(blue.json()["results"]) == 12
        labels = sorted({hit["label"] for hit in blue.json()["results"]})
        by_label = http.post("/v1/search", params={"k": 24, "label": labels[0]}, files={"image": ("q.jpg", data)})
        assert {hit["label"] for hit in by_label.json()["results"]} == {labels[0]}
        none = http.post("/v1/search", params={"label": "no such label"}, files={"image": ("q.jpg", data)})
        assert none.status_code == 200 and none.json()["results"] == []
        for params in ({"k": 0}, {"k": -1}, {"k": 101}, {"k": "many"}, {"where": "size=9"}, {"where": "colour"},
                       {"label": [f"l{i}" for i in range(MAX_FILTER_VALUES + 1)]},
                       {"where": [f"colour=c{i}" for i in range(MAX_FILTER_VALUES + 1)]}):
            problem(http.post("/v1/search", params=params, files={"image": ("q.jpg", data)}), 422)
        many = http.post("/v1/search", params={"label": [f"l{i}" for i in range(MAX_FILTER_VALUES)]},
                         files={"image": ("q.jpg", data)})
        assert many.status_code == 200 and many.json()["results"] == []


def test_more_like_this_uses_the_stored_vector_and_leaves_the_product_out(search_service, catalog_photos) -> None:
    product = catalog_photos[2].stem
    with search_service.client() as http:
        similar = http.get(f"/v1/products/{product}/similar", params={"k": 5})
        assert similar.status_code == 200, similar.text
        ids = [hit["product_id"] for hit in similar.json()["results"]]
        assert len(ids) == 5 and product not in ids
        problem(http.get("/v1/products/no-such-product/similar"), 404)
        problem(http.get("/v1/products/no-such-product"), 404)
        problem(http.get("/v1/products/no-such-product/image"), 404)


def test_catalog_writes_need_the_key_and_round_trip(search_service) -> None:
    photo = product_jpeg(777, size=(320, 320))
    form = {"image": ("new.jpg", photo, "image/jpeg")}
    metadata = {"metadata": '{"title": "Red sneaker", "price": "59.90"}'}
    with search_service.client() as http:
        problem(http.put("/v1/products/sku-new", files=form, data=metadata), 401)
        for bad in ("[" * 5_000 + "]" * 5_000, json.dumps({f"c{i}": "v" for i in range(100)}), '{"price": 59.9}',
                    '["a"]'):  # too deep, too many fields, not strings, not an object
            problem(http.put("/v1/products/sku-new", files=form, data={"metadata": bad}, headers=WRITE), 422)
        huge = json.dumps({"description": "x" * MAX_METADATA_BYTES})  # refused by the form parser, unread
        problem(http.put("/v1/products/sku-new", files=form, data={"metadata": huge}, headers=WRITE), 422)
        problem(http.put("/v1/products/sku-new", files=form, data=metadata, headers={"X-API-Key": "guess"}), 403)
        created = http.put("/v1/products/sku-new", files=form, data=metadata, headers=WRITE)
        assert created.status_code == 201 and created.json()["created"] is True, created.text
        record = http.get("/v1/products/sku-new").json()
        assert record["extra"] == {"title": "Red sneaker", "price": "59.90"}
        assert record["content_sha256"] == hashlib.sha256(photo).hexdigest()
        assert http.get("/v1/products/sku-new/image").content == photo
        thumbnail = http.get("/v1/products/sku-new/image", params={"size": 128})
        assert thumbnail.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 128
        problem(http.get("/v1/products/sku-new/image", params={"size": 77}), 422)
        found = http.post("/v1/search", params={"k": 1}, files={"image": ("q.jpg", photo)}).json()["results"]
        assert found[0]["product_id"] == "sku-new"
        replaced = http.put("/v1/products/sku-new", files={"image": ("n.jpg", product_jpeg(778))}, headers=WRITE)
        assert replaced.status_code == 200 and replaced.json()["created"] is False
        problem(http.delete("/v1/products/sku-new"), 401)
        assert http.delete("/v1/products/sku-new", headers=WRITE).status_code == 204
        problem(http.get("/v1/products/sku-new"), 404)
        problem(http.delete("/v1/products/sku-new", headers=WRITE), 404)


@pytest.mark.parametrize("product_id", ["../../etc/passwd", "'; DROP TABLE products; --", "sku ✓ 雪/白",
                                        "a" * 1024, "%2e%2e"])
def test_product_ids_are_data_never_paths(search_service, product_id: str) -> None:
    photo = product_jpeg(901, size=(256, 256))
    path = "/v1/products/" + quote(product_id, safe="")
    with search_service.client() as http:
        written = http.put(path, files={"image": ("p.jpg", photo)}, headers=WRITE)
        assert written.status_code == 201, written.text
        assert http.get(path).json()["product_id"] == product_id
        assert http.get(path + "/image").content == photo  # the uploaded photo, not a file the id names
        assert http.get("/v1/catalog").status_code == 200  # the catalog survived the id
        assert http.delete(path, headers=WRITE).status_code == 204


def test_ids_too_long_or_not_utf8_are_refused(search_service) -> None:
    with search_service.client() as http:
        problem(http.put("/v1/products/" + "a" * 10_000, files={"image": ("p.jpg", product_jpeg(1))},
                         headers=WRITE), 422)
        problem(http.get("/v1/products/%FF%FEsku"), 400)


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_images_get_a_clear_error_and_the_service_keeps_serving(search_service, catalog_photos,
                                                                     case: str) -> None:
    data, words = BAD_INPUTS[case]
    with search_service.client() as http:
        response = http.post("/v1/search", files={"image": ("bad.jpg", data, "image/jpeg")})
        if case == "over-byte-limit":
            assert f"at most {MAX_IMAGE_BYTES} bytes" in problem(response, 413)["detail"]
        elif data[:3] in (b"\xff\xd8\xff", b"\x89PN"):
            assert words in problem(response, 400)["detail"]  # Triton's own message, passed on
        else:
            problem(response, 400 if case == "empty" else 415)
        good = http.post("/v1/search", files={"image": ("good.jpg", altered(catalog_photos[0]))})
        assert good.status_code == 200 and good.json()["results"][0]["product_id"] == catalog_photos[0].stem


def test_bodies_that_are_not_images_or_too_big_are_refused(search_service) -> None:
    with search_service.client() as http:
        problem(http.post("/v1/classify", content=b"hello", headers={"Content-Type": "text/plain"}), 415)
        problem(http.post("/v1/classify", files={"photo": ("x.jpg", product_jpeg(1))}), 422)

        def endless() -> object:  # no Content-Length: refused while streaming, not after
            for _ in range(64):
                yield bytes(1024 * 1024)

        response = http.post("/v1/classify", content=endless(), headers={"Content-Type": "image/jpeg"})
        assert f"at most {MAX_IMAGE_BYTES} bytes" in problem(response, 413)["detail"]


def test_a_failed_write_leaves_the_product_as_it_was(search_service) -> None:
    photo = product_jpeg(333, size=(256, 256))
    with search_service.client() as http:
        assert http.put("/v1/products/keep-me", files={"image": ("k.jpg", photo)}, headers=WRITE).status_code == 201
        problem(http.put("/v1/products/keep-me", files={"image": ("b.jpg", product_jpeg(5)[:3000])},
                         headers=WRITE), 400)
        assert http.get("/v1/products/keep-me").json()["content_sha256"] == hashlib.sha256(photo).hexdigest()
        assert http.delete("/v1/products/keep-me", headers=WRITE).status_code == 204


def test_concurrent_searches_and_writes_never_see_half_a_product(search_service) -> None:
    photos = [product_jpeg(seed, size=(256, 256)) for seed in (41, 42)]
    digests = {hashlib.sha256(photo).hexdigest() for photo in photos}
    stop = threading.Event()
    seen: list[str] = []

    def write() -> None:
        with search_service.client() as http:
            for round_ in range(8):
                response = http.put("/v1/products/flip", files={"image": ("f.jpg", photos[round_ % 2])},
                                    headers=WRITE)
                assert response.status_code in (200, 201), response.text
        stop.set()

    def read() -> None:
        with search_service.client() as http:
            while not stop.is_set():
                response = http.get("/v1/products/flip")
                if response.status_code == 404:
                    continue
                record = response.json()
                image = http.get("/v1/products/flip/image").content
                seen.append(record["content_sha256"])
                assert record["content_sha256"] in digests
                assert hashlib.sha256(image).hexdigest() in digests
                found = http.post("/v1/search", params={"k": 3}, files={"image": ("q.jpg", photos[0])})
                assert found.status_code == 200, found.text

    threads = [RecordingThread(write), *(RecordingThread(read) for _ in range(3))]
    for thread in threads:
        thread.start()
    join_all(threads, timeout=300)
    assert seen
    with search_service.client() as http:
        assert http.delete("/v1/products/flip", headers=WRITE).status_code == 204


def test_an_index_another_process_rebuilt_is_picked_up_without_a_restart(triton, tmp_path: Path) -> None:
    catalog_dir = tmp_path / "catalog"
    first = write_catalog(tmp_path / "first", 4, size=(256, 256), seed=60)
    later = write_catalog(tmp_path / "later", 2, size=(256, 256), seed=70)
    index_photos(catalog_dir, first, triton.grpc_url)
    with ServiceThread(ApiSettings(triton_url=triton.grpc_url, catalog=str(catalog_dir))) as service, \
            service.client() as http:
        assert http.get("/v1/catalog").json()["products"] == 4
        with shopvision.Client(triton.grpc_url) as sdk, Catalog.open(catalog_dir, client=sdk) as catalog:
            # What `shopvision index build` does in its own process.
            catalog.build([CatalogItem(product_id=f"later-{index}", path=path) for index, path in enumerate(later)])
        response = http.post("/v1/search", params={"k": 1}, files={"image": ("q.jpg", altered(later[1]))})
        assert response.json()["results"][0]["product_id"] == "later-1"
        assert http.get("/v1/catalog").json()["products"] == 6


def test_health_readiness_and_metrics(search_service) -> None:
    with search_service.client() as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"]["weights"] == "catalog and server agree"
        http.post("/v1/classify", content=product_jpeg(3), headers={"Content-Type": "image/jpeg"})
        text = http.get("/metrics").text
        for name in ('shopvision_api_requests_total{method="POST",route="/v1/classify",status="200"}',
                     "shopvision_api_request_duration_seconds_bucket", "shopvision_api_triton_duration_seconds_count",
                     "shopvision_api_vector_search_duration_seconds_count", "shopvision_api_catalog_products"):
            assert name in text, name
        assert http.get("/docs").status_code == 200 and "/v1/search" in http.get("/openapi.json").text
        assert "access-control-allow-origin" not in http.get("/v1/catalog", headers={"Origin": "https://x"}).headers


def test_cors_allow_list_and_reads_behind_the_key(triton, tmp_path: Path) -> None:
    settings = ApiSettings.from_environment(
        {"SHOPVISION_API_READS_NEED_KEY": "true", "SHOPVISION_API_KEY": API_KEY, "SHOPVISION_API_READ_KEY": "reader",
         "SHOPVISION_CORS_ORIGINS": "https://shop.example"}, triton_url=triton.grpc_url)
    reader = {"Authorization": "Bearer reader"}
    with ServiceThread(settings) as service, service.client() as http:
        image = {"image": ("q.jpg", product_jpeg(2))}
        problem(http.post("/v1/classify", files=image), 401)
        problem(http.post("/v1/classify", files=image, headers={"X-API-Key": "guess"}), 403)
        assert http.post("/v1/classify", files=image, headers=WRITE).status_code == 200
        assert http.post("/v1/classify", files=image, headers=reader).status_code == 200
        assert problem(http.put("/v1/products/p", files=image, headers=reader), 403)["title"] == "Read-only key"
        assert problem(http.delete("/v1/products/p", headers={"X-API-Key": "reader"}), 403)["title"] == "Read-only key"
        for path in ("/metrics", "/docs", "/openapi.json"):  # with reads, what the service is and does
            problem(http.get(path), 401)
            assert http.get(path, headers=reader).status_code == 200, path
        assert "/v1/search" in http.get("/openapi.json", headers=reader).json()["paths"]
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200  # probes
        allowed = http.options("/v1/classify", headers={"Origin": "https://shop.example",
                                                        "Access-Control-Request-Method": "POST"})
        assert allowed.headers.get("access-control-allow-origin") == "https://shop.example"
        other = http.options("/v1/classify", headers={"Origin": "https://evil.example",
                                                      "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in other.headers
        problem(http.get("/v1/catalog", headers=WRITE), 404)  # no catalog configured: classify only


def test_past_its_request_bound_the_service_refuses_at_the_door_and_probes_still_answer(triton) -> None:
    import socket

    settings = ApiSettings.from_environment({"SHOPVISION_API_MAX_REQUESTS": "2"}, triton_url=triton.grpc_url)
    service = ServiceThread(settings)
    slow: list[socket.socket] = []
    with service, service.client() as http:
        for _ in range(2):  # uploads whose bodies never finish: each holds a place
            connection = socket.create_connection(("127.0.0.1", service.port))
            connection.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                               b"Content-Length: 1000000\r\n\r\n" + product_jpeg(5)[:100])
            slow.append(connection)
        deadline = time.monotonic() + 30
        while (refused := http.post("/v1/classify", content=product_jpeg(6))).status_code != 503:
            assert time.monotonic() < deadline, refused.text
            time.sleep(0.05)
        assert problem(refused, 503)["title"] == "Service busy" and refused.headers["Retry-After"]
        assert http.get("/healthz").status_code == 200 and http.get("/readyz").status_code == 200
        for connection in slow:
            connection.close()
        deadline = time.monotonic() + 30
        while (served := http.post("/v1/classify", content=product_jpeg(6),
                                   headers={"Content-Type": "image/jpeg"})).status_code != 200:
            assert time.monotonic() < deadline, served.text
            time.sleep(0.05)


def test_triton_killed_and_restarted_mid_traffic_gives_503_then_recovers(built_repository, tmp_path) -> None:
    running: RunningServer = start_server(built_repository, tmp_path / "restart.log")
    statuses: list[int] = []
    stop = threading.Event()
    try:
        with ServiceThread(ApiSettings(triton_url=running.grpc_url)) as service:

            def shopper() -> None:
                with service.client() as http:
                    while not stop.is_set():
                        response = http.post("/v1/classify", files={"image": ("q.jpg", product_jpeg(4))})
                        if response.status_code != 200:
                            problem(response, 503)
                            assert response.headers["retry-after"] == "5"
                        statuses.append(response.status_code)

            shoppers = [RecordingThread(shopper) for _ in range(3)]
            for thread in shoppers:
                thread.start()
            with service.client() as http:
                time.sleep(2)
                running.server.kill()  # in the middle of the shoppers' traffic
                time.sleep(3)
                assert http.get("/readyz").status_code == 503 and http.get("/healthz").status_code == 200
                running.server.start()
                deadline = time.monotonic() + 60
                recovered = len(statuses)
                while 200 not in statuses[recovered:]:  # the gRPC channel reconnects with backoff
                    assert time.monotonic() < deadline, "the service did not recover"
                    time.sleep(0.5)
                assert http.get("/readyz").status_code == 200
            stop.set()
            join_all(shoppers, timeout=120)
        assert set(statuses) == {200, 503} and statuses.count(503) > 0, statuses[:20]
    finally:
        stop.set()
        running.server.stop()


def test_the_readme_curl_calls_answer_json(search_service: ServiceThread, catalog_photos, tmp_path: Path) -> None:
    from tests.test_client_integration import readme_blocks

    (tmp_path / "shoe.jpg").write_bytes(catalog_photos[0].read_bytes())
    lines = [line.split("  #")[0].strip() for block in readme_blocks("bash") for line in block.splitlines()
             if line.startswith("curl -F ")]
    assert len(lines) >= 2
    for line in lines:
        command = line.replace("http://localhost:8080", search_service.url)
        result = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                                check=False)
        assert result.returncode == 0, result.stderr
        body = json.loads(result.stdout)
        assert body.get("results") or body.get("predictions"), body
