"""What a CPU node's image adds for its engine, and how long the served repository takes to start.

    python -m benchmarks.startup --out benchmarks/results/startup

- The engine layer: the Python packages ``deploy/Dockerfile`` installs for the Python-backend models (numpy,
  Pillow and ``ENGINE_PACKAGES``, as pinned there), installed with pip for the image's Python (3.10, manylinux
  x86_64) into an empty folder and measured on disk. Needs the package registry; without it the report says
  so. The base image, and so the whole image, cannot be measured without a Docker engine.
- Start: the wheel's tritonserver with the ``cpu`` configuration and synthetic ResNet50, from launch until
  ``/v2/health/ready``, several times (the model load the container does on every start, not the container's
  own start).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import (
    PUBLISHED,
    SCRATCH,
    SERVED_CONFIGURATION,
    configuration_of,
    current_commit,
    publish,
    rerender,
)
from shopvision.server.tritonserver import LocalTritonServer, ServerOptions, free_ports

ROOT = Path(__file__).resolve().parent.parent
IMAGE_PYTHON = "3.10"
"""The official tritonserver 24.10 image's Python, which runs the Python-backend models."""


def image_packages(dockerfile: Path = ROOT / "deploy" / "Dockerfile") -> tuple[list[str], list[str]]:
    """The pins the image's Python-backend layer installs: the RUN line's own, and ENGINE_PACKAGES' default."""
    text = dockerfile.read_text()
    (engines,) = re.findall(r'^ARG ENGINE_PACKAGES="([^"]+)"$', text, flags=re.MULTILINE)
    (run,) = re.findall(r'^RUN pip install --no-cache-dir (.*) \$\{ENGINE_PACKAGES\}', text, flags=re.MULTILINE)
    return [pin.strip('"') for pin in run.split()], engines.split()


def folder_mb(folder: Path) -> float:
    return round(sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6, 1)


def measure_layer(base: list[str], engines: list[str]) -> dict:
    packages = base + engines
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch)
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(target), "--only-binary=:all:",
                   "--python-version", IMAGE_PYTHON, "--platform", "manylinux_2_28_x86_64", "--platform",
                   "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", *packages]
        completed = subprocess.run(command, capture_output=True, text=True, check=False)
        if completed.returncode != 0:
            return {"packages": packages, "error": completed.stderr.strip().splitlines()[-1:]}
        # The engines' own folders (their dependencies, numpy's and Pillow's folders count in the total only).
        sizes = {name: folder_mb(target / name) for name in (pin.split("==")[0] for pin in engines)}
        return {"packages": packages, "python": IMAGE_PYTHON, "total_mb": folder_mb(target), "engines_mb": sizes}


def measure_starts(repository: Path, starts: int, log: Path) -> list[float]:
    seconds = []
    for _ in range(starts):
        http, grpc, metrics = free_ports(3)
        with log.open("ab") as stream:
            server = LocalTritonServer(ServerOptions(repository, http_port=http, grpc_port=grpc, metrics_port=metrics),
                                       log=stream)
            began = time.perf_counter()
            server.start()
            seconds.append(round(time.perf_counter() - began, 2))
            server.stop()
    return seconds


def report(results: dict) -> str:
    layer, starts = results["layer"], results["start_s"]
    lines = ["# The CPU image's engine layer, and the time to ready", "",
             f"`{results['command']}` on {results['machine']}, measured {results['measured_at']}, commit "
             f"{results['commit']}. {configuration_of(results)}, synthetic ResNet50.",
             "", "## The engine layer", ""]
    if "error" in layer:
        lines.append(f"Not measured: pip could not install {' '.join(layer['packages'])} ({' '.join(layer['error'])}).")
    else:
        lines += [f"`pip install --target` of {' '.join(f'`{pin}`' for pin in layer['packages'])} for Python "
                  f"{layer['python']} (manylinux x86_64), dependencies included: **{layer['total_mb']} MB** on disk, "
                  "of which the engine's own folder: " + ", ".join(f"{name} {size} MB" for name, size in
                                                    layer["engines_mb"].items()) + ".",
                  "", "The base image (`nvcr.io/nvidia/tritonserver:24.10-py3`) and so the whole image could not be "
                  "measured here: no Docker engine."]
    lines += ["", "## Time to ready", "",
              f"The wheel's tritonserver 2.51 serving the built repository, from launch until `/v2/health/ready`, "
              f"{len(starts)} starts: median **{statistics.median(starts):.1f} s** (each: "
              f"{', '.join(f'{value:.1f}' for value in starts)} s). The container runs the same server on the same "
              "repository; its own start (image pull, runtime) comes on top and was not measured here.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--out", type=Path, default=SCRATCH / "startup",
                        help=f"default: {SCRATCH / 'startup'}; the published report: {PUBLISHED / 'startup'}")
    parser.add_argument("--render", action="store_true", help="only rewrite report.md from results.json")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.render:
        return rerender(args.out, report)
    from benchmarks.run import synthetic_repository

    commit = current_commit()
    with tempfile.TemporaryDirectory() as scratch:
        repository = synthetic_repository(Path(scratch))
        (args.out / "raw").mkdir(exist_ok=True)  # ignored by git, like every report's raw/
        starts = measure_starts(repository, args.starts, args.out / "raw" / "tritonserver.log")
    results = {"command": " ".join(["python -m benchmarks.startup", *(argv if argv is not None else sys.argv[1:])]),
               "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "commit": commit,
               "machine": f"{platform.platform()}, {len(os.sched_getaffinity(0))} cores",
               "configuration": SERVED_CONFIGURATION, "layer": measure_layer(*image_packages()), "start_s": starts}
    publish(args.out, results, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
