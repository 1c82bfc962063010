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
    added = found["p99_added_ms"]
    for figure in (f"serves {found['throughput']:.2f}× the SDK's",
                   f"p99 {abs(added):.1f} ms {'above' if added >= 0 else 'below'}",
                   f"search adds {found['search_added_p50_ms']:.1f} ms to the p50",
                   f"{service['api_classify_c8']:.1f} core-ms per classification",
                   f"{service['api_search_c1']:.1f} per search",
                   f"{results['memory']['per_100k_mb']} MB per 100,000 products"):
        assert figure in text, figure


def full_report() -> dict:
    return json.loads((ROOT / "benchmarks" / "results" / "full" / "results.json").read_text())


def naive_comparison(results: dict) -> str:
    """The README's and the benchmarks doc's sentence on the naive server, from the full report's paired rounds."""
    from benchmarks import paired

    medians = {target.name: target.median for target in paired.targets(results["paired"])}

    def figure(protocol: str, concurrency: int, metric: str) -> str:
        return f"{medians[paired.naive_target_name(protocol, concurrency, metric)]:.2f}×"

    ceiling = medians["the naive server's img/s ÷ the in-process compute ceiling, HTTP c=8"]
    return (f"{figure('HTTP', 8, 'throughput')} its images a second over HTTP and {figure('gRPC', 8, 'throughput')} "
            f"over gRPC at concurrency 8, with {figure('HTTP', 8, 'p99_ms')} and {figure('gRPC', 8, 'p99_ms')} its "
            f"p99; at concurrency 1, {figure('HTTP', 1, 'p50_ms')} and {figure('gRPC', 1, 'p50_ms')} its p50. The "
            f"naive server itself reaches {ceiling:.2f}× the in-process compute ceiling")


def test_the_readme_states_how_shopvision_compares_with_the_naive_server_as_measured() -> None:
    from benchmarks import paired

    results = full_report()
    sentence = naive_comparison(results)
    medians = {target.name: target.median for target in paired.targets(results["paired"])}
    served = medians["served fp32 gRPC c=8 ≥ 0.95× the in-process compute ceiling"]
    int8 = medians["int8 served ≥ 2.5× fp32 served (gRPC c=8)"]
    cost = re.search(r"the work costs ([\d.]+)× its in-process CPU", "\n".join(paired.cpu_lines(results["paired"])))
    assert cost is not None
    quoted = {"README.md": (f"shopvision {served:.2f}× (perf_analyzer); int8 serves {int8:.2f}× fp32",),
              "benchmarks.md": (f"shopvision's own perf_analyzer run {served:.2f}×", f"int8 served at {int8:.2f}× fp32",
                                f"the served work costs {cost.group(1)}× its in-process CPU")}
    for document in (ROOT / "README.md", ROOT / "docs" / "benchmarks.md"):
        text = " ".join(document.read_text().split())
        for figure in (sentence, *quoted[document.name]):
            assert figure in text, (document.name, figure)


def table_rows(document: Path, heading_cell: str) -> dict[str, list[str]]:
    """The rows of the markdown table whose header starts with ``heading_cell``, by first cell."""
    text = document.read_text()
    table = text[text.index(f"| {heading_cell} |"):].split("\n\n", 1)[0].splitlines()[2:]
    return {cells[0]: cells[1:] for cells in ([cell.strip() for cell in row.strip("|").split("|")] for row in table)}


def test_the_preprocessing_accuracy_table_is_what_preprocessing_measures() -> None:
    import numpy as np

    from shopvision.backend.preprocessing import Preprocessor
    from tests.support.images import photo_jpeg
    from tests.support.reference import reference_pixels
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

    results = full_report()
    text = " ".join((ROOT / "docs" / "serving-modes.md").read_text().split())

    def ratio(name: str, metric: str = "throughput", concurrency: int = 8) -> str:
        return f"{variant_ratio(results, name, metric, concurrency):.2f}×"

    medians = {target.name: target.median for target in paired.targets(results["paired"])}
    engine = "openvino ÷ onnxruntime, served"
    figures = [
        f"OpenVINO served {medians[f'{engine} img/s, gRPC c=1']:.2f}× ONNX Runtime's images a second at gRPC c=1 and "
        f"{medians[f'{engine} img/s, gRPC c=8']:.2f}× at c=8, with {medians[f'{engine} p99, gRPC c=1']:.2f}× and "
        f"{medians[f'{engine} p99, gRPC c=8']:.2f}× its p99",
        f"1 instance with a thread per core: {ratio('single_instance')} at c=8, p50 at c=1 "
        f"{ratio('single_instance', 'p50_ms', 1)}",
        f"2 instances with one thread each, a lone image too: {ratio('two_instances_one_thread')} at c=8, p50 at c=1 "
        f"{ratio('two_instances_one_thread', 'p50_ms', 1)}",
        f"batches as large as the queue allows: {ratio('unbounded_batches')} at c=8, p99 "
        f"{ratio('unbounded_batches', 'p99_ms')}",
        f"no dynamic batching: {ratio('no_batching')} at c=8, p99 {ratio('no_batching', 'p99_ms')}",
        f"without quality_monitor: {ratio('no_quality_monitor')} at c=8, p50 at c=1 "
        f"{ratio('no_quality_monitor', 'p50_ms', 1)}",
        f"int8 serves {medians['int8 served ≥ 2.5× fp32 served (gRPC c=8)']:.2f}× fp32's images a second",
    ]
    lines = paired.cpu_lines(results["paired"])
    header = next(index for index, line in enumerate(lines) if line.startswith("| process |"))
    columns = [cell.strip() for cell in lines[header].strip("|").split("|")]
    rows = lines[header + 2:lines.index("", header)]
    cpu = {cells[0]: dict(zip(columns, cells, strict=True))
           for cells in ([cell.strip() for cell in line.strip("|").split("|")] for line in rows)}
    served = {name: cpu[name]["cpu (onnxruntime)"] for name in ("tritonserver", "preprocess", "resnet50")}
    figures.append(f"tritonserver {served['tritonserver']}, preprocess {served['preprocess']} and resnet50 "
                   f"{served['resnet50']} core-ms per image, against {cpu['resnet50']['in process']} for the same "
                   f"engine work in process; the naive server {cpu['naive server']['naive server (HTTP)']}")
    for figure in figures:
        assert figure in text, figure


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


def test_the_deploy_figures_are_the_startup_report() -> None:
    import statistics

    results = json.loads((ROOT / "benchmarks" / "results" / "startup" / "results.json").read_text())
    layer, starts = results["layer"], results["start_s"]
    text = " ".join((ROOT / "docs" / "deploy.md").read_text().split())
    for figure in (f"{layer['total_mb']:.0f} MB installed for the image's Python {layer['python']}",
                   f"onnxruntime itself {layer['engines_mb']['onnxruntime']:.0f} MB",
                   f"ready in {statistics.median(starts):.1f} s, median of {len(starts)} starts"):
        assert figure in text, figure


def test_the_real_weights_figures_are_the_report() -> None:
    from benchmarks.real_weights import ratio_rows

    results = json.loads((ROOT / "benchmarks" / "results" / "real-weights" / "results.json").read_text())
    recall, heads, agreement = results["retrieval"]["recall"], results["categories"], results["agreement"]
    draft, region = agreement["jpeg_draft"], agreement["crop_region_resize"]
    speedup = f"{ratio_rows(results['speed']['rounds'])['mobilenetv2 int8']['throughput_c8']:.2f}× ResNet50 fp32"
    quoted = {
        "README.md": (f"recall@5 {recall['catalog']['@5']:.3f} (colour histograms: "
                      f"{recall['colour histograms']['@5']:.3f})",
                      f"top-1 {heads['fine']['top1']:.3f} over 81 products and {heads['coarse']['top1']:.3f} over 43",
                      f"in-process on all {agreement['ensemble_vs_reference']['top5_equal']} real photos", speedup),
        "docs/models.md": (speedup, f"in {draft['decode_12mp_ms']['draft']} ms instead of "
                                    f"{draft['decode_12mp_ms']['full']} ms",
                           f"top-5 of {draft['photos'] - draft['top5_equal']} of {draft['photos']}",
                           f"top-5 of {region['photos'] - region['top5_equal']} of {region['photos']} real photos"),
        "docs/categories.md": (f"top-1 {heads['fine']['top1']:.3f} over 81 products and {heads['coarse']['top1']:.3f} "
                               f"over 43 coarse classes (top-5 {heads['fine']['top5']:.3f} and "
                               f"{heads['coarse']['top5']:.3f})",
                               f"held-out figure said {heads['fine']['cli_held_out_accuracy']:.3f}"),
        "docs/catalog.md": (" / ".join(f"{recall['catalog'][k]:.3f}" for k in ("@1", "@5", "@10")),
                            " / ".join(f"{recall['colour histograms'][k]:.3f}" for k in ("@1", "@5", "@10"))),
    }
    assert agreement["ensemble_vs_reference"]["top5_equal"] == agreement["photos"]
    for name, figures in quoted.items():
        text = " ".join((ROOT / name).read_text().split())
        for figure in figures:
            assert figure in text, (name, figure)


def test_the_live_catalog_figures_are_the_reports() -> None:
    from benchmarks.catalog_live import paired_ratio

    def load(name: str) -> dict:
        return json.loads((ROOT / "benchmarks" / "results" / name / "results.json").read_text())

    live, million = load("catalog-live"), load("catalog-live-1m")
    churn, after, crashed, thumbs = live["churn"], live["after_churn"], live["crash"], live["thumbnails"]
    mask, by_ef = live["deletion_mask"], {point["ef_search"]: point for point in after["by_ef_search"]}
    # What the docs say outright, which these results must bear out.
    assert churn["failed_searches"] == churn["readiness_failures"] == 0
    assert after["state"]["wrong_count"] == crashed["state"]["wrong_count"] == 0 and not after["deleted_still_found"]
    quoted = {
        "docs/search-service.md": (
            f"none of {churn['searches']:,} searches failed and `/readyz` answered all {churn['readiness_probes']} "
            "probes",
            f"search p99 {paired_ratio(churn['rounds'], 'churn_p99_ms', 'idle_p99_ms')[0]:.2f}× its idle p99",
            f"all {after['state']['checked']:,} products written were as their last acknowledged write left them",
            f"ready {crashed['killed_restart_ready_s']} s after `kill -9`, searchable after "
            f"{crashed['searchable_s']} s",
            f"{paired_ratio(thumbs['rounds'], 'burst_p99_ms', 'quiet_p99_ms')[0]:.2f}× search p99",
            f"while {sum(churn['writes'].values()):,} writes were acknowledged",
            f"none of the {after['deleted_checked']} deleted products was found",
        ),
        "docs/catalog.md": (
            f"ready {crashed['killed_restart_ready_s']} s after `kill -9` at 100,000 products and "
            f"{million['crash']['killed_restart_ready_s']} s at 1,000,000",
            f"search p50 {mask['points'][0]['search_p50_ms']} ms with {mask['points'][0]['deleted_slots']:,} masked "
            f"slots and {mask['points'][-1]['search_p50_ms']} ms with {mask['points'][-1]['deleted_slots']:,}",
            f"(a clean restart: {crashed['clean_restart_ready_s']} s and "
            f"{million['crash']['clean_restart_ready_s']} s)",
            f"a remove costs {mask['points'][-1]['remove_ms_per_product']} ms a product",
            f"rebuilt in {mask['rebuild_s']} s",
            f"recall@10 {after['recall_at_10']} at efSearch 128, {by_ef[256]['recall_at_10']} at 256 and "
            f"{by_ef[384]['recall_at_10']} at 384 (search p50 {after['search_p50_ms']}, {by_ef[256]['search_p50_ms']} "
            f"and {by_ef[384]['search_p50_ms']} ms)",
        ),
    }
    for name, figures in quoted.items():
        text = " ".join((ROOT / name).read_text().split())
        for figure in figures:
            assert figure in text, (name, figure)


def test_the_feed_sync_figures_are_the_report() -> None:
    results = json.loads((ROOT / "benchmarks" / "results" / "feed-sync" / "results.json").read_text())
    text = " ".join((ROOT / "docs" / "feeds.md").read_text().split())
    ratio = median([measured["throughput_ratio"] for measured in results["rounds_measured"]])
    memory = results["memory"]
    excess = [sync - build for sync, build in zip(memory["sync_mb"], memory["build_mb"], strict=True)]
    for figure in (f"median **{ratio:.3f}×** the local files' rate",
                   f"{results['rows']:,} rows of {results['photos']} photos each",
                   f"**{100 * results['resync']['fraction_of_first']:.2f} %** of the first sync's time",
                   f"{excess[0]:+.0f} MB at {memory['rows'][0]:,} rows and {excess[1]:+.0f} MB at "
                   f"{memory['rows'][1]:,} rows",
                   f"--rows {results['rows']} --out",
                   f"the first sync took {results['rounds_measured'][-1]['feed']['seconds']:.0f} s",
                   f"the resync {results['resync']['seconds']:.1f} s"):
        assert figure in text, figure


def test_the_multi_photo_figures_are_the_report() -> None:
    results = json.loads((ROOT / "benchmarks" / "results" / "multi-photo" / "results.json").read_text())
    text = " ".join((ROOT / "docs" / "catalog.md").read_text().split())
    one, most = results["catalogs"][0]["recall"]["oracle"], results["catalogs"][-1]["recall"]["oracle"]
    assert results["catalogs"][-1]["photos_per_product"] == 5
    figure = (f"recall@5 of {most['@5']:.3f} against {one['@5']:.3f} for the iconic photo alone "
              f"({most['@5'] / one['@5']:.2f}x; recall@1 {most['@1']:.3f} against {one['@1']:.3f})")
    assert figure in text, figure
    # The one-photo catalog is the real-weights report's: measured on the same CPU, the same recall.
    real = json.loads((ROOT / "benchmarks" / "results" / "real-weights" / "results.json").read_text())
    assert real["cpu"] == results["cpu"] and real["retrieval"]["recall"]["catalog"] == one
    assert f"(the 2026-12-07 runs: {', '.join(results['cpu']['int8_instructions'][:-1])} and " \
           f"{results['cpu']['int8_instructions'][-1]})" in text
    for row in results["catalogs"]:  # the engines answered as the oracle on every query
        assert set(row["same_ranking_as_oracle"].values()) == {results["queries"]}


def test_the_soak_figures_are_the_report() -> None:
    soak = json.loads((ROOT / "benchmarks" / "results" / "soak" / "results.json").read_text())
    operations = (ROOT / "docs" / "operations.md").read_text()
    sentence = (f"at commit {soak['commit'][:7]}: {soak['images']:,} images in {soak['seconds']:.0f} s, "
                f"{soak['errors']} errors, {soak['rss_after_warmup_mb']:,} MB after warm-up and "
                f"{soak['rss_end_mb']:,} MB at the end.")
    assert sentence in " ".join(operations.split()), sentence
    assert soak["memory_flat"] and soak["errors"] == 0
