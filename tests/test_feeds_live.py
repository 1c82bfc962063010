"""A feed sync through the real tritonserver: the shop's real photos, fetched over HTTP, embedded by the served
model, found again by the search (tests/test_feeds.py covers the sync's rules against the stub)."""

from __future__ import annotations

from pathlib import Path

import pytest

import shopvision
from shopvision.catalog import Catalog
from shopvision.catalog.feeds import FetchSettings, SyncOptions, sync_feed
from tests.support.feeds import PhotoServer, shop_products, write_tsv
from tests.support.servers import RunningServer

pytestmark = pytest.mark.integration


def test_a_real_feed_syncs_through_the_served_model(triton: RunningServer, tmp_path: Path) -> None:
    products = shop_products()
    options = SyncOptions(fetch=FetchSettings(allow_private=True), cache=tmp_path / "cache")
    with PhotoServer() as photos, shopvision.Client(triton.grpc_url) as client, \
            Catalog.open(tmp_path / "catalog", client=client) as catalog:
        photos.serve_products(products)
        feed = write_tsv(tmp_path / "feed.tsv", [product.row(photos.url) for product in products])
        first = sync_feed(catalog, str(feed), options)
        assert (first.added, first.failed, catalog.count()) == (len(products), [], len(products))
        assert catalog.stats().dimension == client.provenance().embedding_dim
        for product in (products[0], products[40]):  # an Amazon product and a grocery one, by their own photo
            hit = catalog.search(product.photos[0], k=1)[0]
            assert hit.product_id == product.product_id and hit.score == pytest.approx(1.0, abs=1e-4)
            assert hit.extra["title"] == product.title and hit.path == product.row(photos.url)["image_link"]
        several = products[0]  # every photo of a product of several is embedded, and finds it
        last = len(several.photos) - 1
        hit = catalog.search(several.photos[last], k=1)[0]
        assert (hit.product_id, hit.photo, len(hit.photos)) == (several.product_id, last, len(several.photos))
        assert hit.score == pytest.approx(1.0, abs=1e-4)
        photo_count = sum(len(product.photos) for product in products)
        assert first.fetched == photo_count
        again = sync_feed(catalog, str(feed), options)
        assert (again.unchanged, again.embedded, again.fetched, again.not_modified) == (len(products), 0, 0,
                                                                                         photo_count)
