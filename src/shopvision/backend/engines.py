"""The inference engines that run an ONNX model on a CPU: ONNX Runtime and OpenVINO, both from PyPI.

One interface for the ``cpu`` configuration's resnet50 runner (``model_repository/resnet50/1/model.py``),
the in-process ceilings of the benchmarks and the naive baseline server, so that a comparison between
them is about serving, never about an engine set up differently. Which engine serves is the ``cpu``
config's ``engine`` parameter (:data:`shopvision.contract.ENGINE_PARAMETER`); ONNX Runtime is the
default, chosen by measurement (docs/serving-modes.md).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from shopvision.contract import ENGINES
from shopvision.errors import InvalidArgumentError


def available_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a pod's ``limits.cpu``).

    A container sees every core of its host in its affinity; an engine with a thread per host core under a
    quota of a few cores would time-slice dozens of threads on those few.
    """
    cores = len(os.sched_getaffinity(0))
    quota: float | None = None
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        limit, period = (cgroup / "cpu.max").read_text().split()[:2]
        quota = None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        try:  # cgroup v1: a quota of -1 means none
            limit_us = int((cgroup / "cpu" / "cpu.cfs_quota_us").read_text())
            period_us = int((cgroup / "cpu" / "cpu.cfs_period_us").read_text())
            quota = limit_us / period_us if limit_us > 0 else None
        except (OSError, ValueError):
            quota = None
    return max(1, min(cores, math.ceil(quota))) if quota else cores


class Engine(Protocol):
    def run(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The model's outputs for a batch, in the order of ``output_names``; arrays the caller may keep."""


class OnnxRuntimeEngine:
    def __init__(self, model_file: Path | str, *, input_name: str, output_names: Sequence[str], threads: int,
                 spinning: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle intra-op threads spin by default: on a small node they steal the cores that decode the next
        # images (2-6 % slower with spinning on 2 cores, ../shared/NOTES.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self._session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
        self._input_name = input_name
        self._output_names = list(output_names)

    def run(self, pixels: np.ndarray) -> list[np.ndarray]:
        return self._session.run(self._output_names, {self._input_name: pixels})


class OpenVinoEngine:
    def __init__(self, model_file: Path | str, *, input_name: str, output_names: Sequence[str], threads: int,
                 spinning: bool = False) -> None:
        import openvino as ov

        core = ov.Core()
        # f32 on every CPU: without the hint OpenVINO may run bf16 where the CPU has it, and the served
        # answers would no longer match the model's (the parity tests hold it to ONNX Runtime's within 1e-5).
        # One stream of `threads` threads: the same layout as an ONNX Runtime session; Triton's instances are
        # the parallelism across requests. No pinning: on Linux OpenVINO binds its threads to cores by default,
        # and the instances (separate processes) then bind to the same cores: with pinning, two single-thread
        # instances served about half ONNX Runtime's images a second at c=8 here.
        self._compiled = core.compile_model(str(model_file), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": threads, "ENABLE_CPU_PINNING": False,
        })
        self._input_name = input_name
        self._outputs = [self._compiled.output(name) for name in output_names]
        # An infer request is not safe to share between threads (an ONNX Runtime session is): one per thread.
        self._requests = threading.local()

    def run(self, pixels: np.ndarray) -> list[np.ndarray]:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        # share_outputs defaults to False: the arrays are copies, not views the next inference overwrites.
        results = request.infer({self._input_name: pixels})
        return [results[output] for output in self._outputs]


_ENGINE_TYPES: dict[str, type[OnnxRuntimeEngine] | type[OpenVinoEngine]] = {
    "onnxruntime": OnnxRuntimeEngine, "openvino": OpenVinoEngine}
"""Keyed by :data:`shopvision.contract.ENGINES` (tests/test_engines.py checks that they agree)."""


def open_engine(name: str, model_file: Path | str, *, input_name: str, output_names: Sequence[str], threads: int,
                spinning: bool = False) -> Engine:
    """An engine by name (:data:`shopvision.contract.ENGINES`) running ``model_file`` with ``threads`` threads."""
    if name not in _ENGINE_TYPES:
        raise InvalidArgumentError(f"unknown engine {name!r}: choose one of {', '.join(ENGINES)}")
    try:
        return _ENGINE_TYPES[name](model_file, input_name=input_name, output_names=output_names, threads=threads,
                                   spinning=spinning)
    except ModuleNotFoundError as error:
        raise InvalidArgumentError(f"engine {name!r} needs the {error.name} package, which this Python lacks "
                         "(`pip install 'shopvision[server]'` installs both engines)") from error
