"""Model tooling: synthetic architecture, graph surgery, verified downloads, offline errors."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from shopvision import _files, contract
from shopvision.cli.main import main as cli_main
from shopvision.modelbuild import weights as sources
from shopvision.modelbuild.build import build_model
from shopvision.modelbuild.surgery import SurgeryError, canonicalize, embedding_width
from shopvision.modelbuild.synthetic import (
    INPUT_NAME,
    LOGITS_NAME,
    build_synthetic_resnet50,
)
from shopvision.repository.configs import read_config
from shopvision.repository.files import ModelRepository, assemble
from shopvision.repository.records import PromotionRecord, read_weights_provenance, write_weights_provenance
from shopvision.server.tritonserver import free_ports
from shopvision.types import WeightsProvenance
from tests.support.servers import TEMPLATE, copy_repository


@pytest.fixture(scope="module")
def synthetic() -> onnx.ModelProto:
    return build_synthetic_resnet50(seed=0)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(7).normal(size=(3, 3, 224, 224)).astype(np.float32)


def trainable_parameter_count(model: onnx.ModelProto) -> int:
    """Parameters as torch counts them: everything but BatchNorm running statistics."""
    return sum(
        int(np.prod(init.dims)) for init in model.graph.initializer
        if not init.name.endswith(("running_mean", "running_var"))
    )


def run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def test_synthetic_model_is_resnet50_v1_5_sized(synthetic: onnx.ModelProto) -> None:
    assert trainable_parameter_count(synthetic) == 25_557_032
    convs = [n for n in synthetic.graph.node if n.op_type == "Conv"]
    assert len(convs) == 53  # 1 stem + 16 blocks x 3 + 4 downsample
    # v1.5 puts the stride on the 3x3 convolution of each stage's first block.
    strides = {n.name: [helper.get_attribute_value(a) for a in n.attribute if a.name == "strides"][0] for n in convs}
    strided = {name for name, stride in strides.items() if stride == [2, 2]}
    assert {"layer2.0.conv2", "layer3.0.conv2", "layer4.0.conv2"} <= strided
    assert "layer2.0.conv1" not in strided


def test_synthetic_weights_are_deterministic_per_seed() -> None:
    digest = lambda seed: hashlib.sha256(build_synthetic_resnet50(seed=seed).SerializeToString()).hexdigest()  # noqa: E731
    assert digest(3) == digest(3) != digest(4)


def test_surgery_adds_softmax_and_unit_norm_embedding(synthetic: onnx.ModelProto, pixels: np.ndarray) -> None:
    served = canonicalize(synthetic)
    assert [i.name for i in served.graph.input] == [contract.PIXELS]
    assert [o.name for o in served.graph.output] == [contract.PROBABILITIES, contract.EMBEDDING]
    probabilities, embedding = run(served, {contract.PIXELS: pixels})
    (logits,) = run(synthetic, {INPUT_NAME: pixels})
    expected = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(probabilities, expected / expected.sum(1, keepdims=True), rtol=1e-4, atol=1e-7)
    assert embedding.shape == (3, 2048)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


def zoo_shaped(model: onnx.ModelProto) -> onnx.ModelProto:
    """The synthetic network laid out like the ONNX Model Zoo's resnet50-v1-12 export:
    opset 12, input ``data`` with a fixed batch of 1, Reshape(x, [1, -1]) instead of Flatten,
    output ``resnetv17_dense0_fwd``."""
    zoo = onnx.ModelProto()
    zoo.CopyFrom(model)
    del zoo.opset_import[:]
    zoo.opset_import.append(helper.make_opsetid("", 12))
    graph = zoo.graph
    for node in graph.node:
        node.input[:] = ["data" if x == INPUT_NAME else x for x in node.input]
        node.output[:] = ["resnetv17_dense0_fwd" if x == LOGITS_NAME else x for x in node.output]
        if node.op_type == "Flatten":
            node.op_type = "Reshape"
            del node.attribute[:]
            node.input.append("flatten_shape")
    graph.initializer.append(numpy_helper.from_array(np.array([1, -1], dtype=np.int64), "flatten_shape"))
    graph.input[0].name = "data"
    graph.input[0].type.tensor_type.shape.dim[0].Clear()
    graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1
    graph.output[0].name = "resnetv17_dense0_fwd"
    graph.output[0].type.tensor_type.shape.dim[0].Clear()
    graph.output[0].type.tensor_type.shape.dim[0].dim_value = 1
    onnx.checker.check_model(zoo)
    return zoo


def test_surgery_on_a_zoo_shaped_graph_gives_the_same_outputs_with_any_batch(
    synthetic: onnx.ModelProto, pixels: np.ndarray
) -> None:
    served = canonicalize(zoo_shaped(synthetic))
    dims = served.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch"
    probabilities, embedding = run(served, {contract.PIXELS: pixels})
    reference_probabilities, reference_embedding = run(canonicalize(synthetic), {contract.PIXELS: pixels})
    np.testing.assert_allclose(probabilities, reference_probabilities, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(embedding, reference_embedding, rtol=1e-4, atol=1e-6)


def test_surgery_does_not_apply_softmax_twice(synthetic: onnx.ModelProto, pixels: np.ndarray) -> None:
    with_softmax = onnx.ModelProto()
    with_softmax.CopyFrom(synthetic)
    with_softmax.graph.node.append(helper.make_node("Softmax", [LOGITS_NAME], ["prob"], axis=1))
    with_softmax.graph.output[0].name = "prob"
    probabilities, _ = run(canonicalize(with_softmax), {contract.PIXELS: pixels})
    reference, _ = run(canonicalize(synthetic), {contract.PIXELS: pixels})
    np.testing.assert_allclose(probabilities, reference, rtol=1e-4, atol=1e-7)


def test_surgery_rejects_a_graph_that_is_not_an_image_classifier() -> None:
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 10])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 10])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]))
    with pytest.raises(SurgeryError, match="NCHW input with 3 channels"):
        canonicalize(model)


@pytest.fixture()
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on 127.0.0.1 serving ``tmp_path/served``."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", served
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_verifies_sha256_and_keeps_only_good_files(file_server: tuple[str, Path], tmp_path: Path) -> None:
    url, served = file_server
    payload = b"onnx bytes " * 10_000
    (served / "weights.onnx").write_bytes(payload)
    target = tmp_path / "cache" / "weights.onnx"

    with pytest.raises(sources.ChecksumMismatch, match="refusing"):
        sources.download(f"{url}/weights.onnx", target, expected_sha256="0" * 64)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # no half-written .part file either

    sources.download(f"{url}/weights.onnx", target, expected_sha256=hashlib.sha256(payload).hexdigest())
    assert target.read_bytes() == payload


def test_zoo_fetch_through_a_mirror_is_cached_and_verified(
    file_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = file_server
    payload = b"pretend zoo model"
    (served / "tiny-zoo.onnx").write_bytes(payload)
    monkeypatch.setenv(sources.MIRROR_ENV, url)
    monkeypatch.setenv(_files.CACHE_ENV, str(tmp_path / "cache"))
    model = sources.ZooModel("tiny-zoo", hashlib.sha256(payload).hexdigest(), top1=0.0)
    path = sources.fetch_zoo_model(model)
    assert path.read_bytes() == payload and path.parent == tmp_path / "cache" / "weights"
    (served / "tiny-zoo.onnx").unlink()  # a second fetch must come from the cache
    assert sources.fetch_zoo_model(model) == path


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Downloads go to a closed port on 127.0.0.1, as on a machine without network."""
    (closed_port,) = free_ports(1)
    monkeypatch.setenv(sources.MIRROR_ENV, f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv(_files.CACHE_ENV, str(tmp_path / "empty-cache"))


@pytest.mark.usefixtures("offline")
def test_offline_zoo_build_fails_clearly_and_names_the_synthetic_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repository = copy_repository(tmp_path / "repo")
    status = cli_main(["model", "build", "--weights", "resnet50-v1-12", "--repository", str(repository)])
    error = capsys.readouterr().err
    assert status == 1
    assert "could not download" in error and "--weights synthetic" in error
    assert not (repository / "resnet50" / "1" / "model.onnx").exists()


@pytest.mark.usefixtures("offline")
def test_auto_falls_back_to_synthetic_and_records_it(tmp_path: Path) -> None:
    repository = copy_repository(tmp_path / "repo")
    result = build_model("auto", repository, seed=0)
    assert result.fallback_reason and "could not download" in result.fallback_reason
    assert result.provenance.synthetic and result.provenance.source == "synthetic"
    parameters = read_config(repository / "resnet50" / "configs" / "cpu.pbtxt").parameters
    assert parameters["weights_synthetic"].string_value == "true"
    assert parameters["weights_model_sha256"].string_value == result.provenance.model_sha256
    assert hashlib.sha256(result.model_path.read_bytes()).hexdigest() == result.provenance.model_sha256


def test_local_onnx_file_is_accepted_with_its_sha256(tmp_path: Path, synthetic: onnx.ModelProto,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "resnet50_export.onnx"
    onnx.save(zoo_shaped(synthetic), str(export))
    repository = copy_repository(tmp_path / "repo")
    status = cli_main(["model", "build", "--weights", str(export), "--repository", str(repository), "--version", "2",
                       "--json"])
    report = json.loads(capsys.readouterr().out)  # all of stdout is the one document
    assert status == 0 and report["built_versions"] == [2] and report["built"]["version"] == 2
    provenance = report["built"]["provenance"]
    assert provenance == json.loads((repository / "resnet50" / "2" / "provenance.json").read_text())
    assert not provenance["synthetic"]
    assert provenance["source_sha256"] == hashlib.sha256(export.read_bytes()).hexdigest()
    assert (repository / "resnet50" / "2" / "model.py").exists()  # the cpu configuration's runner, for the new version


class _CalibrationImages:
    """A few fixed random inputs: enough to exercise static quantisation, not to make it accurate."""

    def __init__(self) -> None:
        self._batches = iter([{INPUT_NAME: np.random.default_rng(i).normal(size=(1, 3, 224, 224)).astype(np.float32)}
                              for i in range(2)])

    def get_next(self):  # onnxruntime's CalibrationDataReader protocol
        return next(self._batches, None)


@pytest.mark.parametrize("quant_format", ["QDQ", "QOperator"])
def test_surgery_on_statically_quantised_graphs(synthetic: onnx.ModelProto, pixels: np.ndarray, tmp_path: Path,
                                                quant_format: str) -> None:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    onnx.save(synthetic, str(fp32))
    quantize_static(str(fp32), str(int8), _CalibrationImages(), quant_format=QuantFormat[quant_format],
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    probabilities, embedding = run(canonicalize(onnx.load(str(int8))), {contract.PIXELS: pixels})
    assert probabilities.shape == (3, 1000) and embedding.shape == (3, 2048)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-4)
    _, fp32_embedding = run(canonicalize(synthetic), {contract.PIXELS: pixels})
    # The quantised embedding approximates the float one better than another image's does.
    own = np.linalg.norm(embedding - fp32_embedding, axis=1)
    other = np.linalg.norm(embedding - np.roll(fp32_embedding, 1, axis=0), axis=1)
    assert (own < other).all()


def fake_version(repository: Path, version: int, source: str) -> None:
    """A built version as far as the repository's bookkeeping goes (the weights are not read here)."""
    version_dir = repository / "resnet50" / str(version)
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.onnx").write_bytes(b"weights of " + source.encode())
    write_weights_provenance(version_dir, WeightsProvenance(
        source=source, source_sha256="0" * 64, model_sha256=str(version) * 64, synthetic=False,
        built_at="2026-11-27T00:00:00+00:00", backbone="resnet50-v1-12", embedding_dim=2048))


def test_assembling_again_keeps_the_weights_and_the_promoted_version(tmp_path: Path) -> None:
    template_before = {path: path.read_bytes() for path in TEMPLATE.rglob("*.pbtxt")}
    repository = copy_repository(tmp_path / "built")
    fake_version(repository, 1, "first")
    fake_version(repository, 2, "second")
    files = ModelRepository(repository)
    files.restore_serving_state()
    assert files.serves_latest() and files.pinned_version() is None
    cpu = repository / "resnet50" / "configs" / "cpu.pbtxt"
    assert read_config(cpu).parameters["weights_source"].string_value == "second"  # the newest serves
    files.record(PromotionRecord.now(version=1, previous=2, promoted=True))
    assemble(TEMPLATE, repository)  # e.g. after an edit of the template
    assert files.pinned_version() == 1 and not files.serves_latest()
    for config in files.resnet_configs():
        assert list(read_config(config).version_policy.specific.versions) == [1], config
        assert read_config(config).parameters["weights_source"].string_value == "first", config
    assert (repository / "resnet50" / "2" / "model.onnx").read_bytes() == b"weights of second"
    assert {path: path.read_bytes() for path in TEMPLATE.rglob("*.pbtxt")} == template_before


def _convolutional_head_classifier() -> onnx.ModelProto:
    """A classifier whose logits come from a convolution, not from a pooled vector: inspection must give up.
    Its global max pool, a side branch, is what --embedding-node names."""
    rng = np.random.default_rng(5)
    initializers = [numpy_helper.from_array(rng.normal(size=(16, 3, 8, 8)).astype(np.float32), "w1"),
                    numpy_helper.from_array(rng.normal(size=(1000, 16, 28, 28)).astype(np.float32) * 0.01, "w2")]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], name="stem", strides=[8, 8]),
             helper.make_node("Relu", ["c1"], ["features"], name="relu"),
             helper.make_node("GlobalMaxPool", ["features"], ["pooled"], name="side_pool"),
             helper.make_node("Conv", ["features", "w2"], ["head"], name="conv_head"),
             helper.make_node("Flatten", ["head"], ["logits"], name="flatten")]
    graph = helper.make_graph(nodes, "conv_head", [helper.make_tensor_value_info(
        "input", onnx.TensorProto.FLOAT, ["n", 3, 224, 224])],
        [helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["n", 1000])], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what the pinned onnxruntime reads
    return model


def test_surgery_asks_for_the_embedding_node_where_it_cannot_find_the_pool_and_uses_the_one_named(
        pixels: np.ndarray) -> None:
    model = _convolutional_head_classifier()
    with pytest.raises(SurgeryError, match="reached 'Conv' \\(conv_head\\) first; name the node .* --embedding-node"):
        canonicalize(model)
    served = canonicalize(model, embedding_node="side_pool")
    assert embedding_width(served) == 16
    probabilities, embedding = run(served, {contract.PIXELS: pixels})
    expected = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    hidden = np.maximum(0, _conv_stride8(pixels, model))
    np.testing.assert_allclose(embedding, _unit(hidden.max(axis=(2, 3))), atol=1e-5)
    logits = expected.run(None, {"input": pixels})[0]
    np.testing.assert_allclose(probabilities, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), atol=1e-5)
    with pytest.raises(SurgeryError, match="--embedding-node nowhere: no node or tensor"):
        canonicalize(model, embedding_node="nowhere")


def _conv_stride8(pixels: np.ndarray, model: onnx.ModelProto) -> np.ndarray:
    weights = numpy_helper.to_array(model.graph.initializer[0])
    patches = pixels.reshape(len(pixels), 3, 28, 8, 28, 8)
    return np.einsum("nchxwy,kcxy->nkhw", patches, weights)


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_mobilenet_v2_int8_canonicalises_to_a_1280_wide_dequantized_embedding(pixels: np.ndarray) -> None:
    from tests.support.real_data import MOBILENET, require

    source = onnx.load(str(require(MOBILENET)))
    served = canonicalize(source)
    assert embedding_width(served) == 1280
    assert any(node.name == "shopvision_dequantize_embedding" for node in served.graph.node)
    probabilities, embedding = run(served, {contract.PIXELS: pixels})
    logits = ort.InferenceSession(source.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input": pixels})[0]
    np.testing.assert_allclose(probabilities, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(embedding, axis=1), 1.0, atol=1e-5)


def test_a_promotion_to_another_embedding_width_is_refused_before_anything_loads(tmp_path: Path) -> None:
    from shopvision.repository.lifecycle import PromotionError, ResnetVersions

    repository = copy_repository(tmp_path / "model_repository")
    for version, (backbone, width) in enumerate((("resnet50-v1-12", 2048), ("mobilenetv2-12-int8", 1280)), 1):
        fake_version(repository, version, backbone)
        path = repository / "resnet50" / str(version) / "provenance.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "backbone": backbone, "embedding_dim": width}))
    with pytest.raises(PromotionError, match="version 2 is mobilenetv2-12-int8 with 1280-d .* version 1 serves "
                                             "resnet50-v1-12 with 2048-d"):
        ResnetVersions(repository).refuse(2, current=1)


def test_mobilenet_is_a_known_model_fetched_from_its_zoo_folder_or_a_flat_mirror(
        monkeypatch: pytest.MonkeyPatch) -> None:
    model = sources.ZOO_MODELS["mobilenetv2-12-int8"]
    monkeypatch.delenv(sources.MIRROR_ENV, raising=False)
    assert model.url() == ("https://github.com/onnx/models/raw/main/validated/vision/classification/mobilenet/model/"
                           "mobilenetv2-12-int8.onnx")
    assert sources.ZOO_MODELS["resnet50-v1-12"].url().endswith("/classification/resnet/model/resnet50-v1-12.onnx")
    monkeypatch.setenv(sources.MIRROR_ENV, "http://mirror.internal/weights/")
    assert model.url() == "http://mirror.internal/weights/mobilenetv2-12-int8.onnx"
    assert sources.known_model_by_sha256(model.sha256) is model and sources.known_model_by_sha256("0" * 64) is None


def test_provenance_written_before_backbones_were_named_reads_as_resnet50(tmp_path: Path) -> None:
    for synthetic, backbone in ((True, "resnet50-synthetic"), (False, "resnet50-v1-12")):
        (tmp_path / "provenance.json").write_text(json.dumps(
            {"source": "synthetic" if synthetic else "resnet50-v1-12", "source_sha256": "0" * 64,
             "model_sha256": "1" * 64, "synthetic": synthetic, "built_at": "2026-11-27T00:00:00+00:00"}))
        provenance = read_weights_provenance(tmp_path)
        assert provenance is not None and (provenance.backbone, provenance.embedding_dim) == (backbone, 2048)
