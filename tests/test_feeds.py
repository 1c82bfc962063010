"""Product feeds: ``shopvision index sync`` from a real feed (../shared/data's products), its photos served over
real HTTP on 127.0.0.1 and from a local S3 (moto's server), embedded by the stub Triton into a real FAISS catalog.

Offline (part of `make test-fast`): the stub's embeddings are a hash of the bytes, which is all a sync's
bookkeeping needs (same bytes, same vector). tests/test_feeds_live.py runs a sync against the real tritonserver.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import shopvision
from shopvision.catalog import Catalog
from shopvision.catalog.feeds import (
    FeedError,
    FeedMapping,
    FeedRow,
    FetchSettings,
    ImageCache,
    ImageFetcher,
    ImageFetchError,
    RowProblem,
    SyncOptions,
    SyncReport,
    read_rows,
    sync_feed,
)
from shopvision.cli.main import main
from shopvision.contract import MAX_IMAGE_BYTES
from tests.support.certificates import self_signed_certificate
from tests.support.feeds import (
    PhotoServer,
    Served,
    ShopProduct,
    shop_products,
    write_jsonl,
    write_tsv,
)
from tests.support.stub_triton import StubTriton

JPEG = b"\xff\xd8\xff\xe0" + b"\x00" * 64
LOCAL = FetchSettings(allow_private=True, timeout_s=2.0, retries=1, backoff_s=0.05)
"""The photo server is on 127.0.0.1, which a feed may reach only when allowed."""


@pytest.fixture(scope="module")
def products() -> list[ShopProduct]:
    return shop_products()


@pytest.fixture
def photos(products: list[ShopProduct]) -> Iterator[PhotoServer]:
    with PhotoServer() as server:
        server.serve_products(products)
        yield server


def rows_of(text: bytes, format: str, mapping: FeedMapping | None = None) -> list[FeedRow | RowProblem]:
    return list(read_rows(io.BytesIO(text), format, mapping))


# --- formats -----------------------------------------------------------------------------------------------------

def test_the_four_formats_read_as_the_same_rows() -> None:
    expected = FeedRow(2, "sku-1", "https://cdn.example/1.jpg", ("https://cdn.example/1b.jpg", "https://cdn.example/1c.jpg"),
                       {"title": "Red shoe", "price": "49.90 EUR", "brand": "Acme",
                        "additional_image_link": "https://cdn.example/1b.jpg,https://cdn.example/1c.jpg"})
    tsv = (b"id\ttitle\tprice\tbrand\timage_link\tadditional_image_link\n"
           b"sku-1\tRed shoe\t49.90 EUR\tAcme\thttps://cdn.example/1.jpg\thttps://cdn.example/1b.jpg,https://cdn.example/1c.jpg\n")
    xml = b"""<?xml version="1.0"?>
<rss version="2.0" xmlns:g="http://base.google.com/ns/1.0"><channel><title>Shop</title>
<item><g:id>sku-1</g:id><title>Red shoe</title><g:price>49.90 EUR</g:price><g:brand>Acme</g:brand>
<g:image_link>https://cdn.example/1.jpg</g:image_link>
<g:additional_image_link>https://cdn.example/1b.jpg</g:additional_image_link>
<g:additional_image_link>https://cdn.example/1c.jpg</g:additional_image_link>
<g:shipping><g:country>DE</g:country></g:shipping></item></channel></rss>"""
    shopify = (b"Handle,Title,Variant Price,Vendor,Image Src,Extra Images,Internal\n"
               b'sku-1,Red shoe,49.90 EUR,Acme,https://cdn.example/1.jpg,"https://cdn.example/1b.jpg,https://cdn.example/1c.jpg",x\n')
    mapping = FeedMapping.parse(["id=Handle", "image_link=Image Src", "additional_image_link=Extra Images",
                                 "title=Title", "price=Variant Price", "brand=Vendor"], exclude=["Internal"])
    jsonl = json.dumps({"id": "sku-1", "title": "Red shoe", "price": "49.90 EUR", "brand": "Acme",
                        "image_link": "https://cdn.example/1.jpg",
                        "additional_image_link": ["https://cdn.example/1b.jpg", "https://cdn.example/1c.jpg"]}).encode()
    assert rows_of(tsv, "tsv") == [expected]
    assert rows_of(xml, "xml") == [FeedRow(1, *list(vars(expected).values())[1:])]  # XML rows count items
    assert rows_of(shopify, "csv", mapping) == [expected]
    assert rows_of(b"\n" + jsonl + b"\n", "jsonl") == [expected]


def test_bad_rows_are_problems_with_their_row_and_the_rest_is_read() -> None:
    tsv = (b"id\timage_link\tprice\n"
           b"a\thttps://x/a.jpg\t1\n"
           b"\thttps://x/b.jpg\t2\n"
           b"c\t\t3\n"
           b"a\thttps://x/a2.jpg\t4\n"
           b"d\thttps://x/d.jpg\t5\textra\n"
           b"e\thttps://x/e.jpg\t6\n")
    rows = rows_of(tsv, "tsv")
    assert [row.product_id for row in rows if isinstance(row, FeedRow)] == ["a", "e"]
    problems = {row.row: row.reason for row in rows if isinstance(row, RowProblem)}
    assert problems == {3: "no 'id': every product needs an id", 4: "no 'image_link': every product needs an image",
                        5: "duplicate id: an earlier row has it", 6: "1 more values than the header has columns"}
    jsonl = rows_of(b'{"id": "a", "image_link": "https://x/a.jpg", "price": 9.5, "on_sale": true}\n[1]\n{bad\n',
                    "jsonl")
    assert jsonl[0] == FeedRow(1, "a", "https://x/a.jpg", (), {"price": "9.5", "on_sale": "true"})
    assert [(row.row, row.reason[:10]) for row in jsonl[1:]] == [(2, "a JSON lis"), (3, "not JSON: ")]


def test_oversized_metadata_is_a_row_problem() -> None:
    rows = rows_of(json.dumps({"id": "a", "image_link": "https://x/a.jpg", "description": "x" * 20_000}).encode(),
                   "jsonl")
    assert isinstance(rows[0], RowProblem) and "16384 bytes" in rows[0].reason and "--exclude" in rows[0].reason


def test_an_xml_feed_with_entities_is_refused_whole() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
            b"<rss><channel><item><id>&b;</id><image_link>https://x/a.jpg</image_link></item></channel></rss>")
    with pytest.raises(FeedError, match="not a well-formed or safe XML feed"):
        rows_of(bomb, "xml")


# --- fetching ----------------------------------------------------------------------------------------------------

def test_private_addresses_and_other_schemes_are_refused(tmp_path: Path) -> None:
    with PhotoServer(routes={"/a.jpg": Served(JPEG), "/to-file": Served(b"", status=302, location="file:///etc/passwd")}
                     ) as server, ImageFetcher(ImageCache(tmp_path), FetchSettings(retries=0)) as fetcher:
        for url in (f"{server.url}/a.jpg", "http://localhost:1/a.jpg", "http://169.254.169.254/latest/meta-data",
                    "http://[::ffff:10.0.0.1]/a.jpg"):
            with pytest.raises(ImageFetchError, match="private, loopback or reserved address: refused"):
                fetcher.fetch(url)
        with pytest.raises(ImageFetchError, match="not an http"):
            fetcher.fetch("file:///etc/passwd")
        assert server.requests == {}  # refused before a connection
    with PhotoServer(routes={"/to-file": Served(b"", status=302, location="file:///etc/passwd")}) as server, \
            ImageFetcher(ImageCache(tmp_path), LOCAL) as fetcher, \
            pytest.raises(ImageFetchError, match="redirected to a file: URL"):
        fetcher.fetch(f"{server.url}/to-file")


def test_a_fetch_refuses_what_is_not_a_sound_image(tmp_path: Path) -> None:
    routes = {
        "/html.jpg": Served(b"<html>sold out</html>", content_type="text/html"),
        "/text-as-jpeg.jpg": Served(b"<html>sold out</html>"),
        "/big.jpg": Served(JPEG + b"\x00" * MAX_IMAGE_BYTES),
        "/slow.jpg": Served(JPEG, delay_s=1.5),
        "/loop": Served(b"", status=302, location="/loop"),
        "/moved.jpg": Served(b"", status=301, location="/a.jpg"),
        "/a.jpg": Served(JPEG),
    }
    settings = FetchSettings(allow_private=True, timeout_s=0.5, retries=1, backoff_s=0.01)
    with PhotoServer(routes=routes) as server, ImageFetcher(ImageCache(tmp_path), settings) as fetcher:
        def reason(path: str) -> str:
            with pytest.raises(ImageFetchError) as caught:
                fetcher.fetch(server.url + path)
            return caught.value.reason

        assert reason("/html.jpg") == "content type text/html, not an image"
        assert reason("/text-as-jpeg.jpg") == "not an image: its bytes start b'<html>so'"
        oversized = len(JPEG) + MAX_IMAGE_BYTES
        assert reason("/big.jpg") == f"{oversized} bytes: over the {MAX_IMAGE_BYTES}-byte limit of an image"
        assert reason("/missing.jpg") == "HTTP 404 Not Found"
        assert reason("/slow.jpg").startswith("timed out") and reason("/slow.jpg").endswith("(after 2 tries)")
        assert server.requests["/slow.jpg"] == 4  # two fetches, one retry each
        assert reason("/loop") == "more than 5 redirects"
        moved = fetcher.fetch(server.url + "/moved.jpg")
        assert moved.read() == JPEG and moved.transferred


def test_https_is_verified_against_the_name_though_the_checked_address_is_dialled(tmp_path: Path) -> None:
    certificate, key = self_signed_certificate(tmp_path, name="localhost")
    trusting = FetchSettings(allow_private=True, ca_file=str(certificate), retries=0)
    with PhotoServer(routes={"/a.jpg": Served(JPEG)}, tls=(certificate, key)) as server:
        port = server.url.rsplit(":", 1)[1]
        with ImageFetcher(ImageCache(tmp_path / "trusting"), trusting) as fetcher:
            assert fetcher.fetch(server.url + "/a.jpg").read() == JPEG
            with pytest.raises(ImageFetchError, match="CERTIFICATE_VERIFY_FAILED"):  # the certificate names localhost
                fetcher.fetch(f"https://127.0.0.1:{port}/a.jpg")
        with ImageFetcher(ImageCache(tmp_path / "default"), FetchSettings(allow_private=True, retries=0)) as fetcher, \
                pytest.raises(ImageFetchError, match="CERTIFICATE_VERIFY_FAILED"):
            fetcher.fetch(server.url + "/a.jpg")  # not signed by a CA the system trusts


def test_transient_failures_are_retried_and_unchanged_images_are_not_sent_again(tmp_path: Path) -> None:
    flaky = Served(JPEG, status=503)
    with PhotoServer(routes={"/a.jpg": flaky}) as server, \
            ImageFetcher(ImageCache(tmp_path), FetchSettings(allow_private=True, retries=3, backoff_s=0.01)) as fetcher:
        with pytest.raises(ImageFetchError, match=r"HTTP 503 \(after 4 tries\)"):
            fetcher.fetch(server.url + "/a.jpg")
        flaky.status = 200
        first = fetcher.fetch(server.url + "/a.jpg")
        again = fetcher.fetch(server.url + "/a.jpg")
        assert (first.transferred, again.transferred) == (True, False)
        assert again.content_sha256 == first.content_sha256 and again.read() == JPEG
        assert server.transfers["/a.jpg"] == 1 and server.requests["/a.jpg"] == 6


# --- sync --------------------------------------------------------------------------------------------------------

def sync(stub: StubTriton, catalog: Path, feed: Path | str, **options: object) -> SyncReport:
    settings = {"fetch": LOCAL, "cache": catalog.parent / "cache", **options}
    with shopvision.Client(stub.url) as client, Catalog.open(catalog, client=client) as opened:
        return sync_feed(opened, str(feed), SyncOptions(**settings))  # type: ignore[arg-type]


def test_a_feed_syncs_then_resyncs_only_what_changed(stub_triton: StubTriton, products: list[ShopProduct],
                                                     photos: PhotoServer, tmp_path: Path) -> None:
    rows = [product.row(photos.url) for product in products]
    broken = {  # rows whose image cannot be had, each for its own reason
        "grocery-010": ("/missing.jpg", "HTTP 404 Not Found"),
        "grocery-011": ("/html.jpg", "content type text/html, not an image"),
        "grocery-012": ("/big.jpg", "over the 8388608-byte limit of an image"),
        "grocery-013": ("/slow.jpg", "timed out"),
    }
    photos.routes["/html.jpg"] = Served(b"<html></html>", content_type="text/html")
    photos.routes["/big.jpg"] = Served(JPEG + b"\x00" * MAX_IMAGE_BYTES)
    photos.routes["/slow.jpg"] = Served(JPEG, delay_s=3)
    photos.routes["/moved/grocery-014.jpg"] = Served(b"", status=302, location="/photos/grocery-014/0.jpg")
    for row in rows:
        if row["id"] in broken:
            row["image_link"] = photos.url + broken[row["id"]][0]
    redirected = next(row for row in rows if row["id"] == "grocery-014")
    redirected["image_link"] = photos.url + "/moved/grocery-014.jpg"  # a redirect to a real photo
    feed = write_tsv(tmp_path / "feed.tsv", rows)
    catalog = tmp_path / "catalog"

    first = sync(stub_triton, catalog, feed)
    good = len(rows) - len(broken)
    extra = sum(len(product.photos) - 1 for product in products)  # the Amazon samples' additional_image_link
    assert extra >= 6
    assert (first.rows, first.added, first.fetched, first.complete) == (len(rows), good, good + extra, True)
    failures = {problem.product_id: problem for problem in first.failed}
    assert set(failures) == set(broken)
    for product_id, (path, reason) in broken.items():
        assert reason in failures[product_id].reason and failures[product_id].url == photos.url + path
        assert failures[product_id].row == 2 + next(i for i, row in enumerate(rows) if row["id"] == product_id)
    with shopvision.Client(stub_triton.url) as client, Catalog.open(catalog, client=client) as opened:
        assert opened.count() == good
        sample = products[5]
        hits = opened.search(sample.photos[0].read_bytes(), k=3)
        assert hits[0].product_id == sample.product_id and hits[0].score == pytest.approx(1.0)
        assert hits[0].extra["price"] == sample.price and hits[0].extra["feed"] == str(feed.resolve())
        assert hits[0].path == rows[5]["image_link"]
        assert opened.get("grocery-014") is not None  # through the redirect
        # A product of several photos is one product, found by any of its photos, which the hit names.
        several = products[0]
        held = opened.get(several.product_id)
        assert held is not None and [photo.path for photo in held.photos] == [
            rows[0]["image_link"], *rows[0]["additional_image_link"].split(",")]
        for number, photo in enumerate(several.photos):
            top = opened.search(photo.read_bytes(), k=1)[0]
            assert (top.product_id, top.photo, top.path) == (several.product_id, number, held.photos[number].path)
            assert top.score == pytest.approx(1.0)

    # The shop changes its feed: a price, a new main photo, a new additional photo, a product gone, a product new.
    changed = [dict(row) for row in rows]
    changed[1]["price"] = "19.99 USD"
    photos.routes[f"/photos/{changed[2]['id']}/0.jpg"] = Served(products[40].photos[0].read_bytes())
    gone = changed.pop(3)["id"]
    grown = changed[4]
    grown["additional_image_link"] = f"{photos.url}/photos/{grown['id']}/1.jpg"
    photos.routes[f"/photos/{grown['id']}/1.jpg"] = Served(products[50].photos[0].read_bytes())
    changed.append({**products[0].row(photos.url), "id": "new-product", "additional_image_link": "",
                    "image_link": f"{photos.url}/photos/{products[0].product_id}/1.jpg"})  # another photo of it
    photos.reset_counts()
    write_tsv(feed, changed)
    second = sync(stub_triton, catalog, feed)
    assert (second.added, second.reembedded, second.metadata_updated, second.removed) == (1, 2, 1, 1)
    assert second.unchanged == good - 4
    sent = {path: count for path, count in photos.transfers.items() if path.startswith("/photos/")}
    # Only the changed photo and the new one came again; the new product's photo was in the cache already.
    assert second.fetched == 2 and sent == {f"/photos/{changed[2]['id']}/0.jpg": 1,
                                            f"/photos/{grown['id']}/1.jpg": 1}
    assert second.not_modified == good - 1 + extra
    assert not list((catalog.parent / "cache").glob(".sync-state-*"))  # the run's bookkeeping went with it
    with shopvision.Client(stub_triton.url) as client, Catalog.open(catalog, client=client) as opened:
        assert opened.count() == good
        assert opened.get(gone) is None
        assert opened.get(changed[1]["id"]).extra["price"] == "19.99 USD"  # type: ignore[union-attr]
        hits = opened.search(products[40].photos[0].read_bytes(), k=2)
        assert {hit.product_id for hit in hits} == {changed[2]["id"], products[40].product_id}
        twins = opened.search(products[0].photos[1].read_bytes(), k=2)  # its own photo, and another product's 2nd
        assert {(hit.product_id, hit.photo) for hit in twins} == {("new-product", 0), (products[0].product_id, 1)}
        top = opened.search(products[50].photos[0].read_bytes(), k=2)
        assert (grown["id"], 1) in {(hit.product_id, hit.photo) for hit in top}
        assert len(opened.get(grown["id"]).photos) == 2  # type: ignore[union-attr]


def test_left_products_are_marked_or_kept_and_other_sources_are_left_alone(
        stub_triton: StubTriton, products: list[ShopProduct], photos: PhotoServer, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog"
    with shopvision.Client(stub_triton.url) as client, Catalog.open(catalog, client=client) as opened:
        opened.build([shopvision.catalog.CatalogItem("uploaded", products[0].photos[1])])
    rows = [product.row(photos.url) for product in products[:6]]
    feed = write_tsv(tmp_path / "feed.tsv", rows)
    sync(stub_triton, catalog, feed)
    write_tsv(feed, rows[:4])
    marked = sync(stub_triton, catalog, feed, missing="mark-unavailable")
    assert (marked.marked_unavailable, marked.removed, marked.unchanged) == (2, 0, 4)
    kept = sync(stub_triton, catalog, feed, missing="keep")
    assert (kept.marked_unavailable, kept.removed) == (0, 0)
    write_tsv(feed, [])  # a broken export removes nothing
    assert sync(stub_triton, catalog, feed).removed == 0
    write_tsv(feed, rows[:1])
    assert sync(stub_triton, catalog, feed).removed == 5
    with Catalog.open(catalog) as opened:
        assert opened.get(rows[4]["id"]) is None
        assert opened.get("uploaded") is not None  # not the feed's
        assert opened.count() == 2


def test_an_interrupted_sync_resumes_where_it_stopped(stub_triton: StubTriton, products: list[ShopProduct],
                                                      photos: PhotoServer, tmp_path: Path) -> None:
    feed = write_jsonl(tmp_path / "feed.jsonl", [product.row(photos.url) for product in products[:40]])
    catalog = tmp_path / "catalog"
    batches = 0

    def interrupt_after_two(report: SyncReport) -> None:
        nonlocal batches
        batches += 1
        if batches == 2:
            raise KeyboardInterrupt

    with shopvision.Client(stub_triton.url) as client, Catalog.open(catalog, client=client) as opened:
        with pytest.raises(KeyboardInterrupt):
            sync_feed(opened, str(feed), SyncOptions(fetch=LOCAL, cache=tmp_path / "cache", batch_size=8),
                      progress=interrupt_after_two)
        assert opened.count() == 16
    photos.reset_counts()
    resumed = sync(stub_triton, catalog, feed, batch_size=8)
    assert (resumed.added, resumed.unchanged, resumed.removed) == (24, 16, 0)
    assert resumed.not_modified >= 16 and resumed.fetched <= 24  # what was fetched before is revalidated
    with Catalog.open(catalog) as opened:
        assert opened.count() == 40


def test_cli_sync_prints_a_json_summary_and_reports_every_failure(
        stub_triton: StubTriton, products: list[ShopProduct], photos: PhotoServer, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    rows = [product.row(photos.url) for product in products[:5]]
    rows[2]["image_link"] = photos.url + "/nowhere.jpg"
    feed = write_tsv(tmp_path / "feed.tsv", rows)
    arguments = ["index", "sync", str(feed), "--index", str(tmp_path / "catalog"), "--url", stub_triton.url,
                 "--cache", str(tmp_path / "cache"), "--json"]
    assert main(arguments) == 1  # not every row indexed
    refused = json.loads(capsys.readouterr().out)
    assert (refused["rows"], refused["added"], len(refused["failed"])) == (5, 0, 5)
    assert all("a private, loopback or reserved address: refused" in problem["reason"]  # the SSRF guard's default
               for problem in refused["failed"])
    assert main([*arguments, "--allow-private-addresses"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["rows"], summary["added"], summary["embedded"]) == (5, 4, 4)
    assert summary["failed"] == [{"row": 4, "reason": "HTTP 404 Not Found", "product_id": rows[2]["id"],
                                  "url": photos.url + "/nowhere.jpg"}]
    rows[2]["image_link"] = products[2].row(photos.url)["image_link"]
    write_tsv(feed, rows)
    assert main([*arguments[:-1], "--allow-private-addresses"]) == 0
    assert "added 1, re-embedded 0, metadata updated 0, unchanged 4" in capsys.readouterr().out


def test_a_feed_and_its_photos_on_s3(stub_triton: StubTriton, products: list[ShopProduct], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        for name, value in {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "test",
                            "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}.items():
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="shop")
        rows = []
        for product in products[:12]:
            s3.put_object(Bucket="shop", Key=f"photos/{product.product_id}.jpg", Body=product.photos[0].read_bytes())
            rows.append({**product.row("unused"), "image_link": f"s3://shop/photos/{product.product_id}.jpg",
                         "additional_image_link": ""})
        s3.put_object(Bucket="shop", Key="feeds/products.jsonl",
                      Body=write_jsonl(tmp_path / "products.jsonl", rows).read_bytes())
        catalog = tmp_path / "catalog"
        first = sync(stub_triton, catalog, "s3://shop/feeds/products.jsonl")
        assert (first.added, first.fetched, first.failed) == (12, 12, [])
        s3.put_object(Bucket="shop", Key=f"photos/{products[0].product_id}.jpg",
                      Body=products[1].photos[0].read_bytes())
        second = sync(stub_triton, catalog, "s3://shop/feeds/products.jsonl")
        assert (second.reembedded, second.unchanged, second.fetched, second.not_modified) == (1, 11, 1, 11)
        with Catalog.open(catalog) as opened:
            assert opened.get(products[0].product_id).extra["feed"] == "s3://shop/feeds/products.jsonl"  # type: ignore[union-attr]
    finally:
        server.stop()
        os.environ.pop("AWS_ENDPOINT_URL", None)


def test_a_sync_through_the_search_service_leaves_it_the_only_writer(
        stub_triton: StubTriton, products: list[ShopProduct], photos: PhotoServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from shopvision.api.settings import ApiSettings
    from tests.support.search_service import ServiceThread

    settings = ApiSettings(triton_url=stub_triton.url, catalog=str(tmp_path / "catalog"), api_key="writer",
                           read_key="reader")
    rows = [product.row(photos.url) for product in products[:30]]
    feed = write_tsv(tmp_path / "feed.tsv", rows)
    with ServiceThread(settings) as service, service.client(headers={"X-API-Key": "reader"}) as http:
        arguments = ["index", "sync", str(feed), "--service", service.url, "--allow-private-addresses",
                     "--cache", str(tmp_path / "cache"), "--json"]
        monkeypatch.setenv("SHOPVISION_API_KEY", "reader")
        assert main(arguments) != 0  # a read key cannot write: the sync stops at its first write, and says why
        assert "403 this key reads; writes need the write key" in capsys.readouterr().err
        assert http.get("/v1/products").json()["products"] == []
        monkeypatch.setenv("SHOPVISION_API_KEY", "writer")
        assert main(arguments) == 0
        first = json.loads(capsys.readouterr().out)
        assert (first["added"], first["failed"]) == (30, [])
        listed = http.get("/v1/products", params={"limit": 200}).json()["products"]
        assert sorted(item["product_id"] for item in listed) == sorted(row["id"] for row in rows)
        photo = http.get(f"/v1/products/{rows[4]['id']}/image")
        assert photo.content == products[4].photos[0].read_bytes()  # the service keeps the photo it embedded
        several = products[0]  # and every photo of a product of several, in the feed's order
        record = http.get(f"/v1/products/{several.product_id}").json()
        assert [item["content_sha256"] for item in record["photos"]] == [
            hashlib.sha256(path.read_bytes()).hexdigest() for path in several.photos]
        last = len(several.photos) - 1
        assert http.get(record["photos"][last]["image_url"]).content == several.photos[last].read_bytes()

        rows[0]["price"] = "1.00 USD"
        del rows[1]["brand"]
        gone = rows.pop(2)["id"]
        write_tsv(feed, rows)
        assert main(arguments) == 0
        second = json.loads(capsys.readouterr().out)
        assert (second["metadata_updated"], second["removed"], second["embedded"], second["unchanged"]) == (2, 1, 0, 27)
        assert http.get(f"/v1/products/{rows[0]['id']}").json()["extra"]["price"] == "1.00 USD"
        assert "brand" not in http.get(f"/v1/products/{rows[1]['id']}").json()["extra"]
        assert http.get(f"/v1/products/{gone}").status_code == 404


FEED_SYNC_VALUES = {"api": {"enabled": True, "apiKeySecret": "shop-api", "feedSync": {
    "enabled": True, "feedUrl": "https://shop.example/feed.tsv", "schedule": "*/30 * * * *", "missing": "keep",
    "credentialsSecret": "feed-credentials", "extraArgs": ["--concurrency", "4"]}}}


def test_the_charts_cronjob_syncs_through_the_service_with_the_write_key() -> None:
    import kubernetes_validate

    from tests.test_deploy import KUBERNETES_VERSION, render

    assert "feed-sync" not in str(render({"api": {"enabled": True}}, component="feed-sync"))  # off by default
    rendered = render(FEED_SYNC_VALUES, component="feed-sync")
    assert list(rendered) == ["CronJob"]
    cronjob = rendered["CronJob"]
    kubernetes_validate.validate(cronjob, KUBERNETES_VERSION, strict=True)
    assert cronjob["spec"]["schedule"] == "*/30 * * * *" and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] + container["args"] == [
        "shopvision", "index", "sync", "https://shop.example/feed.tsv", "--service", "http://shop-shopvision-api:8080",
        "--missing", "keep", "--cache", "/cache", "--json", "--concurrency", "4"]
    assert container["env"][0] == {"name": "SHOPVISION_API_KEY",
                                   "valueFrom": {"secretKeyRef": {"name": "shop-api", "key": "api-key"}}}
    assert container["envFrom"] == [{"secretRef": {"name": "feed-credentials"}}]
    assert pod["securityContext"]["runAsNonRoot"] and container["securityContext"]["allowPrivilegeEscalation"] is False
    labels = cronjob["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    api_selector = render(FEED_SYNC_VALUES, component="search-api")["Service"]["spec"]["selector"]
    assert not api_selector.items() <= labels.items()  # the API's Service never sends requests to the job


def test_the_cronjobs_command_runs(stub_triton: StubTriton, products: list[ShopProduct], photos: PhotoServer,
                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The rendered job's own arguments, with the feed and the service's address pointed at local ones."""
    from shopvision.api.settings import ApiSettings
    from tests.support.search_service import ServiceThread
    from tests.test_deploy import render

    feed = write_tsv(tmp_path / "feed.tsv", [product.row(photos.url) for product in products[:5]])
    values = {"api": {**FEED_SYNC_VALUES["api"], "feedSync": {"enabled": True, "feedUrl": str(feed),
                                                              "allowPrivateAddresses": True}}}
    (container,) = render(values, component="feed-sync")["CronJob"]["spec"]["jobTemplate"]["spec"]["template"][
        "spec"]["containers"]
    settings = ApiSettings(triton_url=stub_triton.url, catalog=str(tmp_path / "catalog"), api_key="writer")
    with ServiceThread(settings) as service, service.client() as http:
        arguments = [service.url if argument == "http://shop-shopvision-api:8080" else
                     str(tmp_path / "cache") if argument == "/cache" else argument for argument in container["args"]]
        monkeypatch.setenv("SHOPVISION_API_KEY", "writer")
        assert main(arguments) == 0
        assert json.loads(capsys.readouterr().out)["added"] == 5
        assert len(http.get("/v1/products").json()["products"]) == 5


def test_the_status_line_shows_counts_rate_and_eta_on_a_terminal_only() -> None:
    from shopvision.cli._common import SyncProgress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    report = SyncReport(feed="f", rows=300, fetched=250, not_modified=40, added=200, reembedded=10,
                        failed=[RowProblem(2, "HTTP 404")], elapsed_s=60.0, feed_read=0.25)
    terminal, redirected = Terminal(), io.StringIO()
    for stream in (terminal, redirected):
        status = SyncProgress(stream=stream, interval_s=0.0)
        status(report)
        status.end()
    assert terminal.getvalue() == ("\rsync  rows 300  fetched 250  not modified 40  embedded 210  failed 1  "
                                   "5.0 rows/s  ETA 3m00s\x1b[K\n")
    assert redirected.getvalue() == ""
