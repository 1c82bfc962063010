"""The benchmark report says only what its results say: rendered offline from a full run's results (a copy of
those published at ea57191, kept here so that republishing cannot change what these tests read), altered the way
a lying report would need them altered."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from benchmarks.run import MODES, fingerprint, main, report, section_stamp

FULL = json.loads((Path(__file__).parent / "data" / "benchmark-full-results.json").read_text())


def served_row(**changes: object) -> dict:
    row = {"image_size": "640x480", "protocol": "grpc", "concurrency": 8, "throughput": 15.0, "p50_ms": 500.0,
           "p90_ms": 600.0, "p99_ms": 700.0, "server_queue_ms": 310.0, "server_compute_ms": 120.0, "stable": True,
           "avg_batch": 2.0, "requests": 170, "failed": 0, "window_requests": 160,
           "compute_ceiling_img_s": 16.0, "raw_ort_img_s": 15.0}
    return {**row, **changes}


def test_a_served_point_is_divided_by_its_own_sections_ceiling_and_shows_its_failures() -> None:
    results = copy.deepcopy(FULL)
    results["served"] = [served_row(), served_row(concurrency=16, failed=3, throughput=12.0),
                         {key: value for key, value in served_row(concurrency=32).items()
                          if key not in ("compute_ceiling_img_s", "raw_ort_img_s", "requests", "failed",
                                         "window_requests")}]
    text = report(results)
    rows = {line.split("|")[3].strip(): line for line in text.splitlines() if line.startswith("| 640x480 | grpc |")}
    assert "| 310.0 |" in rows["8"] and "| 0 | 0.94× | 1.0× |" in rows["8"]  # 15/16, 15/15
    assert rows["16†"].split("|")[11].strip() == "3"
    # No ceiling in the point's own section: no ratio, rather than one against another section's ceiling.
    assert rows["32"].rstrip().endswith("| not counted | — | — |") and "not measured" in rows["32"]
    assert "window of at least 160 requests (fewer than 1,000" in text
    assert "Above a ceiling" not in text
    results["served"][0]["raw_ort_img_s"] = 12.0  # a disturbed in-process measurement: 15 img/s "beats" it
    assert "Above a ceiling (640x480 grpc c=8)" in report(results)
    assert "How many requests each p99 rests on was not recorded" in text


def test_sections_are_stamped_when_measured_and_int8_calibration_is_what_was_done() -> None:
    results = copy.deepcopy(FULL)
    # As results from before per-section stamps and separate calibration photos were.
    results.pop("sections", None)
    results.pop("int8_calibration", None)
    text = report(results)
    assert "predate per-section stamps" in text
    assert "calibrated on the benchmark's own images" in text and "top-1" not in text
    stamp = {**section_stamp(MODES["full"]), "measured_at": "2026-01-02T03:04:05+00:00", "cores": 64}
    results["sections"] = {"paired": stamp}
    results["int8_calibration"] = "16 generated photos that are not the benchmark's images (seeds from 10,000)"
    text = report(results)
    assert "| paired | 2026-01-02T03:04:05+00:00 |" in text and "the same 64 cores" in text
    assert "calibrated on 16 generated photos that are not the benchmark's images" in text


def test_resume_refuses_sections_measured_with_other_code_or_settings(tmp_path) -> None:
    stale = copy.deepcopy(FULL)
    stale["sections"] = {"in_process": {**section_stamp(MODES["quick"]), "fingerprint": "0" * 16}}
    (tmp_path / "results.json").write_text(json.dumps(stale))
    with pytest.raises(SystemExit, match="--resume refused: .*in_process .*paired \\(no fingerprint\\)"):
        main(["--mode", "quick", "--resume", "--out", str(tmp_path)])
    assert fingerprint(MODES["quick"]) != fingerprint(MODES["full"])
