"""One command for the benchmark suite: in-process baselines and the served ensemble, side by side.

    python -m benchmarks.run --mode quick     # ~2 minutes, CI smoke
    python -m benchmarks.run --mode full      # the report's numbers

Same model file, same JPEG bytes, same machine, same run. Writes results.json, results.csv,
plots and report.md under --out.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import onnxruntime as ort

from benchmarks import perf
from shopvision import contract
from shopvision.preprocessing import Preprocessor
from shopvision.samples import product_jpeg

REPOSITORY_SOURCE = Path(__file__).resolve().parent.parent / "model_repository"
MODES = {
    # Count windows: a fixed number of requests per measurement, so p99 means the same at
    # every concurrency on a slow machine.
    "quick": {"sizes": [(640, 480)], "concurrency": [1, 8], "protocols": ["grpc"], "requests": 48,
              "stability": 50, "repeats": 16},
    "full": {"sizes": [(640, 480), (1600, 1200)], "concurrency": [1, 2, 4, 8, 16, 32],
             "protocols": ["grpc", "http"], "requests": 160, "stability": 20, "repeats": 64},
}


@dataclass(frozen=True)
class InProcess:
    image_size: str
    preprocess_core_ms: float
    """One core, decode + resize + crop + normalise, per image."""
    ort_core_ms: float
    """onnxruntime with one thread at batch 8, per image."""
    compute_ceiling_img_s: float
    """cores / (preprocess core-ms + ORT core-ms): the end-to-end compute ceiling."""
    raw_ort_img_s: float
    """onnxruntime with every core on preprocessed batches of 8: the inference-only ceiling."""
    pipeline_single_image_ms: float
    """Decode + preprocess + ORT (every core) for one image, in one process: the latency floor."""


def _session(model: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def _per_item_ms(work, items: int, repeats: int) -> float:
    work()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - start) * 1000 / (repeats * items)


def measure_in_process(model: Path, images: list[bytes], label: str, repeats: int) -> InProcess:
    cores = os.cpu_count() or 1
    preprocessor = Preprocessor()
    preprocess_ms = _per_item_ms(lambda: preprocessor(images), len(images), max(1, repeats // len(images)))
    batch = preprocessor((images * 8)[:8])
    single_thread, all_threads = _session(model, 1), _session(model, 0)
    ort_core_ms = _per_item_ms(lambda: single_thread.run(None, {contract.PIXELS: batch}), 8, max(2, repeats // 16))
    raw_ms = _per_item_ms(lambda: all_threads.run(None, {contract.PIXELS: batch}), 8, max(2, repeats // 8))
    pipeline_ms = _per_item_ms(
        lambda: all_threads.run(None, {contract.PIXELS: preprocessor(images[:1])}), 1, max(4, repeats // 2)
    )
    return InProcess(label, round(preprocess_ms, 2), round(ort_core_ms, 2),
                     round(cores * 1000 / (preprocess_ms + ort_core_ms), 1), round(1000 / raw_ms, 1),
                     round(pipeline_ms, 1))


def measure_served(repository: Path, data: dict[str, Path], work: Path, settings: dict) -> list[dict]:
    from shopvision.server import LocalTritonServer, ServerOptions, free_ports

    http, grpc, metrics = free_ports(3)
    rows = []
    with (work / "tritonserver.log").open("wb") as log, LocalTritonServer(
        ServerOptions(repository, http_port=http, grpc_port=grpc, metrics_port=metrics), log=log
    ):
        for label, input_data in data.items():
            for protocol in settings["protocols"]:
                address = f"127.0.0.1:{grpc if protocol == 'grpc' else http}"
                for concurrency in settings["concurrency"]:
                    point = perf.run(model=contract.ENSEMBLE_MODEL, url=address, protocol=protocol,
                                     input_data=input_data, concurrency=concurrency,
                                     csv_path=work / f"pa-{label}-{protocol}-{concurrency}.csv",
                                     stability_percentage=settings["stability"], max_trials=8,
                                     extra_args=["--measurement-mode", "count_windows",
                                                 "--measurement-request-count", str(settings["requests"])])
                    rows.append({"image_size": label, "protocol": protocol, **asdict(point)})
                    print(f"served {label} {protocol} c={concurrency}: {point.throughput:.1f} img/s "
                          f"p50 {point.p50_ms:.0f} ms p99 {point.p99_ms:.0f} ms", flush=True)
    return rows


def plot(rows: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4))
    series = sorted({(r["image_size"], r["protocol"]) for r in rows})
    for size, protocol in series:
        points = sorted((r for r in rows if (r["image_size"], r["protocol"]) == (size, protocol)),
                        key=lambda r: r["concurrency"])
        xs = [p["concurrency"] for p in points]
        throughput.plot(xs, [p["throughput"] for p in points], marker="o", label=f"{size} {protocol}")
        latency.plot(xs, [p["p50_ms"] for p in points], marker="o", label=f"{size} {protocol} p50")
        latency.plot(xs, [p["p99_ms"] for p in points], marker="x", linestyle="--", label=f"{size} {protocol} p99")
    for axis, title, unit in ((throughput, "Throughput", "images/s"), (latency, "Latency", "ms")):
        axis.set_xscale("log", base=2)
        axis.set_ylim(bottom=0)
        axis.set_xlabel("concurrency")
        axis.set_ylabel(unit)
        axis.set_title(f"{title} (synthetic ResNet50, CPU)")
        axis.legend(fontsize=7)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path = out / "served.png"
    figure.savefig(path, dpi=110)
    return [path.name]


def report(out: Path, command: str, in_process: list[InProcess], served: list[dict], plots: list[str]) -> str:
    lines = [
        "# shopvision benchmark report", "",
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by `{command}`.", "",
        f"Machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"onnxruntime {ort.__version__}. **Synthetic ResNet50 weights** (exact architecture, seeded): speed is "
        "representative, accuracy is not. tritonserver 2.51 from the nvidia-pytriton wheel, "
        f"`--model-config-name={contract.CPU_CONFIG_NAME}` (resnet50 through the Python backend).", "",
        "## In-process baselines (same model file, same JPEGs)", "",
        "| images | preprocess core-ms/img | ORT core-ms/img | compute ceiling img/s | raw ORT img/s | in-process single-image ms |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {b.image_size} | {b.preprocess_core_ms} | {b.ort_core_ms} | {b.compute_ceiling_img_s} | "
              f"{b.raw_ort_img_s} | {b.pipeline_single_image_ms} |" for b in in_process]
    lines += ["", "## Served ensemble (perf_analyzer, real JPEG input data)", "",
              "| images | protocol | concurrency | img/s | p50 ms | p90 ms | p99 ms | server queue ms | server compute ms |"
              " vs compute ceiling | vs raw ORT |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    ceilings = {b.image_size: b for b in in_process}
    for r in served:
        base = ceilings[r["image_size"]]
        lines.append(f"| {r['image_size']} | {r['protocol']} | {r['concurrency']} | {r['throughput']:.1f} | "
                     f"{r['p50_ms']:.0f} | {r['p90_ms']:.0f} | {r['p99_ms']:.0f} | {r['server_queue_ms']:.1f} | "
                     f"{r['server_compute_ms']:.1f} | {r['throughput'] / base.compute_ceiling_img_s:.2f}× | "
                     f"{r['throughput'] / base.raw_ort_img_s:.2f}× |")
    single = [r for r in served if r["concurrency"] == 1]
    if single:
        lines += ["", "Concurrency-1 p50 against the in-process single-image latency: " + ", ".join(
            f"{r['image_size']} {r['protocol']} {r['p50_ms'] / ceilings[r['image_size']].pipeline_single_image_ms:.2f}×"
            for r in single) + "."]
    lines += ["", *[f"![{name}]({name})" for name in plots], "",
              "Rerun: `" + command + "`. Raw perf_analyzer CSVs are kept under `raw/` (not committed)."]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=sorted(MODES), default="quick")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<mode>")
    args = parser.parse_args(argv)
    settings = MODES[args.mode]
    out = args.out or Path(__file__).resolve().parent / "results" / args.mode
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    command = f"python -m benchmarks.run --mode {args.mode}" + (f" --out {args.out}" if args.out else "")

    from shopvision.modeltools.build import build_model

    with tempfile.TemporaryDirectory() as scratch:
        repository = Path(scratch) / "model_repository"
        shutil.copytree(REPOSITORY_SOURCE, repository, symlinks=True,
                        ignore=shutil.ignore_patterns("model.onnx", "provenance.json", "__pycache__"))
        model = build_model("synthetic", repository).model_path
        images = {f"{w}x{h}": [product_jpeg(seed, size=(w, h)) for seed in range(8)] for w, h in settings["sizes"]}
        in_process = [measure_in_process(model, batch, label, settings["repeats"]) for label, batch in images.items()]
        for baseline in in_process:
            print(f"in-process {baseline}", flush=True)
        data = {label: perf.write_input_data(raw / f"input-{label}.json", batch) for label, batch in images.items()}
        served = measure_served(repository, data, raw, settings)

    (out / "results.json").write_text(json.dumps(
        {"command": command, "in_process": [asdict(b) for b in in_process], "served": served}, indent=2))
    with (out / "results.csv").open("w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(served[0]))
        writer.writeheader()
        writer.writerows(served)
    print(report(out, command, in_process, served, plot(served, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
