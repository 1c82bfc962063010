"""The ``cpu`` configuration serves the same answers on each engine it can run.

The rest of the suite serves ``cpu`` on its default engine (ONNX Runtime). Here: OpenVINO, selected by the
config's ``engine`` parameter, so that the alternative does not rot; and the GPU configuration, which the
wheel's tritonserver cannot serve, refused before anything starts.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from shopvision import contract
from shopvision.errors import LocalServerError
from shopvision.repository.configs import ModelConfig, edit_config
from shopvision.samples import product_jpeg
from shopvision.server.tritonserver import LocalTritonServer, ServerOptions
from tests.support.images import PARITY_CASES
from tests.support.servers import RunningServer, start_server
from tests.test_parity import infer_one

SMOKE_CASES = ["jpeg", "rgba-cutout-png", "exif-rotated-jpeg"]
OUTPUTS = [contract.PROBABILITIES, contract.EMBEDDING]


def with_engine(repository: Path, target: Path, engine: str) -> Path:
    """A copy of ``repository`` (hard links: the weights are not copied) whose resnet50 runs on ``engine``."""
    def choose(config: ModelConfig) -> None:
        config.parameters[contract.ENGINE_PARAMETER].string_value = engine

    shutil.copytree(repository, target, symlinks=True, copy_function=os.link)
    # edit_config writes a new file in place of the link, so the original keeps its config.
    edit_config(target / contract.RESNET_MODEL / "configs" / f"{contract.CPU_CONFIG_NAME}.pbtxt", choose)
    return target


@pytest.fixture(scope="module")
def openvino(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("openvino")
    running = start_server(with_engine(built_repository, root / "model_repository", "openvino"),
                           root / "tritonserver.log")
    yield running
    running.server.stop()


def answers(running: RunningServer, data: bytes) -> list[np.ndarray]:
    client = grpcclient.InferenceServerClient(running.grpc_address)
    try:
        return infer_one(client, contract.ENSEMBLE_MODEL, data, OUTPUTS)
    finally:
        client.close()


def served_config(running: RunningServer) -> dict:
    client = grpcclient.InferenceServerClient(running.grpc_address)
    try:
        return client.get_model_config(contract.RESNET_MODEL, as_json=True)["config"]
    finally:
        client.close()


@pytest.mark.integration
@pytest.mark.parametrize("case", SMOKE_CASES)
def test_openvino_gives_onnxruntimes_answers(case: str, openvino: RunningServer, triton: RunningServer) -> None:
    data = PARITY_CASES[case]()
    for served, expected in zip(answers(openvino, data), answers(triton, data), strict=True):
        # Same model file, both in fp32 (INFERENCE_PRECISION_HINT): only the kernels differ.
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-5)


@pytest.mark.integration
def test_openvino_refuses_a_bad_image_alone(openvino: RunningServer) -> None:
    with pytest.raises(InferenceServerException) as refused:
        answers(openvino, b"not an image at all")
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "not a supported image" in refused.value.message()
    probabilities, embedding = answers(openvino, product_jpeg(7))
    assert np.isclose(probabilities.sum(), 1.0, atol=1e-4) and np.isclose(np.linalg.norm(embedding), 1.0, atol=1e-4)


@pytest.mark.integration
def test_the_served_config_names_the_python_backend_and_its_engine(openvino: RunningServer,
                                                                   triton: RunningServer) -> None:
    for running, engine in ((triton, "onnxruntime"), (openvino, "openvino")):
        config = served_config(running)
        assert config["backend"] == "python"
        assert config["parameters"][contract.ENGINE_PARAMETER]["string_value"] == engine


@pytest.mark.integration
def test_resnet50s_instances_share_a_lock_no_other_user_can_open(triton: RunningServer) -> None:
    private = Path(tempfile.gettempdir()) / f"shopvision-{os.getuid()}"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700 and private.stat().st_uid == os.getuid()
    lock = private / f"{contract.RESNET_MODEL}-{triton.server.pid}.cores"
    assert lock.is_file()
    assert not (Path(tempfile.gettempdir()) / f"shopvision-{lock.name}").exists()  # where it used to be


def test_the_gpu_configuration_is_refused_here_before_anything_starts(tmp_path: Path) -> None:
    server = LocalTritonServer(ServerOptions(tmp_path, config_name=None), work_dir=tmp_path)
    with pytest.raises(LocalServerError, match="official container") as refused:
        server.start()
    assert f"--model-config-name={contract.CPU_CONFIG_NAME}" in str(refused.value)
    assert server.pid is None
