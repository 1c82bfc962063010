"""shopvision's benchmarks: ``python -m benchmarks.run``, ``.catalog``, ``.soak``, ``.gpu_feed``."""

import subprocess
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
