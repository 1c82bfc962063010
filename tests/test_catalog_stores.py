"""Both vector engines behind the catalog, through the same tests (no server needed)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time

import numpy as np
import pytest

from shopvision.catalog import Catalog, CatalogError, CatalogSourceError, Product, read_source
from shopvision.catalog.faiss_store import SCHEMA_VERSION, FaissStore
from shopvision.contract import RESNET50_EMBEDDING_DIM
from tests.support.vectors import clustered_vectors

ENGINES = ["faiss", "milvus-lite"]


def products(count: int, *, start: int = 0, labels: tuple[str, ...] = ("shoe", "bag", "hat")) -> list[Product]:
    return [Product(product_id=f"sku-{i}", path=f"/photos/{i}.jpg", content_sha256=f"{i:064x}",
                    label=labels[i % len(labels)], extra={"price": str(i)}) for i in range(start, start + count)]


@pytest.fixture(params=ENGINES)
def location(request: pytest.FixtureRequest, tmp_path) -> str:
    return str(tmp_path / "catalog") if request.param == "faiss" else str(tmp_path / "catalog.db")


def test_upsert_search_and_metadata_round_trip(location) -> None:
    vectors = clustered_vectors(200)
    with Catalog.open(location) as catalog:
        catalog.upsert(products(200), vectors)
        hits = catalog.search(vectors[17], k=3)
        assert hits[0].product_id == "sku-17"
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].extra == {"price": "17"} and hits[0].label == "hat" and hits[0].path == "/photos/17.jpg"
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    with Catalog.open(location) as reopened:
        stats = reopened.stats()
        assert stats.products == 200 and stats.dimension == RESNET50_EMBEDDING_DIM
        assert stats.labels == {"shoe": 67, "bag": 67, "hat": 66}
        assert reopened.search(vectors[42], k=1)[0].product_id == "sku-42"
        assert len(reopened.fingerprints()) == 200


def test_label_filter_keeps_only_those_labels(location) -> None:
    vectors = clustered_vectors(120)
    with Catalog.open(location) as catalog:
        catalog.upsert(products(120), vectors)
        hits = catalog.search(vectors[0], k=10, labels=["hat"])
        assert len(hits) == 10 and {hit.label for hit in hits} == {"hat"}
        assert catalog.search(vectors[0], k=5, labels=["no-such-label"]) == []


def test_replace_and_remove(location) -> None:
    vectors = clustered_vectors(60)
    with Catalog.open(location) as catalog:
        catalog.upsert(products(60), vectors)
        moved = products(1, start=5)
        catalog.upsert(moved, vectors[[40]])  # sku-5 now looks like sku-40
        assert catalog.stats().products == 60
        assert {hit.product_id for hit in catalog.search(vectors[40], k=2)} == {"sku-5", "sku-40"}
        assert catalog.remove(["sku-40", "sku-5", "sku-unknown"]) == 2
        assert catalog.stats().products == 58
        assert not {"sku-5", "sku-40"} & {hit.product_id for hit in catalog.search(vectors[40], k=5)}
    with Catalog.open(location) as reopened:
        assert reopened.stats().products == 58


def test_k_larger_than_the_catalog_and_empty_catalog(location) -> None:
    with Catalog.open(location) as catalog:
        assert catalog.search(clustered_vectors(1)[0], k=5) == []
        catalog.upsert(products(3), clustered_vectors(3))
        assert len(catalog.search(clustered_vectors(1)[0], k=50)) == 3
        with pytest.raises(ValueError):
            catalog.search(clustered_vectors(1)[0], k=0)


def test_searching_by_photo_without_a_server_is_a_clear_error(location) -> None:
    with Catalog.open(location) as catalog, pytest.raises(CatalogError, match="needs a server"):
        catalog.search(b"\xff\xd8 not used", k=1)


def test_hnsw_recall_at_10_against_exact_search(tmp_path) -> None:
    """ANN quality of the embedded engine's HNSW settings on the same vectors (measured 1.00 here)."""
    everything = clustered_vectors(5200, clusters=200, seed=1)
    vectors, queries = everything[:5000], everything[5000:]  # queries are not in the index
    items = products(5000)
    stores = {kind: FaissStore(tmp_path / kind, dimension=RESNET50_EMBEDDING_DIM, index=kind)
              for kind in ("exact", "hnsw")}
    results = {}
    for kind, store in stores.items():
        store.upsert(items, vectors)
        results[kind] = store.search(queries, k=10, labels=None)
        assert store.index_kind() == kind
        store.close()
    recall = np.mean([len({h.product_id for h in approx} & {h.product_id for h in exact}) / 10
                      for approx, exact in zip(results["hnsw"], results["exact"], strict=True)])
    assert recall >= 0.95, f"HNSW recall@10 vs exact = {recall:.3f}"


def test_ef_search_trades_search_time_for_recall(tmp_path) -> None:
    """Near ties (500 vectors a cluster) defeat a narrow search; the catalog's ef_search widens it."""
    everything = clustered_vectors(4100, clusters=8, seed=2)
    vectors, queries = everything[:4000], everything[4000:]
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    with Catalog.open(tmp_path / "c", index="hnsw") as catalog:
        catalog.upsert(products(4000), vectors)
    recall = {}
    for ef_search in (10, 400):
        with Catalog.open(tmp_path / "c", ef_search=ef_search) as catalog:
            found = catalog.search_many(list(queries), k=10)
            recall[ef_search] = np.mean([len({f"sku-{i}" for i in row} & {hit.product_id for hit in hits}) / 10
                                         for row, hits in zip(exact, found, strict=True)])
    assert recall[400] >= 0.95 and recall[400] > recall[10] + 0.05, recall
    with pytest.raises(CatalogError, match="ef_search"):
        Catalog.open(tmp_path / "c", ef_search=0)


def test_auto_index_switches_to_hnsw_at_the_threshold(tmp_path) -> None:
    store = FaissStore(tmp_path / "catalog", dimension=RESNET50_EMBEDDING_DIM, hnsw_threshold=100)
    vectors = clustered_vectors(150)
    store.upsert(products(99), vectors[:99])
    assert store.index_kind() == "exact"
    store.upsert(products(51, start=99), vectors[99:])
    assert store.index_kind() == "exact"  # a write never rebuilds: upkeep does, in the background
    store.maintain()
    assert store.index_kind() == "hnsw"
    assert store.search(vectors[120], k=1, labels=None)[0][0].product_id == "sku-120"
    assert store.remove(["sku-120"]) == 1
    assert store.search(vectors[120], k=1, labels=None)[0][0].product_id != "sku-120"
    store.close()


def test_replace_and_delete_in_an_hnsw_graph_show_at_once_without_a_rebuild(tmp_path) -> None:
    """Deleted and replaced vectors are masked at search time; the graph is the same object throughout."""
    store = FaissStore(tmp_path / "catalog", dimension=RESNET50_EMBEDDING_DIM, index="hnsw")
    vectors = clustered_vectors(600, seed=1)
    store.upsert(products(500), vectors[:500])
    graph = store._index
    store.upsert(products(50, start=0), vectors[500:550])  # sku-0..49 get new photos
    assert store.remove([f"sku-{i}" for i in range(50, 100)]) == 50
    store.upsert(products(50, start=1000), vectors[550:600])
    assert store._index is graph and store.deleted_slots() == 100 and store.count() == 500
    assert store.search(vectors[3], k=1, labels=None)[0][0].product_id != "sku-3"  # its old photo is gone
    assert store.search(vectors[503], k=1, labels=None)[0][0].product_id == "sku-3"
    assert store.search(vectors[560], k=1, labels=None)[0][0].product_id == "sku-1010"
    found = {hit.product_id for row in store.search(vectors[50:100], k=10, labels=None) for hit in row}
    assert not found & {f"sku-{i}" for i in range(50, 100)}
    live = np.concatenate([vectors[500:550], vectors[50:500][50:], vectors[550:600]])
    ids = [f"sku-{i}" for i in [*range(50), *range(100, 500), *range(1000, 1050)]]
    queries = clustered_vectors(40, seed=9)
    exact = [{ids[i] for i in np.argsort(-(live @ query))[:10]} for query in queries]
    approx = [{hit.product_id for hit in row} for row in store.search(queries, k=10, labels=None)]
    recall = np.mean([len(a & e) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.95, f"recall@10 after churn = {recall:.3f}"
    store.close()


def test_deletions_past_the_limit_rebuild_in_the_background_while_searches_go_on(tmp_path) -> None:
    store = FaissStore(tmp_path / "catalog", dimension=RESNET50_EMBEDDING_DIM, index="hnsw", rebuild_min_deleted=30)
    vectors = clustered_vectors(300, seed=2)
    store.upsert(products(300), vectors)
    store.remove([f"sku-{i}" for i in range(29)])
    store.maintain()
    assert store.deleted_slots() == 29  # under the limit: masked, not rebuilt
    store.remove(["sku-29"])
    searching = threading.Event()
    answers: list[str] = []

    def search() -> None:
        while not searching.is_set():
            answers.append(store.search(vectors[150], k=1, labels=None)[0][0].product_id)

    reader = threading.Thread(target=search)
    reader.start()
    old = store._index
    store.maintain()
    searching.set()
    reader.join()
    assert store._index is not old and store.deleted_slots() == 0 and store._index.ntotal == 270
    assert answers and set(answers) == {"sku-150"}
    store.close()


def test_an_older_checkpoint_is_caught_up_from_sqlite(tmp_path) -> None:
    """A crash after writes the last checkpoint lacks: the index loads and catches up; nothing is rebuilt."""
    directory = tmp_path / "catalog"
    vectors = clustered_vectors(40)
    store = FaissStore(directory, dimension=RESNET50_EMBEDDING_DIM)
    store.upsert(products(20), vectors[:20])
    store.close()
    (older,) = directory.glob("vectors-*.faiss")
    saved = older.read_bytes()
    store = FaissStore(directory, dimension=RESNET50_EMBEDDING_DIM)
    store.upsert(products(10, start=20), vectors[20:30])
    store.upsert(products(1, start=5), vectors[30:31])  # sku-5 replaced
    store.remove(["sku-7"])
    store.close()
    (newer,) = directory.glob("vectors-*.faiss")
    newer.unlink()
    older.write_bytes(saved)  # as if the process had been killed before it saved again
    store = FaissStore(directory, dimension=RESNET50_EMBEDDING_DIM)
    store.prepare()
    assert store._index.ntotal == 31 and store.deleted_slots() == 2  # 20 loaded + 11 caught up; 2 masked
    assert store.search(vectors[25], k=1, labels=None)[0][0].product_id == "sku-25"
    assert store.search(vectors[30], k=1, labels=None)[0][0].product_id == "sku-5"
    assert "sku-7" not in {hit.product_id for hit in store.search(vectors[7], k=40, labels=None)[0]}
    store.close()
    assert [path.name for path in directory.glob("vectors-*.faiss")] == [newer.name]


def test_concurrent_searches_never_see_a_product_half_replaced(tmp_path) -> None:
    """A product's vector and its metadata change together: a search finds the old or the new one."""
    store = FaissStore(tmp_path / "catalog", dimension=RESNET50_EMBEDDING_DIM, index="hnsw")
    vectors = clustered_vectors(202, seed=4)
    store.upsert(products(200), vectors[:200])
    versions = [Product("flip", f"/photos/{name}.jpg", name * 32, "shoe", {"version": name}) for name in ("a", "b")]
    done = threading.Event()
    mixed: list[str] = []
    seen: set[str] = set()

    def search() -> None:
        while not done.is_set():
            for version, query in zip("ab", vectors[200:], strict=True):
                for hit in store.search(query, k=3, labels=None)[0]:
                    if hit.product_id == "flip":
                        seen.add(hit.extra["version"])
                        if (hit.score > 0.999) != (hit.extra["version"] == version):
                            mixed.append(f"{version}: {hit}")

    readers = [threading.Thread(target=search) for _ in range(3)]
    for reader in readers:
        reader.start()
    for round_ in range(200):
        store.upsert([versions[round_ % 2]], vectors[200 + round_ % 2][np.newaxis])
        time.sleep(0.002)  # let the searches in between writes
    done.set()
    for reader in readers:
        reader.join()
    assert not mixed and seen == {"a", "b"}
    store.close()


def test_a_version_1_catalog_is_migrated_on_open(tmp_path) -> None:
    directory = tmp_path / "catalog"
    directory.mkdir()
    vectors = clustered_vectors(3)
    with sqlite3.connect(directory / "catalog.sqlite") as db:
        db.executescript("""
            CREATE TABLE products (key INTEGER PRIMARY KEY, product_id TEXT NOT NULL UNIQUE, path TEXT NOT NULL,
                content_sha256 TEXT NOT NULL, label TEXT NOT NULL, extra TEXT NOT NULL, vector BLOB NOT NULL);
            CREATE TABLE metadata (name TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO metadata VALUES ('schema_version', '1'), ('dimension', '2048'), ('generation', '1');""")
        db.executemany("INSERT INTO products VALUES (?, ?, '', ?, 'shoe', ?, ?)",
                       [(p.key, p.product_id, p.content_sha256, json.dumps({"colour": colour, "size": size}),
                         vector.tobytes())
                        for p, colour, size, vector in zip(products(3), ("red", "blue", "red"), ("40", "41", "39.5"),
                                                           vectors, strict=True)])
    (directory / "vectors-1.faiss").write_bytes(b"an index keyed by product, unusable now")
    with Catalog.open(directory) as catalog:
        assert [hit.product_id for hit in catalog.search(vectors[1], k=1)] == ["sku-1"]
        red = catalog.search(vectors[0], k=3, where={"colour": "red"})
        assert {hit.product_id for hit in red} == {"sku-0", "sku-2"}
        assert catalog.extra_columns() == {"colour", "size"}
        # Its numbers are indexed on the way to version 3: comparisons work on what version 1 stored.
        assert {hit.product_id for hit in catalog.search(vectors[0], k=3, where=["size<=40"])} == {"sku-0", "sku-2"}
        catalog.upsert(products(1, start=3), clustered_vectors(1, seed=5))
        assert catalog.count() == 4 and catalog.content_in_use(f"{3:064x}") and not catalog.content_in_use("f" * 64)
    assert json.loads(json.dumps(FaissStore(directory).metadata()))["schema_version"] == SCHEMA_VERSION


def test_wrong_dimension_is_refused(location) -> None:
    from shopvision.catalog.milvus_store import MilvusStore

    Catalog.open(location, dimension=RESNET50_EMBEDDING_DIM).close()
    engine = MilvusStore if location.endswith(".db") else FaissStore
    with pytest.raises(CatalogError, match="holds 2048-d vectors .* 512-d: it was built on another backbone"):
        engine(location, dimension=512)


def test_a_new_catalog_takes_the_width_of_its_first_vectors_and_keeps_it(location) -> None:
    """A MobileNet v2 catalog (1280-d): nothing fixes its width before the first write, and nothing changes it after."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(6, 1280)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with Catalog.open(location) as catalog:
        assert catalog.count() == 0 and catalog.search(vectors[0], k=3) == []
        catalog.upsert(products(6), vectors)
        catalog.flush()
        assert catalog.stats().dimension == 1280
    with Catalog.open(location) as catalog:
        assert [hit.product_id for hit in catalog.search(vectors[4], k=1)] == ["sku-4"]
    with pytest.raises(CatalogError, match="holds 1280-d vectors .* 2048-d"):
        Catalog.open(location, dimension=RESNET50_EMBEDDING_DIM)


def test_csv_and_folder_sources(tmp_path) -> None:
    photos = tmp_path / "photos"
    (photos / "shoes").mkdir(parents=True)
    (photos / "shoes" / "red.JPG").write_bytes(b"x")
    (photos / "bag.png").write_bytes(b"x")
    (photos / "notes.txt").write_text("not an image")
    assert [(i.product_id, i.path.name) for i in read_source(photos)] == [("bag", "bag.png"), ("shoes/red", "red.JPG")]

    table = tmp_path / "products.csv"
    table.write_text("product_id,image_path,title,price\nsku-1,photos/bag.png,Tote,19.90\n"
                     f"sku-2,{photos / 'shoes' / 'red.JPG'},Runner,\n")
    items = read_source(table)
    assert [i.product_id for i in items] == ["sku-1", "sku-2"]
    assert items[0].path == tmp_path / "photos" / "bag.png"
    assert items[0].extra == {"title": "Tote", "price": "19.90"} and items[1].extra == {"title": "Runner", "price": ""}

    # A product's further rows add photos, and take the first row's metadata.
    table.write_text("product_id,image_path,title\na,x.jpg,Tote\nb,z.jpg,Shoe\na,y.jpg,\na,w.jpg,Tote\n")
    assert [(i.product_id, i.path.name, i.extra) for i in read_source(table)] == [
        ("a", "x.jpg", {"title": "Tote"}), ("b", "z.jpg", {"title": "Shoe"}), ("a", "y.jpg", {"title": "Tote"}),
        ("a", "w.jpg", {"title": "Tote"})]
    for text, message in [("id,path\n", "missing column"), ("product_id,image_path\nsku,\n", "must not be empty"),
                          ("product_id,image_path,title\na,x.jpg,Tote\na,y.jpg,Bag\n", "other metadata")]:
        table.write_text(text)
        with pytest.raises(CatalogSourceError, match=message):
            read_source(table)
    with pytest.raises(CatalogSourceError, match="not a folder"):
        read_source(tmp_path / "missing")


def test_get_similar_and_metadata_filters(location) -> None:
    vectors = clustered_vectors(60)
    items = [Product(product_id=f"sku-{i}", path="", content_sha256=f"{i:064x}", label=("shoe", "bag")[i % 2],
                     extra={"colour": ("red", "blue", "green")[i % 3], "note": "it's \"quoted\""}) for i in range(60)]
    with Catalog.open(location) as catalog:
        catalog.upsert(items, vectors)
        catalog.flush()
        assert catalog.get("sku-7") == items[7] and catalog.get("sku-x") is None
        similar = catalog.similar("sku-7", k=5)
        # The oracle: the 5 nearest by cosine similarity to sku-7's own vector, sku-7 itself left out.
        closeness = vectors @ vectors[7]
        nearest = [f"sku-{i}" for i in np.argsort(-closeness) if i != 7][:5]
        assert similar is not None and [hit.product_id for hit in similar] == nearest
        np.testing.assert_allclose([hit.score for hit in similar], sorted(closeness[np.arange(60) != 7])[::-1][:5],
                                   atol=1e-5)
        assert catalog.similar("sku-x") is None
        red = catalog.search(vectors[0], k=60, where={"colour": "red"})
        assert len(red) == 20 and {hit.extra["colour"] for hit in red} == {"red"}
        red_shoes = catalog.search(vectors[0], k=60, labels=["shoe"], where={"colour": "red"})
        assert len(red_shoes) == 10 and {(h.label, h.extra["colour"]) for h in red_shoes} == {("shoe", "red")}
        assert len(catalog.search(vectors[0], k=60, where={"note": 'it\'s "quoted"'})) == 60  # values are data
        assert catalog.search(vectors[0], k=5, where={"colour": "' OR 1=1 --"}) == []
        columns = catalog.extra_columns()
        assert columns is None or columns == {"colour", "note"}  # Milvus cannot list a JSON field's keys


def test_an_index_another_writer_saved_is_picked_up(tmp_path) -> None:
    vectors = clustered_vectors(40)
    location = tmp_path / "catalog"
    with Catalog.open(location) as reader:
        reader.upsert(products(20), vectors[:20])
        reader.flush()
        assert reader.search(vectors[30], k=1)[0].product_id != "sku-30"
        with Catalog.open(location) as writer:  # another process, as far as SQLite is concerned
            writer.upsert(products(20, start=20), vectors[20:])
        assert reader.search(vectors[30], k=1)[0].product_id == "sku-30"
        assert reader.stats().products == 40


def test_pages_walk_the_catalog_in_product_id_order_while_it_changes(location) -> None:
    """A cursor walk sees, once each and in order, every product there throughout; one added behind the cursor is
    not seen, one added ahead is, one removed ahead is not."""
    vectors = clustered_vectors(27)
    with Catalog.open(location) as catalog:
        catalog.upsert(products(25), vectors[:25])
        every = sorted(f"sku-{i}" for i in range(25))
        behind, ahead = (Product(product_id=pid, path="", content_sha256="0" * 64, label="hat")
                         for pid in ("sku-00", "sku-99"))
        seen: list[str] = []
        cursor = None
        while page := catalog.page(after=cursor, limit=7):
            seen += [product.product_id for product in page]
            cursor = page[-1].product_id
            if len(seen) == 14:
                catalog.upsert([behind, ahead], vectors[25:])
                catalog.remove([every[20]])
        assert seen == every[:14] + sorted({*every[14:], "sku-99"} - {every[20]})
        first = catalog.page(limit=3)
        assert [p.product_id for p in first] == ["sku-0", "sku-00", "sku-1"]
        assert first[0].extra == {"price": "0"} and first[0].path == "/photos/0.jpg"
        assert catalog.page(after="sku-99", limit=5) == []
        with pytest.raises(ValueError):
            catalog.page(limit=0)


def test_metadata_changes_keep_the_photo_and_the_vector(location) -> None:
    vectors = clustered_vectors(30)
    with Catalog.open(location) as catalog:
        catalog.upsert(products(30), vectors)
        before, (vector,) = catalog.stored("sku-7")
        updated = catalog.update_metadata("sku-7", {"price": "49.90", "brand": "acme"})
        assert updated is not None and updated.extra == {"price": "49.90", "brand": "acme"}
        after, (stored_vector,) = catalog.stored("sku-7")
        assert after.extra == {"price": "49.90", "brand": "acme"}
        assert (after.path, after.content_sha256, after.label) == (before.path, before.content_sha256, before.label)
        assert np.array_equal(stored_vector, vector)
        assert catalog.search(vectors[7], k=1)[0].product_id == "sku-7"
        assert [hit.product_id for hit in catalog.search(vectors[7], k=3, where={"brand": "acme"})] == ["sku-7"]
        assert catalog.update_metadata("sku-7", {"brand": None}).extra == {"price": "49.90"}
        assert catalog.search(vectors[7], k=3, where={"brand": "acme"}) == []
        assert catalog.update_metadata("no-such", {"price": "1"}) is None
        assert catalog.count() == 30


def test_a_milvus_lite_collection_whose_creation_was_killed_is_made_again(tmp_path) -> None:
    """``kill -9`` between Milvus Lite making a collection's folder and writing its schema (the catalog's first
    write) left a folder Lite would neither open nor create again: every later build failed (found by
    test_catalog.py's indexer kills). It holds nothing, so the next first write removes it and creates the
    collection."""
    location = str(tmp_path / "catalog.db")
    with Catalog.open(location):  # Milvus Lite lays out its file; no collection yet
        pass
    (tmp_path / "catalog.db" / "collections" / "shopvision_catalog").mkdir(parents=True)
    vectors = clustered_vectors(20)
    with Catalog.open(location) as catalog:
        catalog.upsert(products(20), vectors)
        assert catalog.count() == 20 and catalog.search(vectors[3], k=1)[0].product_id == "sku-3"
