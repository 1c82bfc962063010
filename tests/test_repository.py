"""The checked-in model repository agrees with shopvision.contract."""

from __future__ import annotations

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2

from shopvision import contract
from shopvision.repository.configs import read_config as load_config
from tests.support.servers import TEMPLATE

STRING, FP32 = model_config_pb2.TYPE_STRING, model_config_pb2.TYPE_FP32


def tensors(entries) -> dict[str, tuple[int, list[int]]]:
    return {entry.name: (entry.data_type, list(entry.dims)) for entry in entries}


RESNET_CONFIGS = [
    TEMPLATE / contract.RESNET_MODEL / "config.pbtxt",
    TEMPLATE / contract.RESNET_MODEL / "configs" / f"{contract.CPU_CONFIG_NAME}.pbtxt",
]
RESNET_OUTPUTS = {
    contract.PROBABILITIES: (FP32, [contract.NUM_CLASSES]),
    contract.EMBEDDING: (FP32, [contract.RESNET50_EMBEDDING_DIM]),
}


def test_ensemble_takes_image_bytes_and_returns_labelled_probabilities_and_embedding() -> None:
    config = load_config(TEMPLATE / contract.ENSEMBLE_MODEL / "config.pbtxt")
    assert config.name == contract.ENSEMBLE_MODEL and config.platform == "ensemble"
    assert config.max_batch_size >= 32
    assert tensors(config.input) == {contract.IMAGE_INPUT: (STRING, [1])}
    assert tensors(config.output) == RESNET_OUTPUTS
    labelled = {o.name: o.label_filename for o in config.output}
    assert labelled[contract.PROBABILITIES] == contract.LABELS_FILE
    steps = [step.model_name for step in config.ensemble_scheduling.step]
    assert steps == [contract.PREPROCESS_MODEL, contract.RESNET_MODEL, contract.QUALITY_MONITOR_MODEL]


def test_quality_monitor_passes_the_probabilities_through() -> None:
    config = load_config(TEMPLATE / contract.QUALITY_MONITOR_MODEL / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size >= 32
    assert tensors(config.input) == {contract.PROBABILITIES: (FP32, [contract.NUM_CLASSES])}
    assert tensors(config.output) == {contract.MONITORED_PROBABILITIES: (FP32, [contract.NUM_CLASSES])}
    ensemble = load_config(TEMPLATE / contract.ENSEMBLE_MODEL / "config.pbtxt")
    (monitor,) = [step for step in ensemble.ensemble_scheduling.step if step.model_name == config.name]
    assert dict(monitor.output_map) == {contract.MONITORED_PROBABILITIES: contract.PROBABILITIES}


def test_preprocess_is_a_batched_python_model_from_bytes_to_pixels() -> None:
    config = load_config(TEMPLATE / contract.PREPROCESS_MODEL / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size >= 32
    assert config.HasField("dynamic_batching")
    assert tensors(config.input) == {contract.IMAGE_INPUT: (STRING, [1])}
    assert tensors(config.output) == {contract.PIXELS: (FP32, [3, contract.CROP_SIZE, contract.CROP_SIZE])}


@pytest.mark.parametrize("name", ["config.pbtxt", f"configs/{contract.CPU_CONFIG_NAME}.pbtxt"])
def test_preprocess_refuses_images_past_the_contract_byte_and_pixel_limits(name: str) -> None:
    config = load_config(TEMPLATE / contract.PREPROCESS_MODEL / name)
    assert int(config.parameters["max_image_bytes"].string_value) == contract.MAX_IMAGE_BYTES
    assert int(config.parameters["max_image_pixels"].string_value) == contract.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("path", RESNET_CONFIGS, ids=lambda p: p.name)
def test_every_resnet50_config_has_the_same_contract(path: Path) -> None:
    config = load_config(path)
    assert config.name == contract.RESNET_MODEL and config.max_batch_size >= 32
    assert config.HasField("dynamic_batching")
    (pixels,) = config.input
    assert (pixels.name, pixels.data_type, list(pixels.dims)) == (contract.PIXELS, FP32, [3, 224, 224])
    assert pixels.format == model_config_pb2.ModelInput.FORMAT_NCHW
    assert tensors(config.output) == RESNET_OUTPUTS
    assert {o.label_filename for o in config.output if o.name == contract.PROBABILITIES} == {contract.LABELS_FILE}


def test_the_gpu_config_runs_on_tritons_onnxruntime_and_the_cpu_config_on_the_python_backend() -> None:
    gpu, cpu = (load_config(path) for path in RESNET_CONFIGS)
    assert (gpu.backend, cpu.backend) == ("onnxruntime", "python")
    assert [group.kind for group in cpu.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert cpu.parameters[contract.ENGINE_PARAMETER].string_value in contract.ENGINES


# config.pbtxt is the GPU node's and cannot run here (Triton's onnxruntime backend comes only with the official
# container, and there is no GPU): these static checks are all it gets (docs/serving-modes.md says so).
def test_the_gpu_config_warms_up_a_lone_image_and_every_batch_size_it_prefers() -> None:
    config = load_config(RESNET_CONFIGS[0])
    preferred = list(config.dynamic_batching.preferred_batch_size)
    assert preferred == sorted(preferred) and preferred[-1] == config.max_batch_size == contract.MAX_BATCH_SIZE
    warmups = {warmup.batch_size: warmup for warmup in config.model_warmup}
    assert sorted(warmups) == [1, *preferred] and len(warmups) == len(config.model_warmup)
    for warmup in warmups.values():
        (name, tensor), = warmup.inputs.items()
        assert (name, tensor.data_type, list(tensor.dims)) == (contract.PIXELS, FP32, [3, contract.CROP_SIZE,
                                                                                       contract.CROP_SIZE])
        assert tensor.zero_data
    # A batch size the scheduler has not formed before must not stall on cuDNN's exhaustive algorithm search.
    assert config.parameters["cudnn_conv_algo_search"].string_value == "1"


def test_the_gpu_config_has_one_resnet50_instance_per_gpu_and_preprocess_several_decoders() -> None:
    (group,) = load_config(RESNET_CONFIGS[0]).instance_group
    # No kind: Triton places it on each GPU when there is one (KIND_AUTO), one instance each.
    assert (group.count, group.kind, list(group.gpus)) == (1, model_config_pb2.ModelInstanceGroup.KIND_AUTO, [])
    preprocess = load_config(TEMPLATE / contract.PREPROCESS_MODEL / "config.pbtxt")
    cpu_preprocess = load_config(TEMPLATE / contract.PREPROCESS_MODEL / "configs" / f"{contract.CPU_CONFIG_NAME}.pbtxt")
    assert sum(g.count for g in preprocess.instance_group) > sum(g.count for g in cpu_preprocess.instance_group) == 1
    assert all(g.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU for g in preprocess.instance_group)


@pytest.mark.parametrize("model", [contract.ENSEMBLE_MODEL, contract.RESNET_MODEL])
def test_labels_are_the_1000_imagenet_classes(model: str) -> None:
    labels = (TEMPLATE / model / contract.LABELS_FILE).read_text().splitlines()
    assert len(labels) == contract.NUM_CLASSES
    assert (labels[0], labels[504], labels[954], labels[999]) == ("tench", "coffee mug", "banana", "toilet tissue")


CATEGORIES_CONFIGS = [
    TEMPLATE / contract.CATEGORIES_MODEL / "config.pbtxt",
    TEMPLATE / contract.CATEGORIES_MODEL / "configs" / f"{contract.CPU_CONFIG_NAME}.pbtxt",
]


@pytest.mark.parametrize("path", CATEGORIES_CONFIGS, ids=lambda p: p.name)
def test_every_categories_config_takes_the_embedding_and_passes_it_through(path: Path) -> None:
    config = load_config(path)
    assert config.name == contract.CATEGORIES_MODEL and config.max_batch_size == contract.MAX_BATCH_SIZE
    assert tensors(config.input) == {contract.EMBEDDING: (FP32, [contract.RESNET50_EMBEDDING_DIM])}
    # Any number of categories: heads of different widths share the config while a promotion runs.
    assert tensors(config.output) == {contract.CATEGORY_PROBABILITIES: (FP32, [-1]),
                                      contract.CATEGORISED_EMBEDDING: (FP32, [contract.RESNET50_EMBEDDING_DIM])}
    backends = {"config.pbtxt": "onnxruntime", f"{contract.CPU_CONFIG_NAME}.pbtxt": "python"}
    assert config.backend == backends[path.name]


def test_the_template_ensemble_has_no_categories_step_until_a_head_serves() -> None:
    ensemble = load_config(TEMPLATE / contract.ENSEMBLE_MODEL / "config.pbtxt")
    assert contract.CATEGORIES_MODEL not in [step.model_name for step in ensemble.ensemble_scheduling.step]
    assert not list((TEMPLATE / contract.CATEGORIES_MODEL).glob("[0-9]*"))  # versions come from training
