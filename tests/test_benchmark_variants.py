"""The benchmark's configurations change what they say they change, and leave loadable configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import compare
from shopvision import contract
from shopvision.repository.configs import read_config
from tests.support.servers import TEMPLATE, copy_repository


def variant(tmp_path: Path, name: str) -> Path:
    base = copy_repository(tmp_path / "base")
    return compare.variant_repository(base, tmp_path / "variants", name)


def cpu_config(repository: Path, model: str = contract.RESNET_MODEL):
    return read_config(repository / model / "configs" / f"{contract.CPU_CONFIG_NAME}.pbtxt")


def test_without_quality_monitor_the_ensemble_takes_probabilities_from_resnet50(tmp_path: Path) -> None:
    ensemble = read_config(variant(tmp_path, "no_quality_monitor") / contract.ENSEMBLE_MODEL / "config.pbtxt")
    steps = {step.model_name: step for step in ensemble.ensemble_scheduling.step}
    assert set(steps) == {contract.PREPROCESS_MODEL, contract.RESNET_MODEL}
    produced = set(steps[contract.RESNET_MODEL].output_map.values())
    assert {output.name for output in ensemble.output} == produced == {contract.PROBABILITIES, contract.EMBEDDING}


@pytest.mark.parametrize("name, count, threads", [("two_instances_one_thread", 2, "1"),
                                                  ("single_instance", 1, str(compare.CORES))])
def test_layout_variants_set_instances_and_threads(tmp_path: Path, name: str, count: int, threads: str) -> None:
    config = cpu_config(variant(tmp_path, name))
    assert [group.count for group in config.instance_group] == [count]
    for parameter in ("intra_op_threads", "single_image_intra_op_threads"):
        assert config.parameters[parameter].string_value == threads
    shipped = cpu_config(TEMPLATE)
    assert config.dynamic_batching == shipped.dynamic_batching and config.output == shipped.output
    assert config.parameters[contract.ENGINE_PARAMETER] == shipped.parameters[contract.ENGINE_PARAMETER]


def test_the_openvino_variant_changes_the_engine_and_nothing_else(tmp_path: Path) -> None:
    config, shipped = cpu_config(variant(tmp_path, "openvino")), cpu_config(TEMPLATE)
    assert shipped.parameters[contract.ENGINE_PARAMETER].string_value == "onnxruntime"
    assert config.parameters[contract.ENGINE_PARAMETER].string_value == "openvino"
    config.parameters[contract.ENGINE_PARAMETER].string_value = "onnxruntime"
    assert config == shipped


def test_batching_variants(tmp_path: Path) -> None:
    unbounded = cpu_config(variant(tmp_path / "a", "unbounded_batches"))
    assert list(unbounded.dynamic_batching.preferred_batch_size) == []
    assert unbounded.dynamic_batching.default_queue_policy.max_queue_size == 128
    unbatched = variant(tmp_path / "b", "no_batching")
    for model in (contract.PREPROCESS_MODEL, contract.RESNET_MODEL):
        assert not cpu_config(unbatched, model).HasField("dynamic_batching")
    assert read_config(unbatched / contract.PREPROCESS_MODEL / "config.pbtxt").HasField("dynamic_batching")


def test_variants_without_edits_serve_the_base_repository(tmp_path: Path) -> None:
    for name in ("default",):
        assert variant(tmp_path / name, name) == tmp_path / name / "base"
