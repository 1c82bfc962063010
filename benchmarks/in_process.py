"""In-process baselines: what the same model file and JPEGs cost without any server, on the same engine."""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from shopvision import contract
from shopvision.backend.engines import Engine, open_engine
from shopvision.backend.preprocessing import Preprocessor


@dataclass(frozen=True)
class InProcess:
    image_size: str
    preprocess_core_ms: float
    """One core, decode + resize + crop + normalise, per image."""
    ort_core_ms: float
    """The engine with one thread at batch 8, per image (named for ONNX Runtime, the first engine measured)."""
    compute_ceiling_img_s: float
    """cores / (preprocess core-ms + engine core-ms): the end-to-end compute ceiling."""
    raw_ort_img_s: float
    """The engine with every core on preprocessed batches of 8: the inference-only ceiling."""
    pipeline_single_image_ms: float
    """Decode + preprocess + the engine (every core) for one image, in one process: the latency floor."""
    single_image_statistic: str = "mean"
    """"median" of single calls, to compare with a served p50; results from before that recorded a mean."""
    engine: str = "onnxruntime"


def _engine(model: Path, name: str, threads: int) -> Engine:
    return open_engine(name, model, input_name=contract.PIXELS, output_names=[contract.PROBABILITIES,
                                                                             contract.EMBEDDING], threads=threads)


def _per_item_ms(work, items: int, repeats: int) -> float:
    work()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - start) * 1000 / (repeats * items)


def _median_call_ms(work, repeats: int) -> float:
    work()  # warm-up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


def measure_in_process(model: Path, images: list[bytes], label: str, repeats: int, *,
                       engine: str = contract.ENGINES[0]) -> InProcess:
    cores = os.cpu_count() or 1
    preprocessor = Preprocessor()
    preprocess_ms = _per_item_ms(lambda: preprocessor(images), len(images), max(1, repeats // len(images)))
    batch = preprocessor((images * 8)[:8])
    single_thread, all_threads = _engine(model, engine, 1), _engine(model, engine, cores)
    ort_core_ms = _per_item_ms(lambda: single_thread.run(batch), 8, max(2, repeats // 16))
    raw_ms = _per_item_ms(lambda: all_threads.run(batch), 8, max(2, repeats // 8))
    pipeline_ms = _median_call_ms(lambda: all_threads.run(preprocessor(images[:1])), max(4, repeats // 2))
    return InProcess(label, round(preprocess_ms, 2), round(ort_core_ms, 2),
                     round(cores * 1000 / (preprocess_ms + ort_core_ms), 1), round(1000 / raw_ms, 1),
                     round(pipeline_ms, 1), "median", engine)
