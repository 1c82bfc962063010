"""Catalog engines at scale: build throughput, query latency and HNSW recall, side by side.

    python -m benchmarks.catalog                        # 10k and 100k vectors (~15 min on 2 cores)
    python -m benchmarks.catalog --sizes 2000 --queries 50 --out /tmp/smoke   # seconds

Vectors are generated (unit vectors around cluster centres, 2048-d), not embedded photos: at
~35 photos/s on 2 cores, embedding 100k photos takes most of an hour, and search cost depends
only on the vectors. Photo-to-results latency = the served embed latency (benchmarks.run) plus
the search latency here. Writes results.json, results.csv and report.md under --out.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from benchmarks import PUBLISHED, SCRATCH, publish, rerender
from shopvision.catalog import Catalog, Product
from shopvision.catalog.faiss_store import HNSW_THRESHOLD
from shopvision.contract import RESNET50_EMBEDDING_DIM

INSERT_BATCH = 1024
ENGINES = ("faiss-exact", "faiss-hnsw", "milvus-lite")


@dataclass(frozen=True)
class EnginePoint:
    engine: str
    vectors: int
    build_vectors_s: float
    """Products stored and indexed per second, ready to search (index build included)."""
    query_p50_ms: float
    query_p99_ms: float
    recall_at_10: float
    """Against exact search on the same vectors (1.0 for exact)."""
    memory_mb: float | None = None
    """What the open catalog added to this process's resident memory, index built (None: not measured)."""


def resident_mb() -> float:
    from benchmarks.processes import tree_rss_bytes

    return tree_rss_bytes(os.getpid()) / 2**20


def clustered(count: int, *, seed: int, clusters: int = 1000, spread: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(size=(clusters, RESNET50_EMBEDDING_DIM)).astype(np.float32)
    out = np.empty((count, RESNET50_EMBEDDING_DIM), dtype=np.float32)
    for start in range(0, count, 65536):
        size = min(65536, count - start)
        block = centres[rng.integers(0, clusters, size=size)] + spread * rng.standard_normal(
            (size, RESNET50_EMBEDDING_DIM), dtype=np.float32)
        out[start:start + size] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def open_engine(engine: str, directory: Path) -> Catalog:
    if engine == "milvus-lite":
        return Catalog.open(directory / "catalog.db")
    return Catalog.open(directory / engine, index=engine.removeprefix("faiss-"))


def measure(engine: str, vectors: np.ndarray, queries: np.ndarray, exact: list[set[str]] | None,
            directory: Path) -> tuple[EnginePoint, list[set[str]]]:
    products = [Product(f"p{i}", f"/photos/p{i}.jpg", f"{i:064x}", "label") for i in range(len(vectors))]
    resident_before = resident_mb()
    start = time.perf_counter()
    with open_engine(engine, directory) as catalog:
        for offset in range(0, len(vectors), INSERT_BATCH):
            catalog.upsert(products[offset:offset + INSERT_BATCH], vectors[offset:offset + INSERT_BATCH])
        catalog.flush()
        catalog.search(queries[0], k=10)  # FAISS builds a missing index on first search
        build_s = time.perf_counter() - start
        memory_mb = resident_mb() - resident_before
        latencies, found = [], []
        for query in queries:
            began = time.perf_counter()
            hits = catalog.search(query, k=10)
            latencies.append((time.perf_counter() - began) * 1000)
            found.append({hit.product_id for hit in hits})
    reference = exact if exact is not None else found
    recall = float(np.mean([len(a & b) / 10 for a, b in zip(found, reference, strict=True)]))
    point = EnginePoint(engine, len(vectors), round(len(vectors) / build_s, 1),
                        round(float(np.percentile(latencies, 50)), 2), round(float(np.percentile(latencies, 99)), 2),
                        round(recall, 3), round(memory_mb, 1))
    return point, found


def _findings(points: list[EnginePoint]) -> list[str]:
    """What this run's points say about the engines; nothing about an engine or size it did not measure."""
    by_engine: dict[str, list[EnginePoint]] = {}
    for point in points:
        by_engine.setdefault(point.engine, []).append(point)
    lines = []
    exact = sorted(by_engine.get("faiss-exact", []), key=lambda point: point.vectors)
    if exact:
        largest = exact[-1]
        lines.append(f"Exact search took {largest.query_p50_ms / largest.vectors * 1000:.2f} ms per 1,000 vectors "
                     f"per query (p50) at {largest.vectors:,} vectors.")
    hnsw = sorted(by_engine.get("faiss-hnsw", []), key=lambda point: point.vectors)
    if hnsw:
        lines.append("HNSW's p50 per query: " + ", ".join(f"{point.query_p50_ms} ms at {point.vectors:,}"
                                                          for point in hnsw)
                     + f"; its lowest recall@10 {min(point.recall_at_10 for point in hnsw)}.")
    largest_size = max(point.vectors for point in points)
    missing = [engine for engine in ENGINES
               if all(point.vectors != largest_size for point in by_engine.get(engine, []))]
    if missing:
        lines.append(f"Not measured at {largest_size:,} vectors in this run: {', '.join(missing)}.")
    return lines


def report(results: dict) -> str:
    points = [EnginePoint(**point) for point in results["points"]]
    command = results["command"]
    measured = results.get("measured") or {}
    lines = [
        "# Catalog search benchmark", "",
        f"Measured {measured.get('at', 'at a time this run did not record')} by `{command}` on "
        f"{measured.get('machine', 'a machine this run did not record')}"
        + (f", commit {results['commit']} (code fingerprint {results['code_fingerprint']})" if "commit" in results
           else "") + ". Generated clustered unit vectors, "
        f"{RESNET50_EMBEDDING_DIM}-d; {INSERT_BATCH} products per commit; queries are held-out vectors from the same "
        "clusters, one at a time (k=10, no label filter).", "",
        "| engine | vectors | build vectors/s | build s | memory MB | query p50 ms | query p99 ms "
        "| recall@10 vs exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [f"| {p.engine} | {p.vectors:,} | {p.build_vectors_s:,.0f} | {p.vectors / p.build_vectors_s:,.0f} | "
              f"{'not measured' if p.memory_mb is None else f'{p.memory_mb:,.0f}'} | {p.query_p50_ms} | "
              f"{p.query_p99_ms} | {p.recall_at_10} |" for p in points]
    lines += ["", *_findings(points), "",
              f"The embedded engine's `index=\"auto\"` switches from exact to HNSW at {HNSW_THRESHOLD:,} "
              "products (`shopvision.catalog.faiss_store.HNSW_THRESHOLD`).", "",
              "Milvus Lite is a pure-Python implementation of Milvus' API for trying it locally; its speed says "
              "nothing about a Milvus server or cluster, which the same code reaches by URI.", "",
              f"Rerun: `{command}`; `--render --out DIR` rewrites this report from DIR/results.json."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES))
    parser.add_argument("--out", type=Path, default=SCRATCH / "catalog",
                        help=f"default: {SCRATCH / 'catalog'}; the published report: {PUBLISHED / 'catalog'}")
    parser.add_argument("--render", action="store_true", help="only rewrite report.md from results.json")
    args = parser.parse_args(argv)
    if args.render:
        return rerender(args.out, report)
    command = " ".join(["python -m benchmarks.catalog", *(argv if argv is not None else sys.argv[1:])])
    args.out.mkdir(parents=True, exist_ok=True)
    measured = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "machine": f"{platform.platform()}, {os.cpu_count()} cores, faiss {faiss.__version__}"}
    points = []
    for size in args.sizes:
        everything = clustered(size + args.queries, seed=size)
        vectors, queries = everything[:size], everything[size:]
        exact = None
        for engine in sorted(args.engines, key=lambda name: name != "faiss-exact"):
            with tempfile.TemporaryDirectory(dir=args.out) as scratch:
                point, found = measure(engine, vectors, queries, exact, Path(scratch))
            if engine == "faiss-exact":
                exact = found
            points.append(point)
            print(point, flush=True)
    results = {"command": command, "measured": measured, "points": [asdict(p) for p in points]}
    with (args.out / "results.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(asdict(points[0])))
        writer.writeheader()
        writer.writerows(asdict(p) for p in points)
    publish(args.out, results, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
