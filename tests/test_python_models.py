"""The three Python-backend models, run offline against a stub of ``triton_python_backend_utils``.

Requests in, responses and errors out, as Triton would call ``initialize``/``execute``/``finalize``,
with each model's own config from the template. No tritonserver is started.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import json_format, text_format
from onnx import TensorProto, helper

from shopvision import contract
from shopvision.backend.preprocessing import Preprocessor
from shopvision.repository.configs import read_config
from tests.support import python_backend_stub as pb_utils
from tests.support.images import photo_jpeg, photo_png
from tests.support.servers import TEMPLATE


def load_model(model: str, repository: Path, config_name: str = "config.pbtxt") -> Any:
    """``model``'s model.py from ``repository``, initialised with its config as Triton passes it."""
    model_dir = repository / model
    spec = importlib.util.spec_from_file_location(f"python_model_{model}", model_dir / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config_path = model_dir / "configs" / config_name if config_name != "config.pbtxt" else model_dir / config_name
    config = json_format.MessageToDict(read_config(config_path), preserving_proto_field_name=True)
    instance = module.TritonPythonModel()
    instance.initialize({"model_config": json.dumps(config), "model_repository": str(model_dir),
                         "model_version": "1", "model_name": model})
    return instance


def request(name: str, array: np.ndarray) -> pb_utils.InferenceRequest:
    return pb_utils.InferenceRequest([pb_utils.Tensor(name, array)])


def images(*encoded: bytes) -> np.ndarray:
    return np.array([[data] for data in encoded], dtype=object)


def output(response: pb_utils.InferenceResponse, name: str) -> np.ndarray:
    assert not response.has_error(), response.error().message()
    tensor = pb_utils.get_output_tensor_by_name(response, name)
    assert tensor is not None, name
    return tensor.as_numpy()


@pytest.fixture(autouse=True)
def stub() -> Iterator[ModuleType]:
    with pb_utils.installed() as module:
        yield module


def test_preprocess_answers_each_request_of_a_dynamic_batch_and_fails_only_the_bad_one() -> None:
    model = load_model(contract.PREPROCESS_MODEL, TEMPLATE)
    jpeg, png = photo_jpeg(1), photo_png(2)
    requests = [
        request(contract.IMAGE_INPUT, images(jpeg, png)),
        request(contract.IMAGE_INPUT, images(png, b"not an image at all")),
        request(contract.IMAGE_INPUT, images(b"")),
        request(contract.IMAGE_INPUT, images(png)),
    ]
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    pixels = output(responses[0], contract.PIXELS)
    assert pixels.shape == (2, 3, contract.CROP_SIZE, contract.CROP_SIZE) and pixels.dtype == np.float32
    preprocessor = Preprocessor()
    expected = preprocessor.normalise(np.stack([preprocessor.crop(jpeg), preprocessor.crop(png)]))
    np.testing.assert_allclose(pixels, expected, atol=1e-6)
    # The same image gives the same pixels whatever it was batched with.
    np.testing.assert_array_equal(output(responses[3], contract.PIXELS)[0], pixels[1])
    for response, where in ((responses[1], "invalid image 2 of 2: "), (responses[2], "invalid image: empty image")):
        error = response.error()
        assert error is not None and error.code() == pb_utils.TritonError.INVALID_ARG
        assert error.message().startswith(where), error.message()


def test_preprocess_takes_its_byte_limit_from_the_config(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    (repository / contract.PREPROCESS_MODEL / "1").mkdir(parents=True)
    source = TEMPLATE / contract.PREPROCESS_MODEL
    (repository / contract.PREPROCESS_MODEL / "1" / "model.py").write_bytes((source / "1" / "model.py").read_bytes())
    config = read_config(source / "config.pbtxt")
    config.parameters["max_image_bytes"].string_value = "1000"
    (repository / contract.PREPROCESS_MODEL / "config.pbtxt").write_text(text_format.MessageToString(config))
    model = load_model(contract.PREPROCESS_MODEL, repository)
    (response,) = model.execute([request(contract.IMAGE_INPUT, images(photo_jpeg(3)))])
    assert "over the limit of 1000 bytes" in response.error().message()


def test_quality_monitor_passes_probabilities_through_and_records_each_top1(tmp_path: Path) -> None:
    model = load_model(contract.QUALITY_MONITOR_MODEL, TEMPLATE)
    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float32)
    (first, second) = model.execute([request(contract.PROBABILITIES, probabilities[:1]),
                                     request(contract.PROBABILITIES, probabilities[1:])])
    np.testing.assert_array_equal(output(first, contract.MONITORED_PROBABILITIES), probabilities[:1])
    np.testing.assert_array_equal(output(second, contract.MONITORED_PROBABILITIES), probabilities[1:])
    (family,) = pb_utils.MetricFamily.created
    assert family.name == contract.CONFIDENCE_METRIC and family.kind == pb_utils.MetricFamily.HISTOGRAM
    (metric,) = family.metrics
    assert metric.buckets == list(contract.CONFIDENCE_BUCKETS)
    assert metric.observed == pytest.approx([0.7, 0.6])
    assert not [message for level, message in pb_utils.Logger.records if level == "warn"]


def test_quality_monitor_warns_in_the_server_log_about_synthetic_weights(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    monitor = repository / contract.QUALITY_MONITOR_MODEL
    (monitor / "1").mkdir(parents=True)
    source = TEMPLATE / contract.QUALITY_MONITOR_MODEL
    (monitor / "config.pbtxt").write_bytes((source / "config.pbtxt").read_bytes())
    (monitor / "1" / "model.py").write_bytes((source / "1" / "model.py").read_bytes())
    version = repository / contract.RESNET_MODEL / "2"
    version.mkdir(parents=True)
    (version / contract.PROVENANCE_FILE).write_text(json.dumps({"source": "synthetic", "synthetic": True}))
    load_model(contract.QUALITY_MONITOR_MODEL, repository)
    warnings = [message for level, message in pb_utils.Logger.records if level == "warn"]
    assert len(warnings) == 1 and "SYNTHETIC WEIGHTS: resnet50 version 2" in warnings[0]


def tiny_resnet_contract_model(path: Path) -> Path:
    """A small graph with resnet50's inputs and outputs (pixels -> probabilities, unit embedding)."""
    rng = np.random.default_rng(0)
    weights = helper.make_tensor("weights", TensorProto.FLOAT, [3, contract.NUM_CLASSES],
                                 rng.normal(size=3 * contract.NUM_CLASSES).astype(np.float32))
    projection = helper.make_tensor("projection", TensorProto.FLOAT, [3, contract.RESNET50_EMBEDDING_DIM],
                                    rng.normal(size=3 * contract.RESNET50_EMBEDDING_DIM).astype(np.float32))
    nodes = [
        helper.make_node("GlobalAveragePool", [contract.PIXELS], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["features"]),
        helper.make_node("MatMul", ["features", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [contract.PROBABILITIES], axis=1),
        helper.make_node("MatMul", ["features", "projection"], ["projected"]),
        helper.make_node("LpNormalization", ["projected"], [contract.EMBEDDING], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(contract.PIXELS, TensorProto.FLOAT, ["n", 3, 224, 224])],
        [helper.make_tensor_value_info(contract.PROBABILITIES, TensorProto.FLOAT, ["n", contract.NUM_CLASSES]),
         helper.make_tensor_value_info(contract.EMBEDDING, TensorProto.FLOAT, ["n", contract.RESNET50_EMBEDDING_DIM])],
        [weights, projection])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("engine", contract.ENGINES)
def test_the_cpu_resnet50_splits_one_batched_run_back_into_its_requests(engine: str, tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    resnet = repository / contract.RESNET_MODEL
    (resnet / "1").mkdir(parents=True)
    (resnet / "configs").mkdir()
    source = TEMPLATE / contract.RESNET_MODEL
    (resnet / "1" / "model.py").write_bytes((source / "1" / "model.py").read_bytes())
    config_file = f"{contract.CPU_CONFIG_NAME}.pbtxt"
    config_text = (source / "configs" / config_file).read_text().replace(
        'key: "engine" value { string_value: "onnxruntime" }', f'key: "engine" value {{ string_value: "{engine}" }}')
    assert f'string_value: "{engine}"' in config_text
    (resnet / "configs" / config_file).write_text(config_text)
    model_file = tiny_resnet_contract_model(resnet / "1" / contract.MODEL_FILE)
    model = load_model(contract.RESNET_MODEL, repository, config_file)
    pixels = np.random.default_rng(1).normal(size=(4, 3, 224, 224)).astype(np.float32)
    try:
        responses = model.execute([request(contract.PIXELS, pixels[:1]), request(contract.PIXELS, pixels[1:3])])
        (lone,) = model.execute([request(contract.PIXELS, pixels[3:])])
    finally:
        model.finalize()
    expected = ort.InferenceSession(str(model_file)).run([contract.PROBABILITIES, contract.EMBEDDING],
                                                         {contract.PIXELS: pixels})
    served = [np.concatenate([output(response, name) for response in [*responses, lone]])
              for name in (contract.PROBABILITIES, contract.EMBEDDING)]
    assert [len(output(response, contract.EMBEDDING)) for response in responses] == [1, 2]
    for got, want in zip(served, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
