"""The engines the ``cpu`` configuration's resnet50 runs on: one interface, the same answers, clear refusals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from shopvision import contract
from shopvision.backend import engines
from tests.test_python_models import tiny_resnet_contract_model


def test_the_contract_names_exactly_the_engines_there_are() -> None:
    assert tuple(engines._ENGINE_TYPES) == contract.ENGINES
    assert contract.ENGINES[0] == "onnxruntime"  # what a config without the parameter gets


@pytest.mark.parametrize("threads", [1, 2])
def test_every_engine_computes_what_onnxruntime_does(threads: int, tmp_path: Path) -> None:
    model = tiny_resnet_contract_model(tmp_path / contract.MODEL_FILE)
    outputs = [contract.EMBEDDING, contract.PROBABILITIES]  # not the graph's order: the caller's is kept
    pixels = np.random.default_rng(3).normal(size=(3, 3, 224, 224)).astype(np.float32)
    answers = {name: engines.open_engine(name, model, input_name=contract.PIXELS, output_names=outputs,
                                         threads=threads).run(pixels) for name in contract.ENGINES}
    reference = answers["onnxruntime"]
    assert [array.shape for array in reference] == [(3, contract.RESNET50_EMBEDDING_DIM), (3, contract.NUM_CLASSES)]
    for name, got in answers.items():
        for array, expected in zip(got, reference, strict=True):
            np.testing.assert_allclose(array, expected, rtol=1e-5, atol=1e-6, err_msg=name)


def test_an_engines_outputs_are_not_overwritten_by_its_next_run(tmp_path: Path) -> None:
    model = tiny_resnet_contract_model(tmp_path / contract.MODEL_FILE)
    rng = np.random.default_rng(4)
    for name in contract.ENGINES:
        engine = engines.open_engine(name, model, input_name=contract.PIXELS, output_names=[contract.EMBEDDING],
                                     threads=1)
        first_pixels, second_pixels = (rng.normal(size=(1, 3, 224, 224)).astype(np.float32) for _ in range(2))
        (first,) = engine.run(first_pixels)
        kept = first.copy()
        engine.run(second_pixels)
        np.testing.assert_array_equal(first, kept, err_msg=name)


def test_an_unknown_engine_is_refused_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine 'tensorrt': choose one of onnxruntime, openvino"):
        engines.open_engine("tensorrt", tmp_path / "model.onnx", input_name="x", output_names=["y"], threads=1)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_available_cores_honours_a_cgroup_quota_below_the_affinity(tmp_path: Path) -> None:
    affinity = len(os.sched_getaffinity(0))
    assert engines.available_cores(tmp_path / "none") == affinity  # no cgroup files: the affinity
    write(tmp_path / "v2" / "cpu.max", "max 100000\n")
    assert engines.available_cores(tmp_path / "v2") == affinity
    write(tmp_path / "v2" / "cpu.max", "50000 100000\n")  # half a core: still one thread
    assert engines.available_cores(tmp_path / "v2") == 1
    write(tmp_path / "v2" / "cpu.max", f"{150000 * affinity} 100000\n")  # more than the affinity: the affinity
    assert engines.available_cores(tmp_path / "v2") == affinity
    write(tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us", "-1\n")
    write(tmp_path / "v1" / "cpu" / "cpu.cfs_period_us", "100000\n")
    assert engines.available_cores(tmp_path / "v1") == affinity
    write(tmp_path / "v1" / "cpu" / "cpu.cfs_quota_us", "100000\n")
    assert engines.available_cores(tmp_path / "v1") == 1
