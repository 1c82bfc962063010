"""The search service's keys, limits and answers to bad requests, with no tritonserver: a KServe v2 stub over real
HTTP stands in for it (tests/support/stub_triton.py), and the catalog is a real FAISS one. Part of `make test-fast`."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml

from shopvision import Tls
from shopvision.api.product_paths import PRODUCT_VIEWS
from shopvision.api.settings import ApiSettings
from shopvision.catalog.milvus_store import MilvusConnection
from shopvision.contract import MAX_FILTER_VALUES, MAX_IMAGE_BYTES, MAX_METADATA_BYTES, MAX_METADATA_FIELDS
from shopvision.samples import product_jpeg
from shopvision.server.tritonserver import free_ports
from tests.support.search_service import ServiceThread
from tests.support.stub_triton import SLOW_MARKER, StubTriton
from tests.test_deploy import render as render_chart

WRITER, READER = "writer-key", "reader-key"
PROBLEM = "application/problem+json"
PHOTO = product_jpeg(11, size=(128, 96))


def problem(response: httpx.Response, status: int, title: str | None = None) -> dict:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    assert response.headers["content-type"].startswith(PROBLEM), response.headers
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    if title is not None:
        assert body["title"] == title, body
    return body


def image(data: bytes = PHOTO) -> dict:
    return {"image": ("photo.jpg", data, "image/jpeg")}


@pytest.fixture(scope="module")
def guarded(stub_triton: StubTriton, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceThread]:
    """Reads need a key; a write key and a read key; a catalog holding products p1 and p1-twin."""
    settings = ApiSettings(triton_url=stub_triton.url, catalog=str(tmp_path_factory.mktemp("catalog") / "index"),
                           api_key=WRITER, read_key=READER, read_key_required=True)
    with ServiceThread(settings) as service, service.client(headers={"X-API-Key": WRITER}) as http:
        for product_id, seed in (("p1", 1), ("p1-twin", 2)):
            response = http.put(f"/v1/products/{product_id}", files=image(product_jpeg(seed, size=(128, 96))),
                                data={"metadata": json.dumps({"colour": "red"})})
            assert response.status_code == 201, response.text
        yield service


READS = [("POST", "/v1/classify"), ("POST", "/v1/search"), ("GET", "/v1/products/p1/similar"),
         ("GET", "/v1/products/p1/image"), ("GET", "/v1/products/p1"), ("GET", "/v1/catalog"), ("GET", "/metrics"),
         ("GET", "/docs"), ("GET", "/openapi.json")]


def send(http: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    files = image() if method in ("POST", "PUT") else None
    return http.request(method, path, files=files, headers=headers)


@pytest.mark.parametrize("method, path", READS, ids=[f"{method} {path}" for method, path in READS])
def test_every_read_route_takes_the_read_key_or_the_write_key_and_nothing_else(guarded, method, path) -> None:
    with guarded.client() as http:
        missing = problem(send(http, method, path, {}), 401, "API key required")
        assert "Bearer" in missing["detail"]
        assert send(http, method, path, {}).headers["WWW-Authenticate"] == "Bearer"
        for wrong in ({"Authorization": "Bearer guess"}, {"X-API-Key": "guess"}):
            problem(send(http, method, path, wrong), 403, "Wrong API key")
        for key in ({"Authorization": f"Bearer {READER}"}, {"X-API-Key": READER}, {"X-API-Key": WRITER}):
            answer = send(http, method, path, key)
            assert answer.status_code == 200, (key, answer.text)


def test_every_write_route_takes_the_write_key_only(guarded) -> None:
    with guarded.client() as http:
        for method, path in (("PUT", "/v1/products/written"), ("DELETE", "/v1/products/p1-twin")):
            problem(send(http, method, path, {}), 401, "API key required")
            for wrong in ({"Authorization": "Bearer guess"}, {"X-API-Key": "guess"}):
                problem(send(http, method, path, wrong), 403, "Wrong API key")
            for reader in ({"Authorization": f"Bearer {READER}"}, {"X-API-Key": READER}):
                problem(send(http, method, path, reader), 403, "Read-only key")
        assert send(http, "PUT", "/v1/products/written", {"Authorization": f"Bearer {WRITER}"}).status_code == 201
        assert send(http, "DELETE", "/v1/products/written", {"X-API-Key": WRITER}).status_code == 204
        assert http.get("/v1/products/p1-twin", headers={"X-API-Key": READER}).status_code == 200  # refused: kept


def test_without_a_write_key_writes_are_disabled_and_reads_are_open(stub_triton, tmp_path: Path) -> None:
    settings = ApiSettings(triton_url=stub_triton.url, catalog=str(tmp_path / "index"))
    with ServiceThread(settings) as service, service.client() as http:
        for key in ({}, {"X-API-Key": "anything"}):
            problem(http.put("/v1/products/p", files=image(), headers=key), 403, "Writes are disabled")
            problem(http.delete("/v1/products/p", headers=key), 403, "Writes are disabled")
        assert http.post("/v1/classify", files=image()).status_code == 200
        assert http.get("/v1/catalog").json()["products"] == 0
        assert http.get("/metrics").status_code == 200 and http.get("/openapi.json").status_code == 200


def deep_json(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


BAD_REQUESTS = {
    "metadata nested too deep": (lambda http: http.put("/v1/products/x", files=image(),
                                                       data={"metadata": deep_json(2_500)}), 422),
    "metadata over its size limit": (lambda http: http.put("/v1/products/x", files=image(), data={
        "metadata": json.dumps({"description": "x" * MAX_METADATA_BYTES})}), 422),
    "metadata with too many fields": (lambda http: http.put("/v1/products/x", files=image(), data={
        "metadata": json.dumps({f"field{n}": n for n in range(MAX_METADATA_FIELDS + 1)})}), 422),
    "metadata not an object": (lambda http: http.put("/v1/products/x", files=image(), data={"metadata": "[1]"}), 422),
    "metadata with a lone surrogate": (lambda http: http.put("/v1/products/x", files=image(),
                                                             data={"metadata": '{"title": "\\ud800"}'}), 422),
    "a form without a boundary": (lambda http: http.post("/v1/classify", content=b"x",
                                                         headers={"Content-Type": "multipart/form-data"}), 400),
    "two files in a form": (lambda http: http.post("/v1/classify", files=[("image", ("a.jpg", PHOTO)),
                                                                          ("image", ("b.jpg", PHOTO))]), 400),
    "a body that is JSON": (lambda http: http.post("/v1/classify", json={"image": "x"}), 415),
    "a filter without an operator": (lambda http: http.post("/v1/search", files=image(),
                                                            params={"where": "colour"}), 422),
    "a method the route lacks": (lambda http: http.post("/v1/products/p1"), 405),
    "a key that is not ASCII": (lambda http: http.put("/v1/products/x", files=image(),
                                                      headers={"X-API-Key": b"\xe9t\xe9"}), 403),
    "too many label values": (lambda http: http.post("/v1/search", files=image(), params=[
        ("label", f"l{n}") for n in range(MAX_FILTER_VALUES + 1)]), 422),
    "too many where values": (lambda http: http.post("/v1/search", files=image(), params=[
        ("where", f"colour=c{n}") for n in range(MAX_FILTER_VALUES + 1)]), 422),
    "a filter on an unknown field": (lambda http: http.post("/v1/search", files=image(),
                                                            params={"where": "nosuch=1"}), 422),
    "k out of range": (lambda http: http.post("/v1/search", files=image(), params={"k": 0}), 422),
    "an unknown thumbnail size": (lambda http: http.get("/v1/products/p1/image", params={"size": 7}), 422),
    "not an image": (lambda http: http.post("/v1/classify", files=image(b"plain text, no image")), 415),
    "an image the model server refuses": (lambda http: http.post("/v1/classify", files=image(b"GIF89a broken")), 400),
    "no image field": (lambda http: http.post("/v1/classify", files={"photo": ("p.jpg", PHOTO)}), 422),
    "an upload over the image limit": (lambda http: http.post("/v1/classify",
                                                              files=image(PHOTO + bytes(MAX_IMAGE_BYTES))), 413),
    "a product id too long": (lambda http: http.get("/v1/products/" + "a" * 1025), 422),
    "a product id that is not UTF-8": (lambda http: http.get("/v1/products/%ff%fe"), 400),
    "a write to an id that reads back as a view": (lambda http: http.put("/v1/products/shoe/image", files=image()),
                                                   422),
    "a delete of an id that reads back as a view": (lambda http: http.delete("/v1/products/shoe/similar"), 422),
    "an unknown product": (lambda http: http.get("/v1/products/nosuch"), 404),
    "the photo of an unknown product": (lambda http: http.get("/v1/products/nosuch/image"), 404),
    "look-alikes of an unknown product": (lambda http: http.get("/v1/products/nosuch/similar"), 404),
    "deleting an unknown product": (lambda http: http.delete("/v1/products/nosuch"), 404),
    "an unknown route": (lambda http: http.get("/v1/nothing"), 404),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_every_bad_request_gets_its_4xx_as_a_problem_and_the_service_keeps_serving(guarded, stub_triton, case) -> None:
    call, status = BAD_REQUESTS[case]
    before = stub_triton.inferences
    with guarded.client(headers={"X-API-Key": WRITER}) as http:
        problem(call(http), status)
        if case != "an image the model server refuses":  # refused by the service itself: Triton never asked
            assert stub_triton.inferences == before, case
        assert http.post("/v1/classify", files=image()).status_code == 200


def test_product_ids_ending_in_a_views_name_read_back_both_ways(guarded) -> None:
    """``shoe/image`` is a product; ``shoe``'s photo is ``/v1/products/shoe/image``: the encoded slash tells them
    apart, and every image_url the service hands out is encoded so."""
    photos = {"shoe": product_jpeg(21, size=(96, 96)), "shoe/image": product_jpeg(22, size=(96, 96)),
              "shoe/similar": product_jpeg(23, size=(96, 96))}
    with guarded.client(headers={"X-API-Key": WRITER}) as http:
        for product_id, photo in photos.items():
            written = http.put("/v1/products/" + quote(product_id, safe=""), files=image(photo))
            assert written.status_code == 201, written.text
            assert written.json()["product"]["image_url"] == f"/v1/products/{quote(product_id, safe='')}/image"
        for product_id, photo in photos.items():
            encoded = "/v1/products/" + quote(product_id, safe="")
            assert http.get(encoded).json()["product_id"] == product_id
            assert http.get(encoded + "/image").content == photo
            similar = http.get(encoded + "/similar", params={"k": 50}).json()["results"]
            assert product_id not in {hit["product_id"] for hit in similar}  # look-alikes of this very product
            assert set(photos) - {product_id} <= {hit["product_id"] for hit in similar}
        # The literal suffixes are the views of "shoe".
        assert http.get("/v1/products/shoe/image").content == photos["shoe"]
        assert "shoe" not in {hit["product_id"] for hit in http.get("/v1/products/shoe/similar").json()["results"]}
        for product_id in photos:
            assert http.delete("/v1/products/" + quote(product_id, safe="")).status_code == 204
    assert PRODUCT_VIEWS == ("image", "similar")


def test_past_its_request_bound_the_service_answers_503_with_retry_after(stub_triton) -> None:
    stub_triton.slow_s = 3.0
    settings = ApiSettings(triton_url=stub_triton.url, max_requests=1, retry_after_s=7)
    with ServiceThread(settings) as service, service.client() as http:
        holder = socket.create_connection(("127.0.0.1", service.port))
        try:  # an upload whose body never finishes holds the one place
            holder.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                           b"Content-Length: 100000\r\n\r\n" + PHOTO[:100])
            deadline = time.monotonic() + 10
            while (busy := http.post("/v1/classify", files=image())).status_code != 503:
                assert time.monotonic() < deadline, busy.text
                time.sleep(0.05)
            problem(busy, 503, "Service busy")
            assert busy.headers["Retry-After"] == "7"
            assert http.get("/healthz").status_code == 200  # probes are not counted
        finally:
            holder.close()
        deadline = time.monotonic() + 10
        while http.post("/v1/classify", files=image()).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        slow = http.post("/v1/classify", files=image(PHOTO + SLOW_MARKER))
        assert slow.status_code == 200  # a slow model answer is waited for, not refused


def test_an_unreachable_model_server_is_a_503_with_retry_after(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens there
    settings = ApiSettings(triton_url=f"http://127.0.0.1:{port}", retry_after_s=3, timeout_s=5)
    with ServiceThread(settings) as service, service.client() as http:
        answer = http.post("/v1/classify", files=image())
        problem(answer, 503, "Model server unavailable")
        assert answer.headers["Retry-After"] == "3"
        assert http.get("/healthz").status_code == 200


def chart_environment(container: dict) -> dict[str, str]:
    """A container's environment as the pod sees it, a Secret's value standing in as "<secret>/<key>"."""
    env = {}
    for item in container["env"]:
        secret = item.get("valueFrom", {}).get("secretKeyRef")
        env[item["name"]] = f"{secret['name']}/{secret['key']}" if secret else item["value"]
    return env


def variables_the_service_reads() -> set[str]:
    source = (Path(__file__).resolve().parent.parent / "src" / "shopvision" / "api" / "settings.py").read_text()
    return set(re.findall(r'env(?:\.get\(|\[)"([A-Z_]+)"', source)) | set(MilvusConnection.ENVIRONMENT.values())


def test_the_settings_come_from_the_variables_the_chart_and_compose_set() -> None:
    values = {"api": {"enabled": True, "apiKeySecret": "shop-api", "readKeySecret": "shop-reader",
                      "readsNeedKey": True, "corsOrigins": ["https://shop.example", "https://admin.shop.example"],
                      "catalog": {"efSearch": 256}}}
    (container,) = render_chart(values, component="search-api")["Deployment"]["spec"]["template"]["spec"]["containers"]
    env = chart_environment(container)
    assert {name for name in env if name.startswith(("SHOPVISION_", "MILVUS_"))} <= variables_the_service_reads()
    assert len(variables_the_service_reads()) > 15  # the pattern finds what settings.py reads
    settings = ApiSettings.from_environment(env)
    assert settings.triton_url == "grpc://shop-shopvision:8011"
    assert (settings.api_key, settings.read_key, settings.read_key_required) == (
        "shop-api/api-key", "shop-reader/read-key", True)
    assert settings.cors_origins == ("https://shop.example", "https://admin.shop.example")
    assert settings.catalog == "/catalog/index" and settings.catalog_ef_search == 256
    milvus = {"api": {"enabled": True, "catalog": {"milvusUri": "https://milvus:19530", "milvusTokenSecret": "m",
                                                   "milvusTlsSecret": "t", "milvusTlsServerName": "milvus.shop"}}}
    (container,) = render_chart(milvus, component="search-api")["Deployment"]["spec"]["template"]["spec"]["containers"]
    settings = ApiSettings.from_environment(chart_environment(container))
    assert settings.catalog == "https://milvus:19530" and settings.milvus.token == "m/token"
    assert settings.milvus.server_name == "milvus.shop" and settings.milvus.server_pem_path
    # Triton's gRPC over mutual TLS: the service speaks TLS to it with the Secret's CA and its own certificate.
    tls = {"api": {"enabled": True}, "tls": {"grpc": {"enabled": True, "secretName": "grpc-tls", "mutual": True}}}
    pod = render_chart(tls, component="search-api")["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    settings = ApiSettings.from_environment(chart_environment(container))
    assert settings.triton_url == "grpcs://shop-shopvision:8011"
    assert settings.triton_tls == Tls(ca_file="/etc/shopvision/triton-tls/ca.crt",
                                      certificate_file="/etc/shopvision/triton-tls/tls.crt",
                                      key_file="/etc/shopvision/triton-tls/tls.key")
    mount = next(mount for mount in container["volumeMounts"] if mount["mountPath"] == "/etc/shopvision/triton-tls")
    volume = next(volume for volume in pod["volumes"] if volume["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "grpc-tls"
    assert ApiSettings.from_environment({}).triton_tls is None
    compose = yaml.safe_load((Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text())
    compose_env = compose["services"]["api"]["environment"]
    named = {name for name in compose_env if name.startswith(("SHOPVISION_", "MILVUS_"))}
    assert named <= variables_the_service_reads()
    assert ApiSettings.from_environment({"SHOPVISION_URL": compose_env["SHOPVISION_URL"]}).triton_url == (
        "grpc://triton:8001")


def test_a_photo_is_served_only_as_indexed_never_through_a_symlink(stub_triton, tmp_path: Path) -> None:
    """Photos the CLI indexed where they lie, and uploads alike: a file swapped for other bytes or for a symlink
    (to another photo, or to a secret) after indexing is not served, and nothing else is read in its place."""
    from tests.support.search_service import index_photos

    folder = tmp_path / "shop-photos"
    folder.mkdir()
    photos = []
    for index in range(3):
        path = folder / f"sku-{index}.jpg"
        path.write_bytes(product_jpeg(60 + index, size=(96, 96)))
        photos.append(path)
    index_photos(tmp_path / "index", photos, stub_triton.url)
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8\xff not a photo of this shop: a key")
    settings = ApiSettings(triton_url=stub_triton.url, catalog=str(tmp_path / "index"), api_key=WRITER)
    with ServiceThread(settings) as service, service.client(headers={"X-API-Key": WRITER}) as http:
        assert http.get("/v1/products/sku-0/image").content == photos[0].read_bytes()
        photos[1].unlink()
        photos[1].symlink_to(photos[0])  # a symlink, even to a photo of the shop
        photos[2].unlink()
        photos[2].symlink_to(secret)
        for product_id in ("sku-1", "sku-2"):
            problem(http.get(f"/v1/products/{product_id}/image"), 404, "No photo")
            problem(http.get(f"/v1/products/{product_id}/image", params={"size": 256}), 404, "No photo")
        photos[0].write_bytes(product_jpeg(99, size=(96, 96)))  # other bytes under the indexed name
        problem(http.get("/v1/products/sku-0/image"), 404, "No photo")
        # An upload is read from the service's own store by its sha256, so the same holds for it.
        upload = product_jpeg(70, size=(96, 96))
        assert http.put("/v1/products/uploaded", files=image(upload)).status_code == 201
        assert http.get("/v1/products/uploaded/image").content == upload
        (stored,) = [path for path in (tmp_path / "index" / "images").rglob("*")
                     if path.is_file() and path.read_bytes() == upload]
        stored.unlink()
        stored.symlink_to(secret)
        problem(http.get("/v1/products/uploaded/image"), 404, "No photo")
        assert http.get("/v1/products/uploaded").status_code == 200  # the product itself stays
