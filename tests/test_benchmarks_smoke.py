"""CI smoke of the benchmark command: it runs end to end and writes its results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import paired
from benchmarks.run import main

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_quick_benchmark_writes_results_report_and_plot(tmp_path: Path) -> None:
    assert main(["--mode", "quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (baseline,) = results["in_process"]
    assert baseline["preprocess_core_ms"] > 0 and baseline["compute_ceiling_img_s"] > 0
    assert {row["concurrency"] for row in results["served"]} == {1, 8}
    assert all(row["throughput"] > 0 and row["p99_ms"] >= row["p50_ms"] for row in results["served"])
    assert all(row["avg_batch"] >= 1 for row in results["served"])
    (paired_round,) = results["paired"]  # quick mode: one round of the targets' paired points
    assert set(paired_round) == {"grpc_c1", "in_process", "grpc_c8", "http_triton_c8", "grpc_triton_c8",
                                 "http_naive_c8"}
    # The CPU per process: the engine runs in resnet50's stubs, the front end in tritonserver.
    spent = paired_round["grpc_c8"]["core_ms_per_image"]
    assert spent["resnet50"] > spent["preprocess"] > 0 and spent["tritonserver"] > 0
    assert paired_round["http_naive_c8"]["core_ms_per_image"]["naive server"] > 0
    timings = paired_round["grpc_c8"]["triton_ms_per_image"]
    assert set(timings) == {"preprocess", "resnet50", "quality_monitor"} and timings["resnet50"]["compute"] > 0
    for name in ("http_triton_c8", "grpc_triton_c8", "http_naive_c8"):
        point = paired_round[name]
        assert point["requests"] == 24 and point["failures"] == 0 and point["throughput"] > 0, point
    assert paired_round["grpc_c8"]["throughput"] > 0 and paired_round["in_process"]["compute_ceiling_img_s"] > 0
    report = (tmp_path / "report.md").read_text()
    assert "Synthetic ResNet50 weights" in report and "vs compute ceiling" in report
    for protocol in ("HTTP", "gRPC"):
        served, naive = paired_round[f"{protocol.lower()}_triton_c8"], paired_round["http_naive_c8"]
        ratio = served["throughput"] / naive["throughput"]
        assert f"| {paired.naive_target_name(protocol, 8, 'throughput')} | {round(ratio, 2)} |" in report
    for plot in ("served.png", "configurations.png"):
        assert (tmp_path / plot).read_bytes().startswith(b"\x89PNG")


def test_catalog_benchmark_measures_every_engine(tmp_path: Path) -> None:
    from benchmarks.catalog import main as catalog_main

    assert catalog_main(["--sizes", "600", "--queries", "20", "--out", str(tmp_path)]) == 0
    points = json.loads((tmp_path / "results.json").read_text())["points"]
    assert [point["engine"] for point in points] == ["faiss-exact", "faiss-hnsw", "milvus-lite"]
    assert all(point["vectors"] == 600 and point["query_p99_ms"] >= point["query_p50_ms"] > 0 for point in points)
    assert points[0]["recall_at_10"] == 1.0 and all(point["recall_at_10"] >= 0.9 for point in points)
    assert "| faiss-hnsw | 600 |" in (tmp_path / "report.md").read_text()


def test_the_catalog_report_says_only_what_its_run_measured(tmp_path: Path) -> None:
    from benchmarks.catalog import main as catalog_main

    assert catalog_main(["--sizes", "300", "--queries", "10", "--engines", "faiss-exact", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "report.md").read_text()
    assert "Not measured at 300 vectors in this run: faiss-hnsw, milvus-lite." in report
    assert "HNSW's p50" not in report
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["measured"]["at"] in report  # the time of measuring, not of rendering
    (tmp_path / "report.md").unlink()
    assert catalog_main(["--render", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text() == report


def test_search_service_benchmark_measures_its_targets_and_memory(tmp_path: Path) -> None:
    from benchmarks.search_service import main as search_main

    assert search_main(["--mode", "quick", "--products", "3000", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (measured,) = results["rounds"]
    assert set(measured) == {"sdk_c8", "api_classify_c8", "api_classify_c1", "api_search_c1"}
    assert all(point["failures"] == 0 and point["requests"] > 0 for point in measured.values())
    assert results["catalog"]["products"] == 3000 and results["memory"]["loaded_mb"] > 0
    report = (tmp_path / "report.md").read_text()
    assert f"{measured['api_classify_c8']['throughput']}" in report and "per 100,000 products" in report


def test_the_live_catalog_benchmark_checks_every_write_through_churn_and_a_kill(tmp_path: Path) -> None:
    from benchmarks.catalog_live import main as live_main

    assert live_main(["--products", "2000", "--rounds", "1", "--idle-s", "3", "--churn-s", "6", "--crash-s", "6",
                      "--burst-s", "3", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    churn, after, crashed = results["churn"], results["after_churn"], results["crash"]
    assert churn["searches"] > 0 and churn["failed_searches"] == 0 and churn["readiness_failures"] == 0
    assert sum(churn["writes"].values()) > 0 and after["state"]["wrong_count"] == 0
    assert after["state"]["products"] == after["state"]["expected_products"] and not after["deleted_still_found"]
    assert crashed["writes_during"] > 0 and crashed["state"]["wrong_count"] == 0
    assert results["thumbnails"]["thumbnails"] > 0 and results["thumbnails"]["failed_thumbnails"] == 0
    assert "| acknowledged writes lost to kill -9 | 0 | 0 of" in (tmp_path / "report.md").read_text()
