"""What the search service (`shopvision api`) costs on top of Triton, measured in paired rounds.

    python -m benchmarks.search_service                                   # -> build/benchmarks/search-service
    python -m benchmarks.search_service --out benchmarks/results/search-service

One run, one machine: Triton (synthetic weights, the CPU configuration), the service in its own
process over a catalog of N products, and in every round, in alternating order:
* the SDK calling Triton directly (`shopvision.Client`, gRPC, one image per call, c=8);
* `POST /v1/classify` through the service at c=8 (multipart uploads, the same JPEGs);
* `POST /v1/classify` and `POST /v1/search` at c=1, for what search adds to a request's latency.
The catalog's vectors are random unit vectors in clusters, not embeddings of photos: vector search
costs the same whatever made the vectors, and embedding 100,000 photos would take an hour here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from benchmarks import RETIRED_CONFIGURATION, SCRATCH, publish, run_facts
from benchmarks.loadgen import LoadPoint, closed_loop, http_connection
from benchmarks.processes import cpu_seconds, tree_cpu_seconds, tree_rss_bytes
from benchmarks.search_http import classify_request, search_request
from shopvision.contract import RESNET50_EMBEDDING_DIM
from shopvision.samples import product_jpeg

MODES = {"quick": {"products": 20_000, "rounds": 1, "requests_c8": 48, "requests_c1": 24},
         "full": {"products": 100_000, "rounds": 3, "requests_c8": 400, "requests_c1": 150}}
TARGETS = {"throughput": 0.95, "p99_added_ms": 10.0, "search_added_p50_ms": 5.0}


def clustered_unit_vectors(count: int, *, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    width = RESNET50_EMBEDDING_DIM
    centres = rng.normal(size=(200, width)).astype(np.float32)
    vectors = centres[rng.integers(0, 200, size=count)] + 0.35 * rng.normal(size=(count, width)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def build_catalog(location: Path, count: int, triton_url: str) -> dict[str, float]:
    import shopvision
    from shopvision.catalog import Catalog, Product

    started = time.perf_counter()
    with shopvision.Client(triton_url) as client, Catalog.open(location) as catalog:
        catalog.check_model(client.provenance(), url=triton_url)  # the service checks the catalog's weights
        for start in range(0, count, 10_000):
            size = min(10_000, count - start)
            products = [Product(product_id=f"sku-{i}", path="", content_sha256=f"{i:064x}",
                                label=("shoe", "bag", "hat", "shirt")[i % 4], extra={"colour": ("red", "blue")[i % 2]})
                        for i in range(start, start + size)]
            catalog.upsert(products, clustered_unit_vectors(size, seed=start))
        catalog.flush()  # saves the search index (HNSW from 20,000 products on)
        index = catalog.stats().index
    size = sum(path.stat().st_size for path in location.rglob("*") if path.is_file())
    return {"products": count, "index": index, "build_s": round(time.perf_counter() - started, 1),
            "disk_mb": round(size / 2**20, 1)}


class ServiceProcess:
    """`shopvision api` in a process of its own, so its CPU and memory are its own."""

    def __init__(self, triton_url: str, catalog: Path, log: Path, *, environ: Mapping[str, str] | None = None,
                 port: int | None = None) -> None:
        from shopvision.server.tritonserver import free_ports

        self.port = port or free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self._process = subprocess.Popen(
            [sys.executable, "-m", "shopvision.cli.main", "api", "--url", triton_url, "--catalog", str(catalog),
             "--port", str(self.port)], stdout=log.open("ab"), stderr=subprocess.STDOUT,
            env={**os.environ, **(environ or {})})
        self.started_s = time.perf_counter()
        deadline = time.monotonic() + 600
        while not self._ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the search service did not become ready (see {log})")
            time.sleep(0.2)
        self.ready_after_s = round(time.perf_counter() - self.started_s, 2)
        """From the process's start to its first ready answer."""

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    @property
    def pid(self) -> int:
        return self._process.pid

    def rss_mb(self) -> float:
        return round(tree_rss_bytes(self._process.pid) / 2**20, 1)

    def stop(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=60)

    def kill(self) -> None:
        """``kill -9``: no shutdown, no last save."""
        self._process.kill()
        self._process.wait(timeout=60)


def sdk_closed_loop(triton_url: str, images: list[bytes], *, concurrency: int, requests: int) -> LoadPoint:
    """The SDK calling Triton directly: ``concurrency`` threads, one image per call, one shared client."""
    import shopvision

    with shopvision.Client(triton_url, max_in_flight=concurrency) as client:
        client.classify([images[0]])  # connect and warm up

        def send(image: bytes) -> bool:
            try:
                client.classify([image], top_k=5)
            except shopvision.ShopvisionError:
                return False
            return True

        return closed_loop("sdk", lambda: (send, lambda: None), images, concurrency=concurrency, requests=requests)


def with_cpu(measure: Callable[[], LoadPoint], clocks: dict[str, Callable[[], float]]) -> dict:
    """A load point, with the CPU each process spent on it, in core-milliseconds per request."""
    before = {name: clock() for name, clock in clocks.items()}
    point = measure()
    spent = {name: clock() - before[name] for name, clock in clocks.items()}
    return {**vars(point), "core_ms_per_request": {name: round(seconds * 1000 / max(point.requests, 1), 1)
                                                   for name, seconds in spent.items()}}


def measure_round(index: int, triton_url: str, service_url: str, images: list[bytes], settings: dict,
                  clocks: dict[str, Callable[[], float]]) -> dict:
    points = {
        "sdk_c8": lambda: sdk_closed_loop(triton_url, images, concurrency=8, requests=settings["requests_c8"]),
        "api_classify_c8": lambda: closed_loop("api classify", http_connection(service_url, classify_request), images,
                                               concurrency=8, requests=settings["requests_c8"]),
        "api_classify_c1": lambda: closed_loop("api classify", http_connection(service_url, classify_request), images,
                                               concurrency=1, requests=settings["requests_c1"]),
        "api_search_c1": lambda: closed_loop("api search", http_connection(service_url, search_request), images,
                                             concurrency=1, requests=settings["requests_c1"]),
    }
    order = list(points) if index % 2 == 0 else list(reversed(points))
    return {name: with_cpu(points[name], clocks) for name in order}


def ratios(rounds: list[dict]) -> dict[str, list[float]]:
    return {
        "throughput": [r["api_classify_c8"]["throughput"] / r["sdk_c8"]["throughput"] for r in rounds],
        "p99_added_ms": [r["api_classify_c8"]["p99_ms"] - r["sdk_c8"]["p99_ms"] for r in rounds],
        "search_added_p50_ms": [r["api_search_c1"]["p50_ms"] - r["api_classify_c1"]["p50_ms"] for r in rounds],
    }


def report(results: dict) -> str:
    found = ratios(results["rounds"])
    median = {name: statistics.median(values) for name, values in found.items()}
    met = {"throughput": median["throughput"] >= TARGETS["throughput"],
           "p99_added_ms": median["p99_added_ms"] <= TARGETS["p99_added_ms"],
           "search_added_p50_ms": median["search_added_p50_ms"] <= TARGETS["search_added_p50_ms"]}
    span = {name: f"{min(values):.2f} to {max(values):.2f}" for name, values in found.items()}
    catalog, memory = results["catalog"], results["memory"]
    lines = [
        "# Search service benchmark", "",
        f"Measured {results['measured_at']} on {results['machine']} ({results['cores']} cores), "
        f"{len(results['rounds'])} round(s), by `{results['command']}`. Triton: synthetic weights, "
        f"{results.get('configuration', RETIRED_CONFIGURATION)}. Every figure below comes from this run.", "",
        "## Targets", "",
        "| target | median (range over rounds) | met |", "|---|---|---|",
        f"| `/v1/classify` c=8 ≥ {TARGETS['throughput']}× the SDK calling Triton directly | "
        f"{median['throughput']:.2f}× ({span['throughput']}) | {'yes' if met['throughput'] else 'no'} |",
        f"| its p99 at most {TARGETS['p99_added_ms']:.0f} ms above the SDK's | "
        f"{median['p99_added_ms']:+.1f} ms ({span['p99_added_ms']}) | {'yes' if met['p99_added_ms'] else 'no'} |",
        f"| `/v1/search` p50 at most {TARGETS['search_added_p50_ms']:.0f} ms above `/v1/classify` (c=1, "
        f"{catalog['products']:,} products) | {median['search_added_p50_ms']:+.1f} ms "
        f"({span['search_added_p50_ms']}) | {'yes' if met['search_added_p50_ms'] else 'no'} |", "",
        "## Points", "", "| round | point | requests | failed | img/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
        *[f"| {index + 1} | {name} | {point['requests']} | {point['failures']} | {point['throughput']} | "
          f"{point['p50_ms']} | {point['p99_ms']} |"
          for index, measured in enumerate(results["rounds"]) for name, point in measured.items()], "",
        f"## Where the CPU goes (core-ms per request, median over rounds; {results['cores']} cores in all, "
        "warm-up requests included)", "",
        "| point | Triton | the service | the client |", "|---|---|---|---|",
        *[f"| {name} | " + " | ".join(
            f"{statistics.median(r[name]['core_ms_per_request'][who] for r in results['rounds']):.1f}"
            for who in ("triton", "service", "client")) + " |"
          for name in ("sdk_c8", "api_classify_c8", "api_classify_c1", "api_search_c1")], "",
        "## Catalog and memory", "",
        f"- {catalog['products']:,} products (random clustered 2048-d unit vectors with a label and a colour), "
        f"search index `{catalog['index']}`, built in {catalog['build_s']} s, {catalog['disk_mb']} MB on disk.",
        f"- The service's resident memory: {memory['empty_mb']} MB with an empty catalog, "
        f"{memory['loaded_mb']} MB with this one after the rounds: "
        f"**{memory['per_100k_mb']} MB per 100,000 products**.", "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--out", type=Path, default=None, help=f"default: {SCRATCH / 'search-service'}")
    parser.add_argument("--products", type=int, default=None, help="catalog size (default: the mode's)")
    parser.add_argument("--render", action="store_true", help="only rewrite report.md from results.json")
    args = parser.parse_args(argv)
    out = args.out or SCRATCH / "search-service"
    out.mkdir(parents=True, exist_ok=True)
    if args.render:
        (out / "report.md").write_text(report(json.loads((out / "results.json").read_text())))
        return 0
    from benchmarks.run import synthetic_repository
    from shopvision.server.tritonserver import LocalTritonServer, ServerOptions, free_ports

    settings = {**MODES[args.mode], **({"products": args.products} if args.products else {})}
    images = [product_jpeg(seed, size=(640, 480)) for seed in range(16)]
    with tempfile.TemporaryDirectory(prefix="shopvision-search-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        http, grpc, metrics = free_ports(3)
        triton = LocalTritonServer(ServerOptions(synthetic_repository(scratch), http_port=http, grpc_port=grpc,
                                                 metrics_port=metrics), log=(scratch / "triton.log").open("ab"))
        triton.start()
        services: list[ServiceProcess] = []
        try:
            catalog = build_catalog(scratch / "catalog", settings["products"], triton.grpc_url)
            empty = ServiceProcess(triton.grpc_url, scratch / "empty-catalog", scratch / "api-empty.log")
            services.append(empty)
            empty_mb = empty.rss_mb()
            loaded = ServiceProcess(triton.grpc_url, scratch / "catalog", scratch / "api.log")
            services.append(loaded)
            # Triton with its stubs, the service, and the client (loadgen or the SDK: this process alone).
            triton_pid, service_pid, client_pid = triton.pid, loaded.pid, os.getpid()
            assert triton_pid is not None
            clocks = {"triton": lambda: tree_cpu_seconds(triton_pid), "service": lambda: cpu_seconds(service_pid),
                      "client": lambda: cpu_seconds(client_pid)}
            rounds = [measure_round(index, triton.grpc_url, loaded.url, images, settings, clocks)
                      for index in range(settings["rounds"])]
            loaded_mb = loaded.rss_mb()
        finally:
            for service in services:
                service.stop()
            triton.stop()
    command = " ".join(["python -m benchmarks.search_service", *(argv if argv is not None else sys.argv[1:])])
    results = {
        **run_facts(command), "mode": args.mode, "catalog": catalog, "rounds": rounds,
        "memory": {"empty_mb": empty_mb, "loaded_mb": loaded_mb,
                   "per_100k_mb": round((loaded_mb - empty_mb) * 100_000 / settings["products"])},
    }
    publish(out, results, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
