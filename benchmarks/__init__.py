"""shopvision's benchmarks: ``python -m benchmarks.run``, ``.catalog``, ``.soak``, ``.gpu_feed``."""

import json
import os
import platform
import subprocess
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

PUBLISHED = Path(__file__).resolve().parent / "results"
"""The reports committed with the code: write there with ``--out benchmarks/results/<name>``."""
SCRATCH = Path(__file__).resolve().parent.parent / "build" / "benchmarks"
"""Where a run writes by default (ignored by git), so a benchmark run never changes tracked files."""
SERVED_CONFIGURATION = "the `cpu` configuration (resnet50 in the Python backend on ONNX Runtime)"
"""What a benchmark's server runs, recorded in its results so that a report re-rendered later still says what was
measured, not what serves today."""
RETIRED_CONFIGURATION = "the `cpu` configuration of the time (Triton's native ONNX Runtime backend, since retired)"
"""What results that predate :data:`SERVED_CONFIGURATION` were measured on."""


def configuration_of(results: dict) -> str:
    """What a report's results were measured on, as a sentence's start."""
    text = results.get("configuration", RETIRED_CONFIGURATION)
    return text[0].upper() + text[1:]


def git(*arguments: str) -> str:
    """A git command's output in this repository (empty outside a checkout)."""
    completed = subprocess.run(["git", *arguments], capture_output=True, text=True, check=False,
                               cwd=Path(__file__).resolve().parent.parent)
    return completed.stdout


def current_commit() -> str:
    """The checked-out commit, abbreviated as every report prints it."""
    return git("rev-parse", "--short=12", "HEAD").strip()


def code_fingerprint() -> str:
    """What the measured code was: the commit and any uncommitted change to the package, the model repository
    and the benchmarks (published reports aside), hashed. Equal fingerprints, equal code."""
    import hashlib

    changes = git("diff", "HEAD", "--", "src", "model_repository", "benchmarks", ":!benchmarks/results")
    return hashlib.sha256(f"{git('rev-parse', 'HEAD').strip()}\n{changes}".encode()).hexdigest()[:16]


INT8_INSTRUCTIONS = ("avx2", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
"""The x86 instruction sets ONNX Runtime picks its int8 kernels by. Their answers need not be identical (a saturating
multiply-add on one, an exact dot product on another), so a report of an int8 model's accuracy says its CPU's."""


def cpu_facts() -> dict:
    """The CPU's model name and which of :data:`INT8_INSTRUCTIONS` it has (Linux's /proc/cpuinfo; empty elsewhere)."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        first = ""
    fields = {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}
    flags = set(fields.get("flags", "").split())
    return {"model": fields.get("model name", ""), "int8_instructions": [name for name in INT8_INSTRUCTIONS
                                                                         if name in flags]}


def machine_of(results: dict) -> str:
    """Where results were measured, as a report says it: the architecture, cores and, where recorded, the CPU."""
    text = f"{results['machine']} with {results['cores']} cores"
    if cpu := results.get("cpu"):
        instructions = ", ".join(cpu["int8_instructions"]) or "none"
        text += f" ({cpu['model'] or 'CPU unnamed'}; int8 instructions: {instructions})"
    return text


def run_facts(command: str) -> dict:
    """What every service benchmark's results start with: what ran, when, on what."""
    return {"configuration": SERVED_CONFIGURATION, "command": command,
            "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": platform.machine(), "cores": len(os.sched_getaffinity(0)), "cpu": cpu_facts()}


def rerender(out: Path, render: Callable[[dict], str]) -> int:
    """``--render``: rewrite ``out``'s report.md from its results.json (a report's text changed, not its data)."""
    (out / "report.md").write_text(render(json.loads((out / "results.json").read_text())))
    return 0


def publish(out: Path, results: dict, render: Callable[[dict], str]) -> None:
    """Write results.json and the report rendered from it under ``out``, and print the report. The results get
    the commit and the code's fingerprint (:func:`code_fingerprint`) of the code that measured them."""
    results = {**results, "commit": results.get("commit") or current_commit(),
               "code_fingerprint": results.get("code_fingerprint") or code_fingerprint()}
    # numpy scalars (counts, medians) as plain numbers
    (out / "results.json").write_text(json.dumps(results, indent=2, default=lambda value: value.item()) + "\n")
    text = render(results)
    (out / "report.md").write_text(text)
    print(text)


REPORTS = {
    "catalog": "catalog", "catalog-1m": "catalog", "catalog-live": "catalog_live", "catalog-live-1m": "catalog_live",
    "categories": "categories", "feed-sync": "feed_sync", "full": "run", "quick": "run", "gpu-feed": "gpu_feed",
    "limits": "limits", "multi-photo": "multi_photo", "real-weights": "real_weights", "sdk-compat": "sdk_compat",
    "search-service": "search_service", "soak": "soak", "startup": "startup",
}
"""Each published report's folder under :data:`PUBLISHED` and the benchmark module whose ``report(results)``
renders it: a report is a function of its results.json alone (tests/test_published_reports.py renders each)."""


def render_published(name: str) -> str:
    """The report of the published results in ``PUBLISHED/name``, rendered again from its results.json."""
    import importlib

    module = importlib.import_module(f"benchmarks.{REPORTS[name]}")
    return module.report(json.loads((PUBLISHED / name / "results.json").read_text()))
