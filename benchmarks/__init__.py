"""shopvision's benchmarks: ``python -m benchmarks.run``, ``.catalog``, ``.soak``, ``.gpu_feed``."""

from pathlib import Path

PUBLISHED = Path(__file__).resolve().parent / "results"
"""The reports committed with the code: write there with ``--out benchmarks/results/<name>``."""
SCRATCH = Path(__file__).resolve().parent.parent / "build" / "benchmarks"
"""Where a run writes by default (ignored by git), so a benchmark run never changes tracked files."""
