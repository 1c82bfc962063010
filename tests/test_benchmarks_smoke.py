"""CI smoke of the benchmark command: it runs end to end and writes its results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.run import main

pytestmark = pytest.mark.integration


def test_quick_benchmark_writes_results_report_and_plot(tmp_path: Path) -> None:
    assert main(["--mode", "quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    (baseline,) = results["in_process"]
    assert baseline["preprocess_core_ms"] > 0 and baseline["compute_ceiling_img_s"] > 0
    assert {row["concurrency"] for row in results["served"]} == {1, 8}
    assert all(row["throughput"] > 0 and row["p99_ms"] >= row["p50_ms"] for row in results["served"])
    report = (tmp_path / "report.md").read_text()
    assert "Synthetic ResNet50 weights" in report and "vs compute ceiling" in report
    assert (tmp_path / "served.png").read_bytes().startswith(b"\x89PNG")
