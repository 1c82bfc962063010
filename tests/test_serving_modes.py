"""Every configuration the repository ships serves the same answers.

The rest of the suite runs on the configuration a CPU node gets (``cpu``: Triton's native ONNX
Runtime backend). Here: the default ``config.pbtxt`` (the GPU configuration, which loads on a
CPU-only host too) and the ``python_ort`` stand-in for tritonservers without that backend, so
that neither rots.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from shopvision import contract
from shopvision.samples import product_jpeg
from tests.conftest import RunningServer, start_server
from tests.images import PARITY_CASES
from tests.test_parity import infer_one

pytestmark = pytest.mark.integration

SMOKE_CASES = ["jpeg", "rgba-cutout-png", "exif-rotated-jpeg"]
OUTPUTS = [contract.PROBABILITIES, contract.EMBEDDING]


@pytest.fixture(scope="module", params=[contract.STAND_IN_CONFIG_NAME, None], ids=["python_ort", "default_config"])
def other_mode(request: pytest.FixtureRequest, built_repository: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("logs") / f"tritonserver-{request.param or 'default'}.log"
    running = start_server(built_repository, log, config_name=request.param)
    yield running
    running.server.stop()


def answers(running: RunningServer, data: bytes) -> list[np.ndarray]:
    client = grpcclient.InferenceServerClient(running.grpc_address)
    try:
        return infer_one(client, contract.ENSEMBLE_MODEL, data, OUTPUTS)
    finally:
        client.close()


@pytest.mark.parametrize("case", SMOKE_CASES)
def test_each_mode_gives_the_cpu_configurations_answers(case: str, other_mode: RunningServer,
                                                        triton: RunningServer) -> None:
    data = PARITY_CASES[case]()
    for served, expected in zip(answers(other_mode, data), answers(triton, data), strict=True):
        # Same model file, same ONNX Runtime kernels; only the threading differs.
        np.testing.assert_allclose(served, expected, rtol=0, atol=1e-5)


def test_each_mode_refuses_a_bad_image_alone(other_mode: RunningServer) -> None:
    with pytest.raises(InferenceServerException) as refused:
        answers(other_mode, b"not an image at all")
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "not a supported image" in refused.value.message()
    probabilities, embedding = answers(other_mode, product_jpeg(7))
    assert np.isclose(probabilities.sum(), 1.0, atol=1e-4) and np.isclose(np.linalg.norm(embedding), 1.0, atol=1e-4)


def test_the_resnet50_backend_is_the_one_the_mode_names(other_mode: RunningServer, triton: RunningServer) -> None:
    def backend(running: RunningServer) -> str:
        client = grpcclient.InferenceServerClient(running.grpc_address)
        try:
            return client.get_model_config(contract.RESNET_MODEL, as_json=True)["config"]["backend"]
        finally:
            client.close()

    assert backend(triton) == "onnxruntime"
    expected = "python" if other_mode.server.options.config_name == contract.STAND_IN_CONFIG_NAME else "onnxruntime"
    assert backend(other_mode) == expected


@pytest.mark.parametrize("other_mode", [contract.STAND_IN_CONFIG_NAME], indirect=True)
def test_the_stand_ins_instances_share_a_lock_no_other_user_can_open(other_mode: RunningServer) -> None:
    private = Path(tempfile.gettempdir()) / f"shopvision-{os.getuid()}"
    assert stat.S_IMODE(private.stat().st_mode) == 0o700 and private.stat().st_uid == os.getuid()
    lock = private / f"{contract.RESNET_MODEL}-{other_mode.server.pid}.cores"
    assert lock.is_file()
    assert not (Path(tempfile.gettempdir()) / f"shopvision-{lock.name}").exists()  # where it used to be
