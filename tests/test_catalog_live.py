"""A live catalog behind the search service: writes that do not stop reads, crash safety, photo upkeep, readiness
from state, a bounded catalog queue, and Milvus with its token (real tritonserver, real HTTP, real processes)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from benchmarks.search_service import ServiceProcess, build_catalog
from shopvision.api.catalog_access import CatalogLimits
from shopvision.api.photos import ThumbnailCache
from shopvision.api.settings import ApiSettings
from shopvision.catalog.milvus_store import MilvusConnection
from shopvision.samples import product_jpeg
from tests.support.search_service import ServiceThread
from tests.support.servers import API_KEY

pytestmark = pytest.mark.integration
WRITE = {"Authorization": f"Bearer {API_KEY}"}


def put(http: httpx.Client, product_id: str, photo: bytes, **metadata: str) -> httpx.Response:
    response = http.put(f"/v1/products/{product_id}", headers=WRITE,
                        files={"image": ("p.jpg", photo)}, data={"metadata": json.dumps(metadata)})
    assert response.status_code in (200, 201), response.text
    return response


def photo_files(photos: Path) -> set[str]:
    """Photo and thumbnail files under the service's photo folder, by name."""
    return {path.name for path in photos.rglob("*") if path.is_file()}


def test_an_acknowledged_write_survives_kill_9(triton, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    environ = {"SHOPVISION_API_KEY": API_KEY}
    service = ServiceProcess(triton.grpc_url, catalog, tmp_path / "api.log", environ=environ)
    photos = {f"sku-{seed}": product_jpeg(seed, size=(320, 240)) for seed in range(6)}
    try:
        with httpx.Client(base_url=service.url, timeout=60) as http:
            for product_id, photo in photos.items():
                put(http, product_id, photo, colour="red")
            put(http, "sku-0", product_jpeg(99, size=(320, 240)), colour="blue")  # replaced
            assert http.delete("/v1/products/sku-5", headers=WRITE).status_code == 204
    finally:
        service.kill()  # right after the last acknowledgement: nothing saved on the way out
    photos["sku-0"] = product_jpeg(99, size=(320, 240))
    del photos["sku-5"]
    service = ServiceProcess(triton.grpc_url, catalog, tmp_path / "api.log", environ=environ)
    try:
        with httpx.Client(base_url=service.url, timeout=60) as http:
            assert http.get("/v1/catalog").json()["products"] == 5
            for product_id, photo in photos.items():
                record = http.get(f"/v1/products/{product_id}").json()
                assert record["content_sha256"] == hashlib.sha256(photo).hexdigest()
                assert http.get(f"/v1/products/{product_id}/image").content == photo
                found = http.post("/v1/search", params={"k": 1}, files={"image": ("q.jpg", photo)}).json()
                assert found["results"][0]["product_id"] == product_id
            assert http.get("/v1/products/sku-5").status_code == 404
            assert http.get("/v1/products/sku-0").json()["extra"] == {"colour": "blue"}
    finally:
        service.stop()


def test_photos_no_product_references_are_removed(triton, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    photos = catalog / "images"
    settings = ApiSettings(triton_url=triton.grpc_url, catalog=str(catalog), api_key=API_KEY)
    first, second, shared = (product_jpeg(seed, size=(300, 300)) for seed in (11, 12, 13))
    digest = {name: hashlib.sha256(data).hexdigest() for name, data in
              (("first", first), ("second", second), ("shared", shared))}
    with ServiceThread(settings) as service, service.client() as http:
        put(http, "a", first)
        assert {f"{digest['first']}-{size}.jpg" for size in (128, 256, 512)} <= photo_files(photos)  # made at write
        first_thumbnail = http.get("/v1/products/a/image?size=256").content  # now in the service's memory too
        put(http, "a", second)  # replaced with a new photo: the old one and its thumbnails go
        assert not any(name.startswith(digest["first"]) for name in photo_files(photos))
        made = photos / "thumbnails" / digest["second"][:2] / f"{digest['second']}-256.jpg"
        assert http.get("/v1/products/a/image?size=256").content == made.read_bytes() != first_thumbnail
        put(http, "b", shared)
        put(http, "c", shared)
        assert http.delete("/v1/products/b", headers=WRITE).status_code == 204
        assert digest["shared"] in photo_files(photos)  # c still has it
        assert http.get("/v1/products/c/image?size=256").headers["content-type"] == "image/jpeg"
        assert http.delete("/v1/products/c", headers=WRITE).status_code == 204
        assert http.get("/v1/products/c/image?size=256").status_code == 404  # though its thumbnail was in memory
        assert not any(name.startswith(digest["shared"]) for name in photo_files(photos))
        assert digest["second"] in photo_files(photos)
    # A crash between a photo and its product leaves a file nobody references: the next start removes it
    # once it is older than the grace period (a younger one may be a write in flight).
    orphan = photos / "ab" / ("ab" + "0" * 62)
    recent = photos / "cd" / ("cd" + "0" * 62)
    for path in (orphan, recent):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(second)
    old = time.time() - 2 * 3600
    os.utime(orphan, (old, old))
    with ServiceThread(settings) as service, service.client() as http:
        deadline = time.monotonic() + 30
        while orphan.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not orphan.exists() and recent.exists() and digest["second"] in photo_files(photos)
        assert http.get("/v1/products/a/image").content == second


def test_the_thumbnail_cache_keeps_the_most_recently_used_within_its_bytes() -> None:
    cache = ThumbnailCache(limit_bytes=300)
    for name in "abc":
        cache.put(name, 256, name.encode() * 100)
    assert cache.get("a", 256) == b"a" * 100  # now the most recently used
    cache.put("d", 256, b"d" * 100)  # over 300 bytes: the least recently used (b) goes
    assert cache.get("b", 256) is None and cache.get("a", 128) is None
    assert [cache.get(name, 256) for name in "acd"] == [name.encode() * 100 for name in "acd"]
    cache.put("e", 256, b"e" * 400)  # larger than the whole cache: not kept, and nothing else evicted for it
    assert cache.get("e", 256) is None and cache.get("a", 256) is not None


def test_readiness_and_the_bounded_queue_while_the_index_loads(triton, tmp_path: Path) -> None:
    """A long catalog operation (20,000 products whose HNSW index must be built: its checkpoint was lost):
    /healthz and /readyz answer at once, not ready until the index is; searches meanwhile wait their limit,
    then get 503 with Retry-After; then everything serves."""
    catalog = tmp_path / "catalog"
    build_catalog(catalog, 20_000, triton.grpc_url)
    for checkpoint in catalog.glob("vectors-*.faiss"):
        checkpoint.unlink()
    settings = ApiSettings(triton_url=triton.grpc_url, catalog=str(catalog), retry_after_s=2,
                           catalog_limits=CatalogLimits(queued=2, wait_s=0.5))
    query = product_jpeg(5, size=(224, 224))
    with ServiceThread(settings) as service, service.client(timeout=5) as http:
        probes = []
        busy = []
        while (probe := http.get("/readyz")).status_code == 503:
            probes.append(probe.json()["checks"]["catalog"])
            assert http.get("/healthz").status_code == 200
            if not busy:
                busy.append(http.post("/v1/search", files={"image": ("q.jpg", query)}))
            time.sleep(0.2)
        assert probes and all(state.startswith("loading the search index") for state in probes), probes
        (refused,) = busy
        assert refused.status_code == 503 and refused.headers["retry-after"] == "2", refused.text
        assert "waited 0.5 s for the catalog" in refused.json()["detail"]
        assert probe.json()["checks"]["catalog"].startswith("open, index ready in")
        summary = http.get("/v1/catalog").json()
        assert summary["products"] == 20_000 and summary["index"] == "hnsw"
        assert len(http.post("/v1/search", files={"image": ("q.jpg", query)}).json()["results"]) == 12


def test_writes_show_in_the_next_search_while_searches_keep_answering(triton, tmp_path: Path) -> None:
    """An HNSW catalog (past the threshold): replaces, deletes and inserts show at once, with no rebuild."""
    catalog = tmp_path / "catalog"
    build_catalog(catalog, 20_000, triton.grpc_url)
    settings = ApiSettings(triton_url=triton.grpc_url, catalog=str(catalog), api_key=API_KEY)
    photos = [product_jpeg(seed, size=(256, 256)) for seed in range(300, 306)]
    with ServiceThread(settings) as service, service.client() as http:
        while http.get("/readyz").status_code != 200:
            time.sleep(0.2)
        failures: list[str] = []
        stop = threading.Event()

        def search() -> None:
            with service.client() as reader:
                while not stop.is_set():
                    response = reader.post("/v1/search", params={"k": 5}, files={"image": ("q.jpg", photos[0])})
                    if response.status_code != 200:
                        failures.append(response.text)

        readers = [threading.Thread(target=search) for _ in range(2)]
        for reader in readers:
            reader.start()
        try:
            for index, photo in enumerate(photos):
                put(http, f"new-{index}", photo)
                top = http.post("/v1/search", params={"k": 1}, files={"image": ("q.jpg", photo)}).json()
                assert top["results"][0]["product_id"] == f"new-{index}"
            put(http, "new-0", photos[5])  # replaced: found by its new photo, not its old one
            by_old = http.post("/v1/search", params={"k": 3}, files={"image": ("q.jpg", photos[0])}).json()
            assert [hit["product_id"] for hit in by_old["results"]].count("new-0") <= 1
            assert http.delete("/v1/products/new-1", headers=WRITE).status_code == 204
            gone = http.post("/v1/search", params={"k": 20}, files={"image": ("q.jpg", photos[1])}).json()
            assert "new-1" not in {hit["product_id"] for hit in gone["results"]}
        finally:
            stop.set()
            for reader in readers:
                reader.join()
        assert not failures
        assert http.get("/v1/catalog").json()["index"] == "hnsw"


def test_the_service_on_milvus_lite_forwards_the_token(triton, tmp_path: Path, monkeypatch) -> None:
    import pymilvus

    opened: list[dict] = []
    real_client = pymilvus.MilvusClient

    class RecordingClient(real_client):  # type: ignore[misc, valid-type]
        """The real client, noting what it was opened with."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            opened.append(dict(kwargs))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(pymilvus, "MilvusClient", RecordingClient)
    settings = ApiSettings.from_environment(
        {"MILVUS_TOKEN": "shop:secret"}, triton_url=triton.grpc_url, catalog=str(tmp_path / "catalog.db"),
        api_key=API_KEY, image_dir=tmp_path / "photos")
    assert settings.milvus == MilvusConnection(token="shop:secret")
    photos = [product_jpeg(seed, size=(256, 256)) for seed in (70, 71, 72)]
    with ServiceThread(settings) as service, service.client() as http:
        for index, photo in enumerate(photos):
            put(http, f"m-{index}", photo, colour="red")
        put(http, "m-0", photos[2], colour="blue")
        assert http.delete("/v1/products/m-1", headers=WRITE).status_code == 204
        found = http.post("/v1/search", params={"k": 3}, files={"image": ("q.jpg", photos[2])}).json()["results"]
        assert {hit["product_id"] for hit in found} == {"m-0", "m-2"}
        assert http.get("/v1/products/m-0").json()["extra"] == {"colour": "blue"}
        assert http.get("/readyz").status_code == 200
    assert opened and all(options.get("token") == "shop:secret" for options in opened)


def test_milvus_tls_settings_reach_the_client() -> None:
    connection = MilvusConnection.from_environment({"MILVUS_TOKEN": "t", "MILVUS_SERVER_PEM": "/tls/server.pem",
                                                    "MILVUS_SERVER_NAME": "milvus.shop"})
    assert connection.client_options() == {"token": "t", "server_pem_path": "/tls/server.pem",
                                           "server_name": "milvus.shop", "secure": True}
    assert MilvusConnection().client_options() == {"token": ""}


def test_the_catalog_settings_come_from_the_environment() -> None:
    settings = ApiSettings.from_environment({"SHOPVISION_CATALOG_EF_SEARCH": "384", "SHOPVISION_CATALOG_THREADS": "2",
                                             "SHOPVISION_CATALOG_QUEUE": "8", "SHOPVISION_CATALOG_WAIT_S": "2.5"})
    assert settings.catalog_ef_search == 384
    assert settings.catalog_limits == CatalogLimits(search_threads=2, queued=8, wait_s=2.5)
    assert ApiSettings.from_environment({}).catalog_ef_search is None


def test_readiness_says_why_without_naming_paths_or_triton(triton, tmp_path: Path) -> None:
    """A catalog indexed with other weights keeps the pod out of service; the probe, which anyone who reaches the
    service may read, says why without the catalog's path or Triton's address (those go to the log)."""
    import sqlite3

    catalog = tmp_path / "catalog"
    build_catalog(catalog, 10, triton.grpc_url)
    with sqlite3.connect(catalog / "catalog.sqlite") as db:
        db.execute("UPDATE metadata SET value = ? WHERE name = 'model_sha256'", ("f" * 64,))
    settings = ApiSettings(triton_url=triton.grpc_url, catalog=str(catalog))
    with ServiceThread(settings) as service, service.client() as http:
        deadline = time.monotonic() + 60
        while "weights" not in (probe := http.get("/readyz")).json()["checks"] and time.monotonic() < deadline:
            time.sleep(0.1)
    assert probe.status_code == 503
    weights = probe.json()["checks"]["weights"]
    assert weights.startswith("the catalog was indexed with") and f"sha256 {'f' * 64}" in weights, weights
    assert str(tmp_path) not in probe.text and triton.grpc_url.split("//")[1] not in probe.text, probe.text
