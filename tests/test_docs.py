"""The README is a front page that links every document, and no relative link points nowhere."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(document: Path) -> list[str]:
    return [link for link in LINK.findall(document.read_text()) if not re.match(r"[a-z]+://|#|mailto:", link)]


def test_the_readme_links_every_document_and_fits_two_screens() -> None:
    linked = {(ROOT / link.split("#")[0]).resolve() for link in relative_links(ROOT / "README.md")}
    assert set(DOCUMENTS[1:]) <= linked, sorted(str(path) for path in set(DOCUMENTS[1:]) - linked)
    assert len((ROOT / "README.md").read_text().splitlines()) <= 110


def test_every_relative_link_resolves() -> None:
    broken = [f"{document.relative_to(ROOT)}: {link}" for document in DOCUMENTS for link in relative_links(document)
              if not (document.parent / link.split("#")[0]).exists()]
    assert broken == []


def median(values: list[float]) -> float:
    import statistics

    return statistics.median(values)


def test_the_search_service_figures_are_the_reports() -> None:
    from benchmarks.search_service import ratios

    results = json.loads((ROOT / "benchmarks" / "results" / "search-service" / "results.json").read_text())
    found = {name: median(values) for name, values in ratios(results["rounds"]).items()}
    service = {point: median([r[point]["core_ms_per_request"]["service"] for r in results["rounds"]])
               for point in ("api_classify_c8", "api_search_c1")}
    text = " ".join((ROOT / "docs" / "search-service.md").read_text().split())
    for figure in (f"serves {found['throughput']:.2f}× the SDK's", f"p99 {found['p99_added_ms']:.1f} ms above",
                   f"search adds {found['search_added_p50_ms']:.1f} ms to the p50",
                   f"{service['api_classify_c8']:.1f} core-ms per classification",
                   f"{service['api_search_c1']:.1f} per search",
                   f"{results['memory']['per_100k_mb']} MB per 100,000 products"):
        assert figure in text, figure


def test_the_readme_states_how_shopvision_compares_with_the_naive_server_as_measured() -> None:
    from benchmarks import paired

    results = json.loads((ROOT / "benchmarks" / "results" / "full" / "results.json").read_text())
    medians = {target.name: target.median for target in paired.targets(results["paired"])}
    c1, c8 = medians["served ≥ 0.95× naive server, HTTP c=1"], medians["served ≥ 1.00× naive server, HTTP c=8"]
    p99 = medians["… with p99 no worse than the naive server's, HTTP c=8 (Triton/naive p99)"]
    for document in (ROOT / "README.md", ROOT / "docs" / "benchmarks.md"):
        text = " ".join(document.read_text().split())
        assert (f"{c1:.2f}× its images a second over HTTP at concurrency 1 and {c8:.2f}× at concurrency 8, "
                f"with about {round(p99)}× its p99 there") in text, document.name


def table_rows(document: Path, heading_cell: str) -> dict[str, list[str]]:
    """The rows of the markdown table whose header starts with ``heading_cell``, by first cell."""
    text = document.read_text()
    table = text[text.index(f"| {heading_cell} |"):].split("\n\n", 1)[0].splitlines()[2:]
    return {cells[0]: cells[1:] for cells in ([cell.strip() for cell in row.strip("|").split("|")] for row in table)}


def test_the_preprocessing_accuracy_table_is_what_preprocessing_measures() -> None:
    import numpy as np

    from shopvision.serving.preprocessing import Preprocessor
    from tests.images import photo_jpeg
    from tests.reference import reference_pixels
    from tests.test_parity import LARGE_PHOTOS

    rows = table_rows(ROOT / "docs" / "models.md", "image")
    # The images test_parity serves: its "jpeg" case and its large photos (seeds 20, 21).
    images = {"640×480 JPEG": photo_jpeg(), **{f"{w}×{h} JPEG": photo_jpeg(20 + index, (w, h))
                                               for index, (w, h) in enumerate(LARGE_PHOTOS.values())}}
    for name, data in images.items():
        difference = np.abs(Preprocessor()([data])[0] - reference_pixels(data))
        mean, largest = rows[name]
        assert mean.split()[0] == f"{difference.mean():.4f}" and largest == f"{difference.max():.3f}", name


def variant_ratio(results: dict, name: str, metric: str, concurrency: int) -> float:
    points = {(point["variant"], point["concurrency"]): point for point in results["variants"]}
    return points[(name, concurrency)][metric] / points[("default", concurrency)][metric]


def test_the_serving_modes_figures_are_the_full_reports() -> None:
    from benchmarks import paired

    results = json.loads((ROOT / "benchmarks" / "results" / "full" / "results.json").read_text())
    text = " ".join((ROOT / "docs" / "serving-modes.md").read_text().split())
    def ratio(name: str, metric: str = "throughput", concurrency: int = 8) -> str:
        return f"{variant_ratio(results, name, metric, concurrency):.2f}"

    for figure in (f"({ratio('two_instances_one_thread')}× at gRPC c=8), but a lone image runs on one core: p50 at "
                   f"c=1 {ratio('two_instances_one_thread', 'p50_ms', 1)}× longer",
                   f"{ratio('two_instances_all_cores')}× at c=8, p50 at c=1 "
                   f"{ratio('two_instances_all_cores', 'p50_ms', 1)}×",
                   f"{ratio('global_thread_pool')}× at c=8",
                   f"({ratio('unbounded_batches')}× at c=8, p99 {ratio('unbounded_batches', 'p99_ms')}×)",
                   f"({ratio('no_batching')}×, p99 {ratio('no_batching', 'p99_ms')}×)",
                   f"({ratio('gpu_config_on_cpu')}×;"):
        assert figure in text, figure
    medians = {target.name: target.median for target in paired.targets(results["paired"])}
    native = "native CPU config ≥ the python_ort stand-in's img/s, gRPC"
    p99 = "… with p99 no worse than the stand-in's, gRPC"
    assert (f"{medians[f'{native} c=1']:.2f}× its img/s at gRPC c=1 and {medians[f'{native} c=8']:.2f}× at c=8, "
            f"with p99 {medians[f'{p99} c=1 (native/stand-in p99)']:.2f}× and "
            f"{medians[f'{p99} c=8 (native/stand-in p99)']:.2f}× its own") in text
    cpu = "\n".join(paired.cpu_lines(results["paired"]))
    patterns = (r"\| tritonserver \| ([\d.]+) \|", r"\| resnet50 \| – \| ([\d.]+) \|",
                r"\| resnet50 \| – \| [\d.]+ \| ([\d.]+) \|")
    tritonserver, stand_in, in_process = (round(float(re.search(pattern, cpu).group(1)))  # type: ignore[union-attr]
                                          for pattern in patterns)
    assert (f"about {tritonserver} core-ms per image, where the stand-in's resnet50 stubs spend about "
            f"{stand_in} and the same ORT work in process about {in_process}") in text


def test_the_catalog_figures_are_the_catalog_reports() -> None:
    points = {(point["engine"], point["vectors"]): point for name in ("catalog", "catalog-1m") for point in
              json.loads((ROOT / "benchmarks" / "results" / name / "results.json").read_text())["points"]}
    exact_100k, exact_1m = points[("faiss-exact", 100_000)], points[("faiss-exact", 1_000_000)]
    hnsw_100k, hnsw_1m = points[("faiss-hnsw", 100_000)], points[("faiss-hnsw", 1_000_000)]
    text = " ".join((ROOT / "docs" / "catalog.md").read_text().split())
    for figure in (f"p50 {round(exact_100k['query_p50_ms'])} ms at 100k, {round(exact_1m['query_p50_ms'])} ms at 1M",
                   f"p50 {hnsw_100k['query_p50_ms']} ms at 100k, {hnsw_1m['query_p50_ms']} ms at 1M, "
                   f"p99 {hnsw_1m['query_p99_ms']} ms",
                   f"recall@10 {hnsw_100k['recall_at_10']} against exact up to 100k and "
                   f"{hnsw_1m['recall_at_10']} at 1M",
                   f"{hnsw_1m['memory_mb']:,.0f} MB of memory",
                   f"and {hnsw_1m['vectors'] / hnsw_1m['build_vectors_s']:.0f} s to build"):
        assert figure in text, figure


def test_the_categories_figures_are_the_reports() -> None:
    from benchmarks.categories import span, summary

    results = json.loads((ROOT / "benchmarks" / "results" / "categories" / "results.json").read_text())
    figures = summary(results)
    cost = (f"{figures['head_us']:.0f} µs", f"{figures['head_share_percent']:.2f} % of ResNet50's",
            f"held-out accuracy {results['head']['held_out_accuracy']:.3f}")
    for document, quoted in ((ROOT / "README.md", cost),
                             (ROOT / "docs" / "categories.md", (*cost, f"throughput {span(figures['throughput'])}"))):
        text = " ".join(document.read_text().split())
        for figure in quoted:
            assert figure in text, (document.name, figure)
