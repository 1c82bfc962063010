"""The comparisons of the benchmark suite: configurations of the served repository, int8, the naive
FastAPI server, and resnet50 alone. Each starts its own server on the same machine, in the same run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import perf
from shopvision import contract
from shopvision.backend.preprocessing import Preprocessor
from shopvision.repository.configs import ModelConfig, edit_config
from shopvision.server.tritonserver import LocalTritonServer, ServerOptions, free_ports


@dataclass(frozen=True)
class Variant:
    """A way to serve the same repository: edits of a copy of it."""

    what: str
    resnet_edit: Callable[[ModelConfig], None] | None = None
    """Applied to resnet50's configs/cpu.pbtxt in the variant's copy."""
    repository_edit: Callable[[Path], None] | None = None


def _resnet_instances(count: int, threads: int) -> Callable[[ModelConfig], None]:
    """``count`` resnet50 instances, each with ``threads`` threads for a batch and for a lone image."""
    def edit(config: ModelConfig) -> None:
        (group,) = config.instance_group
        group.count = count
        for parameter in ("intra_op_threads", "single_image_intra_op_threads"):
            config.parameters[parameter].string_value = str(threads)
    return edit


def engine(name: str) -> Callable[[ModelConfig], None]:
    def edit(config: ModelConfig) -> None:
        config.parameters[contract.ENGINE_PARAMETER].string_value = name
    return edit


def _without_batch_preference(config: ModelConfig) -> None:
    del config.dynamic_batching.preferred_batch_size[:]


def _without_dynamic_batching(repository: Path) -> None:
    for model in (contract.PREPROCESS_MODEL, contract.RESNET_MODEL):
        edit_config(repository / model / "configs" / f"{contract.CPU_CONFIG_NAME}.pbtxt",
                    lambda config: config.ClearField("dynamic_batching"))


def _without_quality_monitor(repository: Path) -> None:
    def edit(config: ModelConfig) -> None:
        steps = [step for step in config.ensemble_scheduling.step if step.model_name != contract.QUALITY_MONITOR_MODEL]
        del config.ensemble_scheduling.step[:]
        config.ensemble_scheduling.step.extend(steps)
        # extend() copied the steps: change the copy the config holds.
        resnet = next(step for step in config.ensemble_scheduling.step if step.model_name == contract.RESNET_MODEL)
        resnet.output_map[contract.PROBABILITIES] = contract.PROBABILITIES

    edit_config(repository / contract.ENSEMBLE_MODEL / "config.pbtxt", edit)


CORES = os.cpu_count() or 1
VARIANTS = {
    "default": Variant("the shipped CPU configuration (resnet50 in the Python backend on ONNX Runtime: 2 instances "
                       "with cores/2 threads for a batch and every core for a lone image, batches of 2, no queue "
                       "delay)"),
    "openvino": Variant("the same layout on OpenVINO (engine: openvino, f32)", resnet_edit=engine("openvino")),
    "single_instance": Variant("1 resnet50 instance with a thread per core", resnet_edit=_resnet_instances(1, CORES)),
    "two_instances_one_thread": Variant("2 resnet50 instances with 1 thread each, a lone image too",
                                        resnet_edit=_resnet_instances(2, 1)),
    "unbounded_batches": Variant("batches as large as the queue allows (no preferred batch size of 2)",
                                 resnet_edit=_without_batch_preference),
    "no_batching": Variant("dynamic batching off in preprocess and resnet50",
                           repository_edit=_without_dynamic_batching),
    "no_quality_monitor": Variant("the ensemble without its quality_monitor step (the confidence metric's cost)",
                                  repository_edit=_without_quality_monitor),
    "int8": Variant("resnet50 statically quantized (QDQ, int8) from the same fp32 weights, on ONNX Runtime"),
}


def calibration_images(size: tuple[int, int], count: int = 16) -> list[bytes]:
    """Photos for int8 calibration, never the benchmark's own (those use seeds from 0)."""
    from shopvision.samples import product_jpeg

    return [product_jpeg(10_000 + seed, size=size) for seed in range(count)]


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


def variant_repository(base: Path, scratch: Path, name: str, int8_model: Path | None = None) -> Path:
    variant = VARIANTS[name]
    if variant.resnet_edit is None and variant.repository_edit is None and name != "int8":
        return base
    repository = scratch / name / "model_repository"
    shutil.copytree(base, repository, symlinks=True)
    if variant.resnet_edit is not None:
        edit_config(repository / contract.RESNET_MODEL / "configs" / f"{contract.CPU_CONFIG_NAME}.pbtxt",
                    variant.resnet_edit)
    if variant.repository_edit is not None:
        variant.repository_edit(repository)
    if name == "int8":
        if int8_model is None:
            raise ValueError("the int8 variant needs the quantized model")
        shutil.copyfile(int8_model, repository / contract.RESNET_MODEL / "1" / contract.MODEL_FILE)
    return repository


@contextlib.contextmanager
def triton(repository: Path, log: Path) -> Iterator[LocalTritonServer]:
    http, grpc, metrics = free_ports(3)
    options = ServerOptions(repository, http_port=http, grpc_port=grpc, metrics_port=metrics)
    with log.open("wb") as stream, LocalTritonServer(options, log=stream) as server:
        yield server


@dataclass(frozen=True)
class ModelCounters:
    """A model's cumulative counters from Triton's statistics API."""

    images: int
    executions: int
    succeeded: int
    failed: int
    queue_ns: int
    """Time its requests waited in its queue, summed over requests."""
    compute_ns: int
    """Time its executions spent computing (Triton's compute_infer), summed over requests."""
    input_ns: int
    """Time spent handing its inputs to the model (compute_input: for a Python model, into shared memory)."""
    output_ns: int
    """Time spent taking its outputs back (compute_output)."""

    def __sub__(self, earlier: ModelCounters) -> ModelCounters:
        return ModelCounters(*(now - before for now, before in zip(asdict(self).values(), asdict(earlier).values(),
                                                                    strict=True)))


def model_counters(server: LocalTritonServer, model: str) -> ModelCounters:
    with urllib.request.urlopen(f"{server.http_url}/v2/models/{model}/stats", timeout=10) as response:
        (stats,) = json.loads(response.read())["model_stats"]
    inference = stats["inference_stats"]
    return ModelCounters(int(stats["inference_count"]), int(stats["execution_count"]),
                         int(inference["success"]["count"]), int(inference["fail"]["count"]),
                         int(inference["queue"]["ns"]), int(inference["compute_infer"]["ns"]),
                         int(inference["compute_input"]["ns"]), int(inference["compute_output"]["ns"]))


def queued_models(model: str) -> tuple[str, ...]:
    """The models whose queues a request to ``model`` waits in: an ensemble has no queue of its own."""
    return (contract.PREPROCESS_MODEL, contract.RESNET_MODEL) if model == contract.ENSEMBLE_MODEL else (model,)


def perf_point(server: LocalTritonServer, *, model: str, protocol: str, input_data: Path | None, concurrency: int,
               csv_path: Path, settings: dict) -> dict:
    """One perf_analyzer point, with what Triton's statistics say happened during it: resnet50's average
    batch, the time a request waited in the queues of the models it passed through (perf_analyzer reports
    the ensemble's own queue, which is always 0), and the requests that failed."""
    watched = {name: model_counters(server, name) for name in {model, contract.RESNET_MODEL, *queued_models(model)}}
    address = server.grpc_url.removeprefix("grpc://") if protocol == "grpc" else server.http_url.removeprefix("http://")
    point = perf.run(model=model, url=address, protocol=protocol, input_data=input_data, concurrency=concurrency,
                     csv_path=csv_path, stability_percentage=settings["stability"], max_trials=12,
                     extra_args=["--measurement-mode", "count_windows",
                                 "--measurement-request-count", str(settings["requests"])])
    during = {name: model_counters(server, name) - before for name, before in watched.items()}
    resnet, requests = during[contract.RESNET_MODEL], during[model]
    queue_ns = sum(during[name].queue_ns for name in queued_models(model))
    return {**asdict(point), "server_queue_ms": round(queue_ns / max(requests.succeeded, 1) / 1e6, 2),
            "avg_batch": round(resnet.images / max(resnet.executions, 1), 2),
            "requests": requests.succeeded + requests.failed, "failed": requests.failed,
            "window_requests": settings["requests"]}


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


@dataclass(frozen=True)
class NaiveServer:
    url: str
    pid: int


@contextlib.contextmanager
def naive_server(model: Path, log: Path, *, engine: str = contract.ENGINES[0]) -> Iterator[NaiveServer]:
    (port,) = free_ports(1)
    with log.open("wb") as stream:
        process = subprocess.Popen([sys.executable, "-m", "benchmarks.naive_server", str(model), "--port", str(port),
                                    "--engine", engine], stdout=stream, stderr=subprocess.STDOUT)
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
            yield NaiveServer(url, process.pid)
        finally:
            process.terminate()
            process.wait(timeout=30)


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 2) if denominator else float("nan")
