"""Several photos per product: how much better a shelf photo finds its product when the catalog holds more photos
of each, against the one-photo catalog, on both engines, with real weights.

    python -m benchmarks.multi_photo --out benchmarks/results/multi-photo

Needs ../shared/data beside the checkout (MobileNet v2 int8 and the Grocery Store Dataset; see its README). One
tritonserver serves MobileNet v2 int8 built by ``shopvision model build`` (the cpu configuration); every photo is
embedded once through it (``Client.analyze``). The catalogs:

- **1 photo** a product: its iconic catalog photo (the one-photo catalog, as before several photos existed);
- **n photos**: the iconic photo, then the product's first n-1 ``train`` shelf photos in list order (a shop's
  other listing photos, taken in the store).

Each is written with ``Catalog.upsert`` (a vector a photo) into FAISS (exact, and HNSW) and Milvus Lite, and
searched with the 296 ``val`` shelf photos (never in a catalog): a query finds its product when the product is
among the first k answers, each product answered once by its best photo. The oracle row scores every product by
its best photo in numpy; the engines must rank as it does.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import SCRATCH, machine_of, publish, rerender, run_facts
from benchmarks.grocery import GROCERY, MOBILENET, products, real_data_present, recall_at, split
from shopvision import Client, contract
from shopvision.catalog import Catalog, Product, ProductPhoto
from shopvision.modelbuild.build import build_model
from shopvision.server.tritonserver import LocalTritonServer, ServerOptions, free_ports

TEMPLATE = Path(__file__).resolve().parent.parent / "model_repository"
PHOTOS = (1, 2, 3, 5)
"""Photos a product in each catalog; 1 is the one-photo catalog."""
ENGINES = ("faiss exact", "faiss hnsw", "milvus lite")
RECALL_KS = (1, 5, 10)


def catalog_photos(most: int) -> dict[str, list[Path]]:
    """Each product's photos, iconic first, then its first ``most - 1`` train shelf photos."""
    shelf: dict[str, list[Path]] = {}
    for photo in split("train"):
        shelf.setdefault(photo.fine, []).append(photo.path)
    return {product.name: [product.iconic, *shelf.get(product.name, [])[:most - 1]] for product in products()}


def embed(client: Client, paths: list[Path]) -> dict[Path, np.ndarray]:
    results = client.analyze(paths, top_k=0, on_error="raise")
    return {path: result.vector for path, result in zip(paths, results, strict=True)}


def oracle(queries: np.ndarray, photos: dict[str, list[Path]], vectors: dict[Path, np.ndarray], k: int
           ) -> list[list[str]]:
    """Every product scored by its best photo, in numpy."""
    names = list(photos)
    best = np.stack([np.max(queries @ np.stack([vectors[path] for path in photos[name]]).T, axis=1)
                     for name in names], axis=1)
    return [[names[i] for i in np.argsort(-row, kind="stable")[:k]] for row in best]


def engine_ranking(engine: str, location: Path, photos: dict[str, list[Path]], vectors: dict[Path, np.ndarray],
                   queries: np.ndarray, k: int) -> list[list[str]]:
    location.mkdir(parents=True)
    place = str(location / "catalog.db") if engine == "milvus lite" else str(location / "catalog")
    index = {"faiss exact": "exact", "faiss hnsw": "hnsw"}.get(engine, "auto")
    items = [Product(product_id=name, path=str(paths[0]), content_sha256=f"{number:064x}", label="",
                     more_photos=tuple(ProductPhoto(str(path), f"{number:032x}{more:032x}")
                                       for more, path in enumerate(paths[1:], start=1)))
             for number, (name, paths) in enumerate(photos.items())]
    with Catalog.open(place, index=index) as catalog:
        catalog.upsert(items, np.stack([vectors[path] for paths in photos.values() for path in paths]))
        catalog.flush()
        found = catalog.search_many(list(queries), k=k)
    return [[hit.product_id for hit in row] for row in found]


def measure(work: Path) -> dict:
    repository = work / "model_repository"
    provenance = build_model(str(MOBILENET), repository, template=TEMPLATE).provenance
    http, grpc, metrics = free_ports(3)
    options = ServerOptions(repository, http_port=http, grpc_port=grpc, metrics_port=metrics)
    queries = split("val")
    truth = [photo.fine for photo in queries]
    by_size = {size: catalog_photos(size) for size in PHOTOS}
    needed = sorted({path for photos in by_size.values() for paths in photos.values() for path in paths})
    with (work / "tritonserver.log").open("wb") as log, LocalTritonServer(options, log=log) as server, \
            Client(server.grpc_url, max_in_flight=2) as client:
        vectors = embed(client, needed + [photo.path for photo in queries])
    query_vectors = np.stack([vectors[photo.path] for photo in queries])
    k = max(RECALL_KS)
    rows = []
    for size, photos in by_size.items():
        expected = oracle(query_vectors, photos, vectors, k)
        row: dict = {"photos_per_product": size, "catalog_photos": sum(len(paths) for paths in photos.values()),
                     "recall": {"oracle": {f"@{at}": round(recall_at(expected, truth, at), 4) for at in RECALL_KS}},
                     "same_ranking_as_oracle": {}}
        for engine in ENGINES:
            ranked = engine_ranking(engine, work / f"{engine.replace(' ', '-')}-{size}", photos, vectors,
                                    query_vectors, k)
            row["recall"][engine] = {f"@{at}": round(recall_at(ranked, truth, at), 4) for at in RECALL_KS}
            row["same_ranking_as_oracle"][engine] = sum(got == want for got, want in zip(ranked, expected,
                                                                                         strict=True))
        rows.append(row)
        print(f"{size} photos a product measured", flush=True)
    return {"backbone": {"name": provenance.backbone, "source_sha256": provenance.source_sha256,
                         "embedding_dim": provenance.embedding_dim},
            "products": len(by_size[1]), "queries": len(queries), "catalogs": rows}


def report(results: dict) -> str:
    catalogs = results["catalogs"]
    one = catalogs[0]["recall"]
    lines = [
        "# Several photos per product: recall against the one-photo catalog",
        "",
        f"Real weights: {results['backbone']['name']} ({results['backbone']['embedding_dim']}-d), served by "
        f"tritonserver on {results['configuration']}. The Grocery Store Dataset's {results['products']} products; "
        f"each of the {results['queries']} `val` shelf photos is a query for its product. A catalog of n photos a "
        "product holds the product's iconic photo and its first n-1 `train` shelf photos; each product is answered "
        "once, scored by its best photo (docs/catalog.md).",
        "",
        f"Measured {results['measured_at']} on {machine_of(results)}, commit "
        f"`{results['commit']}`: `{results['command']}`.",
        "",
        "| photos a product | vectors | engine | recall@1 | recall@5 | recall@10 | recall@5 over the one-photo "
        "catalog's | rankings equal to the oracle's |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in catalogs:
        for method, recall in row["recall"].items():
            same = row["same_ranking_as_oracle"].get(method)
            agreeing = "" if same is None else f"{same} of {results['queries']}"
            lines.append(f"| {row['photos_per_product']} | {row['catalog_photos']} | {method} | {recall['@1']:.3f} | "
                         f"{recall['@5']:.3f} | {recall['@10']:.3f} | {recall['@5'] / one[method]['@5']:.2f}x | "
                         f"{agreeing} |")
    lines += [
        "",
        "The oracle scores every product by its best photo in numpy; an engine's ranking equals it when its ten "
        "products come in the same order. HNSW (FAISS's, and Milvus's) is approximate: a product can be missed or "
        "swapped where two score alike.",
        "",
        "The one-photo catalog here is the real-weights report's retrieval catalog. MobileNet v2 is int8, and ONNX "
        "Runtime's int8 kernels depend on the CPU's instructions: compare recall only between runs on the same "
        "CPU (docs/catalog.md).",
        "",
        "What this does not show: the extra photos here are shelf photos from the same stores as the queries, so "
        "they are closer to the queries than a shop's studio photos from other angles would be. The gain a shop "
        "sees depends on how its photos differ from what its customers photograph.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=SCRATCH / "multi-photo")
    parser.add_argument("--render", action="store_true", help="only rewrite report.md from results.json")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render:
        return rerender(args.out, report)
    if not real_data_present(*(MOBILENET, GROCERY)):
        return 2
    with tempfile.TemporaryDirectory(prefix="shopvision-multi-photo-") as scratch:
        found = measure(Path(scratch))
    command = " ".join(["python -m benchmarks.multi_photo", *(argv if argv is not None else sys.argv[1:])])
    publish(args.out, {**run_facts(command), "contract_max_photos":
                       contract.MAX_PRODUCT_PHOTOS, **found}, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
