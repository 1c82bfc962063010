"""A stand-in for ``triton_python_backend_utils``, so the Python-backend models run without a server.

It implements only what shopvision's models call, with the same names and behaviour as the real module:
tensors wrap numpy arrays, a response carries output tensors or an error, metrics record what they
observe and the logger records what it is told.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np


class Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS = range(7)

    def __init__(self, message: str, code: int = INTERNAL) -> None:
        self._message, self._code = message, code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class InferenceRequest:
    def __init__(self, inputs: Sequence[Tensor]) -> None:
        self._inputs = list(inputs)

    def inputs(self) -> list[Tensor]:
        return self._inputs


class InferenceResponse:
    def __init__(self, output_tensors: Sequence[Tensor] = (), error: TritonError | None = None) -> None:
        self._outputs, self._error = list(output_tensors), error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((tensor for tensor in request.inputs() if tensor.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((tensor for tensor in response.output_tensors() if tensor.name() == name), None)


@dataclass
class Metric:
    labels: dict[str, str]
    buckets: list[float] | None = None
    observed: list[float] = field(default_factory=list)

    def observe(self, value: float) -> None:
        self.observed.append(value)


class MetricFamily:
    COUNTER, GAUGE, HISTOGRAM = range(3)
    created: list[MetricFamily] = []

    def __init__(self, name: str, description: str, kind: int) -> None:
        self.name, self.description, self.kind = name, description, kind
        self.metrics: list[Metric] = []
        MetricFamily.created.append(self)

    def Metric(self, labels: dict[str, str], buckets: list[float] | None = None) -> Metric:  # Triton's spelling
        metric = Metric(labels, buckets)
        self.metrics.append(metric)
        return metric


class Logger:
    records: list[tuple[str, str]] = []

    @classmethod
    def log_info(cls, message: str) -> None:
        cls.records.append(("info", message))

    @classmethod
    def log_warn(cls, message: str) -> None:
        cls.records.append(("warn", message))

    @classmethod
    def log_error(cls, message: str) -> None:
        cls.records.append(("error", message))


@contextmanager
def installed() -> Iterator[ModuleType]:
    """This module as ``triton_python_backend_utils`` while the block runs, with its records emptied."""
    module = sys.modules[__name__]
    Logger.records.clear()
    MetricFamily.created.clear()
    previous: Any = sys.modules.get("triton_python_backend_utils")
    sys.modules["triton_python_backend_utils"] = module
    try:
        yield module
    finally:
        if previous is None:
            del sys.modules["triton_python_backend_utils"]
        else:
            sys.modules["triton_python_backend_utils"] = previous
