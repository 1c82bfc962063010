"""Drive perf_analyzer (from the tritonclient==2.51.0 wheel) with real image bytes."""

from __future__ import annotations

import base64
import csv
import dataclasses
import json
import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from shopvision import contract


class PerfAnalyzerMissing(RuntimeError):
    pass


def write_input_data(path: Path, images: list[bytes], *, input_name: str = contract.IMAGE_INPUT) -> Path:
    """perf_analyzer --input-data JSON: one step per image, each a serialized BYTES element.

    perf_analyzer passes ``b64`` content through unchanged, so it must already be Triton's
    wire format for BYTES: a 4-byte little-endian length, then the encoded image.
    """
    steps = [
        {input_name: {"b64": base64.b64encode(struct.pack("<I", len(data)) + data).decode(), "shape": [1]}}
        for data in images
    ]
    path.write_text(json.dumps({"data": steps}))
    return path


def binary() -> Path:
    found = shutil.which("perf_analyzer", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                os.environ.get("PATH", "")]))
    if not found:
        raise PerfAnalyzerMissing("perf_analyzer not found: `pip install tritonclient[all]==2.51.0` "
                                  "(see docs/benchmarks.md)")
    return Path(found)


def environment() -> dict[str, str]:
    """perf_analyzer links libcudart.so.12 even on CPU; the nvidia-cuda-runtime-cu12 wheel has it."""
    env = dict(os.environ)
    try:
        import nvidia.cuda_runtime

        library = Path(next(iter(nvidia.cuda_runtime.__path__))) / "lib"
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(library), env.get("LD_LIBRARY_PATH")]))
    except ImportError:
        pass
    return env


@dataclass(frozen=True)
class PerfPoint:
    concurrency: int
    throughput: float
    """Inferences (images) per second."""
    p50_ms: float
    p90_ms: float
    p99_ms: float
    server_queue_ms: float
    server_compute_ms: float
    """Server compute input + infer + output, per request."""
    stable: bool = True
    """False when perf_analyzer could not meet the stability criterion and the point was measured
    once more without it (a noisy machine); the report marks such points."""


def run(*, model: str, url: str, protocol: str, input_data: Path | None, concurrency: int, csv_path: Path,
        measurement_ms: int = 3000, stability_percentage: int = 25, max_trials: int = 5,
        extra_args: list[str] | None = None, timeout_s: float = 900) -> PerfPoint:
    """One perf_analyzer measurement at one concurrency, parsed from its CSV.

    Without ``input_data`` perf_analyzer sends random tensors (fine for resnet50, not for images).
    """
    def command(stability: int, trials: int) -> list[str]:
        return [
            str(binary()), "-m", model, "-u", url, "-i", protocol,
            *(["--input-data", str(input_data)] if input_data is not None else []),
            "--concurrency-range", str(concurrency),
            "--measurement-interval", str(measurement_ms),
            "--stability-percentage", str(stability),
            "--max-trials", str(trials),
            "--percentile", "99",
            "-f", str(csv_path), "--verbose-csv",
            *(extra_args or []),
        ]

    completed = subprocess.run(command(stability_percentage, max_trials), env=environment(), capture_output=True,
                               text=True, timeout=timeout_s)
    stable = True
    if completed.returncode != 0 and "Failed to obtain stable measurement" in completed.stdout + completed.stderr:
        stable = False
        # Accept the next three windows as they come; the point is marked unstable.
        completed = subprocess.run(command(1000, 3), env=environment(), capture_output=True, text=True,
                                   timeout=timeout_s)
    if completed.returncode != 0:
        raise RuntimeError(f"perf_analyzer failed ({completed.returncode}):\n{completed.stdout[-3000:]}\n"
                           f"{completed.stderr[-3000:]}")
    (point,) = parse_csv(csv_path)
    return dataclasses.replace(point, stable=stable)


def parse_csv(path: Path) -> list[PerfPoint]:
    with path.open() as stream:
        rows = list(csv.DictReader(stream))
    us = lambda row, key: float(row.get(key) or 0) / 1000.0  # noqa: E731
    return [
        PerfPoint(
            concurrency=int(row["Concurrency"]),
            throughput=float(row["Inferences/Second"]),
            p50_ms=us(row, "p50 latency"),
            p90_ms=us(row, "p90 latency"),
            p99_ms=us(row, "p99 latency"),
            server_queue_ms=us(row, "Server Queue"),
            server_compute_ms=sum(us(row, f"Server Compute {stage}") for stage in ("Input", "Infer", "Output")),
        )
        for row in rows
    ]
