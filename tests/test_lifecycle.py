"""Model versions on a live server: promote and roll back under load, and a broken version refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from onnx import TensorProto, helper, numpy_helper

from shopvision.categories.export import head_to_onnx
from shopvision.categories.training import train_head
from shopvision.contract import (
    ADMIN_KEY_ENV,
    EMBEDDING,
    IMAGE_INPUT,
    MODEL_FILE,
    PIXELS,
    PREPROCESS_MODEL,
    PROBABILITIES,
    RESNET_MODEL,
)
from shopvision.modelbuild.build import build_model
from shopvision.repository.files import CategoryHeads
from shopvision.repository.heads import promote_head
from shopvision.repository.lifecycle import ModelRepository, PromotionError, promote, rollback
from shopvision.repository.records import HeadProvenance, read_weights_provenance
from shopvision.samples import product_jpeg
from tests.support.servers import TEMPLATE, RunningServer, start_server
from tests.support.traffic import Asking, Traffic, Unexpected, switches
from tests.support.vectors import labelled_vectors

pytestmark = pytest.mark.integration
ADMIN_KEY = "lifecycle-test-key"


@pytest.fixture(scope="module")
def version_two(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """resnet50 version 2 (synthetic, seed 1), built once for the module: every test gets a copy of its folder."""
    repository = tmp_path_factory.mktemp("version-two") / "model_repository"
    shutil.copytree(built_repository, repository, symlinks=True)
    build_model("synthetic", repository, version=2, seed=1)
    return repository / RESNET_MODEL / "2"


@pytest.fixture
def versioned(built_repository: Path, version_two: Path, tmp_path: Path) -> tuple[Path, RunningServer]:
    """Version 1 (seed 0) serving in explicit model control; version 2 (seed 1) arriving after the start, as an
    update does: under `latest 1` the server keeps version 1 until a promotion loads 2.

    Version 2 arrives as `shopvision model build` leaves it (its folder, then the configs' serving state), copied
    from the module's one build instead of built again for each test."""
    repository = tmp_path / "model_repository"
    shutil.copytree(built_repository, repository, symlinks=True)
    running = start_server(repository, tmp_path / "lifecycle.log", admin_key=ADMIN_KEY, model_control="explicit")
    shutil.copytree(version_two, repository / RESNET_MODEL / "2", symlinks=True)
    ModelRepository(repository).restore_serving_state()
    yield repository, running
    running.server.stop()


def embed_in_process(model: Path, pixels: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run([EMBEDDING], {PIXELS: pixels})[0][0]


def reference_embeddings(repository: Path, client: grpcclient.InferenceServerClient,
                         image: bytes) -> dict[int, np.ndarray]:
    """What each version answers for ``image``: the server's preprocessing, each model file in-process."""
    tensor = grpcclient.InferInput(IMAGE_INPUT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image]], dtype=object))
    pixels = client.infer(PREPROCESS_MODEL, [tensor]).as_numpy(PIXELS)
    return {version: embed_in_process(repository / RESNET_MODEL / str(version) / MODEL_FILE, pixels)
            for version in (1, 2)}


def shoppers(running: RunningServer, image: bytes, references: dict[int, np.ndarray]) -> Traffic:
    """Four clients sending ``image``: every answer must be one version's embedding of it, and the first
    client's answers say which version served, in order."""
    def version(result: grpcclient.InferResult) -> int:
        embedding = result.as_numpy(EMBEDDING)[0]
        distances = {version: float(np.abs(embedding - reference).max()) for version, reference in references.items()}
        nearest = min(distances, key=distances.__getitem__)
        if distances[nearest] >= 1e-3:
            raise Unexpected(f"no version's embedding: {distances}")
        return nearest

    return Traffic(running, image, [Asking((EMBEDDING,), version)] * 4)


def test_promote_then_rollback_under_load_switches_once_each_and_drops_nothing(versioned) -> None:
    repository, running = versioned
    image = product_jpeg(4242, size=(320, 240))
    client = grpcclient.InferenceServerClient(running.grpc_address)
    references = reference_embeddings(repository, client, image)
    assert float(np.abs(references[1] - references[2]).max()) > 1e-2  # the versions are told apart
    common = {"url": running.grpc_url, "admin_key": ADMIN_KEY}
    with shoppers(running, image, references) as traffic:
        promoted = promote(repository, 2, **common)
        assert promoted.promoted, promoted
        time.sleep(2)
        rolled_back = rollback(repository, **common)
    assert promoted.promoted and (promoted.version, promoted.previous) == (2, 1), promoted
    assert set(promoted.checks) == {"ready", "outputs", "parity"}, promoted.checks
    assert rolled_back.promoted and (rolled_back.version, rolled_back.previous) == (1, 2), rolled_back
    assert traffic.failures == [] and traffic.requests > 40
    assert switches(traffic.sequence) == [1, 2, 1], switches(traffic.sequence)[:10]
    files = ModelRepository(repository)
    assert files.pinned_version() == 1 and [entry.version for entry in files.history()] == [2, 1]


def test_a_version_that_fails_its_checks_is_refused_and_the_old_one_keeps_serving(versioned) -> None:
    repository, running = versioned
    broken = repository / RESNET_MODEL / "3"
    broken.mkdir()
    shutil.copyfile(repository / RESNET_MODEL / "1" / "model.py", broken / "model.py")
    (broken / MODEL_FILE).write_bytes(b"not an onnx model")
    image = product_jpeg(4343, size=(320, 240))
    client = grpcclient.InferenceServerClient(running.grpc_address)
    references = reference_embeddings(repository, client, image)
    common = {"url": running.grpc_url, "admin_key": ADMIN_KEY}
    with shoppers(running, image, references) as traffic:
        report = promote(repository, 3, **common)
    assert not report.promoted and "version 3" in report.reason, report
    assert traffic.failures == [] and set(traffic.sequence) == {1}, traffic.failures[:3]
    assert ModelRepository(repository).pinned_version() in (None, 1)
    with pytest.raises(PromotionError, match="not built"):
        promote(repository, 9, **common)


def misbehaving_model(kind: str) -> bytes:
    """A model with the served graph's input and outputs that loads and answers, wrongly: NaN probabilities
    (``nan``), probabilities that sum to 2 (``unnormalised``), or embeddings with fresh noise in every run, so
    that the server's answers are not what the file computes in-process (``random``)."""
    rng = np.random.default_rng(0)
    initializers = [numpy_helper.from_array(rng.normal(size=(3, 1000)).astype(np.float32), "to_classes"),
                    numpy_helper.from_array(rng.normal(size=(3, 2048)).astype(np.float32), "to_embedding"),
                    numpy_helper.from_array(np.array({"nan": np.nan, "unnormalised": 2.0, "random": 1.0}[kind],
                                                     dtype=np.float32), "scale")]
    nodes = [helper.make_node("GlobalAveragePool", [PIXELS], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["features"]),
             helper.make_node("MatMul", ["features", "to_classes"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["softmax"], axis=1),
             helper.make_node("Mul", ["softmax", "scale"], [PROBABILITIES]),
             helper.make_node("MatMul", ["features", "to_embedding"], ["raw"])]
    if kind == "random":
        nodes += [helper.make_node("RandomNormalLike", ["raw"], ["noise"]),
                  helper.make_node("Add", ["raw", "noise"], ["noisy"])]
    nodes.append(helper.make_node("LpNormalization", ["noisy" if kind == "random" else "raw"], [EMBEDDING],
                                  axis=1, p=2))
    graph = helper.make_graph(
        nodes, f"misbehaving-{kind}",
        [helper.make_tensor_value_info(PIXELS, TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch", 1000]),
         helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["batch", 2048])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_versions_that_load_but_answer_wrongly_are_refused_by_the_check_each_one_fails(versioned) -> None:
    """Each of check_version's refusals, hit by a model that passes every check before it."""
    repository, running = versioned
    expected = {3: ("nan", "finite", "returns non-finite outputs"),
                4: ("unnormalised", "outputs", "is not a shopvision model: probabilities sum to 1 within 1.0e+00"),
                5: ("random", "parity", "does not serve what its model.onnx computes")}
    for version, (kind, _, _) in expected.items():
        folder = repository / RESNET_MODEL / str(version)
        folder.mkdir()
        shutil.copyfile(repository / RESNET_MODEL / "1" / "model.py", folder / "model.py")
        (folder / MODEL_FILE).write_bytes(misbehaving_model(kind))
    image = product_jpeg(4344, size=(320, 240))
    client = grpcclient.InferenceServerClient(running.grpc_address)
    references = reference_embeddings(repository, client, image)
    common = {"url": running.grpc_url, "admin_key": ADMIN_KEY}
    with shoppers(running, image, references) as traffic:
        reports = {version: promote(repository, version, **common) for version in expected}
    for version, (kind, failed_check, reason) in expected.items():
        report = reports[version]
        assert not report.promoted and reason in (report.reason or ""), (kind, report)
        assert list(report.checks)[-1] == failed_check and report.checks["ready"] == "yes", (kind, report.checks)
    assert traffic.failures == [] and set(traffic.sequence) == {1}, traffic.failures[:3]
    assert ModelRepository(repository).pinned_version() in (None, 1)


def test_the_cli_needs_the_admin_key_and_reports_promotion(versioned) -> None:
    repository, running = versioned
    command = [sys.executable, "-m", "shopvision.cli.main", "model", "promote", "2", "--repository", str(repository),
               "--url", running.http_url]
    without_key = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                                 env={k: v for k, v in os.environ.items() if k != ADMIN_KEY_ENV})
    assert without_key.returncode == 1 and ADMIN_KEY_ENV in without_key.stderr
    wrong_key = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                               env={**os.environ, ADMIN_KEY_ENV: "wrong"})
    assert wrong_key.returncode == 1 and "admin key" in wrong_key.stderr
    done = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, ADMIN_KEY_ENV: ADMIN_KEY})
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)  # the whole of stdout is one document
    assert {key: outcome[key] for key in ("subject", "version", "previous", "promoted", "reason")} == {
        "subject": "resnet50 version", "version": 2, "previous": 1, "promoted": True, "reason": None}
    assert set(outcome["checks"]) == {"ready", "outputs", "parity"}, outcome
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                           env={**os.environ, ADMIN_KEY_ENV: ADMIN_KEY})
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1].startswith("nothing to do"), again.stdout
    assert not again.stdout.lstrip().startswith("{"), again.stdout  # prose only, no JSON mixed in


def test_promoting_new_weights_warns_that_the_serving_categories_head_was_trained_on_the_old_ones(versioned) -> None:
    repository, running = versioned
    vectors, labels = labelled_vectors(2, 12, seed=3)
    head = train_head(vectors, labels, seed=0)
    trained_on = read_weights_provenance(repository / RESNET_MODEL / "1")
    assert trained_on is not None
    version = CategoryHeads(repository).install(head_to_onnx(head).SerializeToString(),
                                                HeadProvenance(categories=head.categories, embeddings=trained_on),
                                                template=TEMPLATE)
    common = {"url": running.grpc_url, "admin_key": ADMIN_KEY}
    assert promote_head(repository, version, **common).promoted
    report = promote(repository, 2, **common)
    assert report.promoted and f"categories head {version} serves" in report.checks["categories"], report.checks
    back = rollback(repository, **common)
    assert back.promoted and "categories" not in back.checks, back.checks
