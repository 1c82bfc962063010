"""The comparisons of the benchmark suite: configurations of the served repository, int8, the naive
FastAPI server, and resnet50 alone. Each starts its own server on the same machine, in the same run."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from benchmarks import perf
from shopvision import contract
from shopvision.preprocessing import Preprocessor
from shopvision.server import LocalTritonServer, ServerOptions, free_ports

VARIANTS = {
    "default": "the repository as shipped (2 resnet50 instances; a lone image on every core when the other is idle)",
    "single_instance": "1 resnet50 instance with every core (one intra-op pool for everything)",
    "no_single_image_session": "2 resnet50 instances, a lone image on the instance's share of the cores too",
    "no_batching": "dynamic batching off in preprocess and resnet50",
    "unbounded_batches": "resnet50 batches as large as the queue allows (no preferred batch size of 2)",
    "int8": "resnet50 statically quantized (QDQ, int8) from the same fp32 weights",
    "no_quality_monitor": "the ensemble without its quality_monitor step (the confidence metric's cost)",
}


def quantize_int8(model: Path, output: Path, images: list[bytes]) -> Path:
    """Static QDQ quantization, calibrated on preprocessed images (ORT's recipe for CPU speed).

    The graph is optimised first (batch norms folded into the convolutions): quantizing the raw
    graph leaves float batch norms between quantized convolutions and is no faster than fp32.
    Per-tensor uint8 activations with int8 weights measured fastest here (3.6x fp32 on one core;
    per-channel weights 2.2x, int8 activations slower than fp32).
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pixels = Preprocessor()(images)

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter([{contract.PIXELS: pixels[i:i + 1]} for i in range(len(pixels))])

        def get_next(self) -> dict | None:
            return next(self._batches, None)

    optimised = output.with_name(f"{output.stem}-optimised.onnx")
    quant_pre_process(str(model), str(optimised), skip_symbolic_shape=True)
    quantize_static(str(optimised), str(output), Calibration(), quant_format=QuantFormat.QDQ, per_channel=False,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return output


def _replace(config: Path, old: str, new: str) -> None:
    text = config.read_text()
    if old not in text:
        raise ValueError(f"{config} no longer has {old!r}: update this variant")
    config.write_text(text.replace(old, new))


def variant_repository(base: Path, scratch: Path, name: str, int8_model: Path | None = None) -> Path:
    if name == "default":
        return base
    repository = scratch / name / "model_repository"
    shutil.copytree(base, repository, symlinks=True)
    resnet_config = repository / contract.RESNET_MODEL / "configs" / f"{contract.CPU_CONFIG_NAME}.pbtxt"
    if name == "no_batching":
        for config in (repository / contract.PREPROCESS_MODEL / "config.pbtxt", resnet_config):
            config.write_text(re.sub(r"dynamic_batching \{.*?\n\}\n", "", config.read_text(), flags=re.S))
    elif name == "unbounded_batches":
        _replace(resnet_config, "  preferred_batch_size: [ 2 ]\n", "")
    elif name == "single_instance":
        _replace(resnet_config, "count: 2", "count: 1")
    elif name == "no_single_image_session":
        _replace(resnet_config, '"single_image_intra_op_threads" value { string_value: "0" }',
                 '"single_image_intra_op_threads" value { string_value: "1" }')
    elif name == "no_quality_monitor":
        ensemble = repository / contract.ENSEMBLE_MODEL / "config.pbtxt"
        text = re.sub(r",\s*\{[^{}]*model_name: \"" + contract.QUALITY_MONITOR_MODEL + r"\"[^{}]*(\{[^{}]*\}[^{}]*)*\}",
                      "", ensemble.read_text())
        ensemble.write_text(text.replace('value: "resnet50_probabilities"', f'value: "{contract.PROBABILITIES}"'))
    elif name == "int8":
        shutil.copyfile(int8_model, repository / contract.RESNET_MODEL / "1" / contract.MODEL_FILE)
    else:
        raise ValueError(name)
    return repository


@contextlib.contextmanager
def triton(repository: Path, log: Path) -> Iterator[LocalTritonServer]:
    http, grpc, metrics = free_ports(3)
    with log.open("wb") as stream, LocalTritonServer(
            ServerOptions(repository, http_port=http, grpc_port=grpc, metrics_port=metrics), log=stream) as server:
        yield server


def execution_counts(server: LocalTritonServer, model: str) -> tuple[int, int]:
    """(images inferred, executions) of a model so far, from Triton's statistics API."""
    with urllib.request.urlopen(f"{server.http_url}/v2/models/{model}/stats", timeout=10) as response:
        (stats,) = json.loads(response.read())["model_stats"]
    return int(stats["inference_count"]), int(stats["execution_count"])


def perf_point(server: LocalTritonServer, *, model: str, protocol: str, input_data: Path | None, concurrency: int,
               csv_path: Path, settings: dict) -> dict:
    """One perf_analyzer point plus resnet50's average batch size during it."""
    before = execution_counts(server, contract.RESNET_MODEL)
    address = server.grpc_url.removeprefix("grpc://") if protocol == "grpc" else server.http_url.removeprefix("http://")
    point = perf.run(model=model, url=address, protocol=protocol, input_data=input_data, concurrency=concurrency,
                     csv_path=csv_path, stability_percentage=settings["stability"], max_trials=12,
                     extra_args=["--measurement-mode", "count_windows",
                                 "--measurement-request-count", str(settings["requests"])])
    after = execution_counts(server, contract.RESNET_MODEL)
    batch = (after[0] - before[0]) / max(after[1] - before[1], 1)
    return {**asdict(point), "avg_batch": round(batch, 2)}


def measure_variants(base: Path, input_data: Path, work: Path, settings: dict, int8_model: Path | None, *,
                     scratch: Path) -> list[dict]:
    """Each variant's repository is built under ``scratch``; logs and CSVs go to ``work``."""
    rows = []
    for name in settings["variants"]:
        repository = variant_repository(base, scratch / "variants", name, int8_model)
        with triton(repository, work / f"tritonserver-{name}.log") as server:
            for concurrency in settings["variant_concurrency"]:
                row = perf_point(server, model=contract.ENSEMBLE_MODEL, protocol="grpc", input_data=input_data,
                                 concurrency=concurrency, csv_path=work / f"pa-{name}-{concurrency}.csv",
                                 settings=settings)
                rows.append({"variant": name, **row})
                print(f"variant {name} c={concurrency}: {row['throughput']:.1f} img/s p99 {row['p99_ms']:.0f} ms "
                      f"avg batch {row['avg_batch']}", flush=True)
    return rows


def measure_resnet_alone(base: Path, work: Path, settings: dict) -> list[dict]:
    """resnet50 without preprocessing, on perf_analyzer's random FP32 tensors."""
    rows = []
    with triton(base, work / "tritonserver-resnet50.log") as server:
        for concurrency in settings["resnet_alone"]:
            row = perf_point(server, model=contract.RESNET_MODEL, protocol="grpc", input_data=None,
                             concurrency=concurrency, csv_path=work / f"pa-resnet50-{concurrency}.csv",
                             settings=settings)
            rows.append(row)
            print(f"resnet50 alone c={concurrency}: {row['throughput']:.1f} img/s", flush=True)
    return rows


@contextlib.contextmanager
def naive_server(model: Path, log: Path) -> Iterator[str]:
    (port,) = free_ports(1)
    with log.open("wb") as stream:
        process = subprocess.Popen([sys.executable, "-m", "benchmarks.naive_server", str(model), "--port", str(port)],
                                   stdout=stream, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=2).close()
                    break
                except OSError:
                    if process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the naive server did not start (see {log})") from None
                    time.sleep(0.3)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 2) if denominator else float("nan")
