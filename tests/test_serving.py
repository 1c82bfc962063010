"""The real server over gRPC and HTTP: batching, classification extension, bad input."""

from __future__ import annotations

import queue

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from shopvision import contract
from shopvision.samples import product_jpeg
from tests.support.images import photo_png
from tests.support.metrics import assert_counter_between, counts_reaching, inference_counts
from tests.support.servers import RunningServer

pytestmark = pytest.mark.integration
PROTOCOLS = {"grpc": grpcclient, "http": httpclient}


def address(triton: RunningServer, protocol: str) -> str:
    return triton.grpc_address if protocol == "grpc" else triton.http_address


def image_batch(protocol: str, images: list[bytes]):
    tensor = PROTOCOLS[protocol].InferInput(contract.IMAGE_INPUT, [len(images), 1], "BYTES")
    tensor.set_data_from_numpy(np.array(images, dtype=object).reshape(-1, 1))
    return tensor


def infer_concurrently(triton: RunningServer, requests: list[list[bytes]]) -> list[object]:
    """Send every request at once over gRPC; each entry is an InferResult or the exception."""
    with grpcclient.InferenceServerClient(triton.grpc_address) as client:
        done: queue.Queue = queue.Queue()
        outputs = [grpcclient.InferRequestedOutput(name) for name in (contract.PROBABILITIES, contract.EMBEDDING)]
        for position, images in enumerate(requests):
            client.async_infer(
                contract.ENSEMBLE_MODEL, [image_batch("grpc", images)], outputs=outputs,
                callback=lambda result, error, position=position: done.put((position, result, error)),
            )
        results: list[object] = [None] * len(requests)
        for _ in requests:
            position, result, error = done.get(timeout=300)
            results[position] = error if error is not None else result
        return results


def test_an_image_alone_and_inside_a_dynamic_batch_gives_the_same_outputs(triton: RunningServer) -> None:
    target = product_jpeg(101)
    others = [product_jpeg(200 + i) for i in range(15)]
    earlier, _ = inference_counts(triton.http_address, contract.RESNET_MODEL)
    alone = infer_concurrently(triton, [[target]])[0]
    inferences_before, executions_before = counts_reaching(triton.http_address, contract.RESNET_MODEL, earlier + 1)
    batched = infer_concurrently(triton, [[target]] + [[image] for image in others])
    inferences_after, executions_after = counts_reaching(triton.http_address, contract.RESNET_MODEL,
                                                         inferences_before + 16)

    assert inferences_after - inferences_before == 16
    assert executions_after - executions_before < 16, "Triton did not batch the concurrent requests"
    # The same counters, as Prometheus sees them on /metrics: the statistics' values, give or take requests that
    # arrive between the reads.
    for name, floor, position in (("nv_inference_count", inferences_after, 0),
                                  ("nv_inference_exec_count", executions_after, 1)):
        assert_counter_between(triton.metrics_url, name, floor,
                               lambda position=position: inference_counts(triton.http_address,
                                                                          contract.RESNET_MODEL)[position],
                               model=contract.RESNET_MODEL)

    for name in (contract.PROBABILITIES, contract.EMBEDDING):
        np.testing.assert_allclose(batched[0].as_numpy(name), alone.as_numpy(name), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_classification_extension_returns_k_labelled_classes(triton: RunningServer, protocol: str) -> None:
    lib = PROTOCOLS[protocol]
    with lib.InferenceServerClient(address(triton, protocol)) as client:
        images = [product_jpeg(1), photo_png()]
        result = client.infer(contract.ENSEMBLE_MODEL, [image_batch(protocol, images)],
                              outputs=[lib.InferRequestedOutput(contract.PROBABILITIES, class_count=3)])
        classes = result.as_numpy(contract.PROBABILITIES)
        assert classes.shape == (2, 3)
        labels = (triton.repository / contract.ENSEMBLE_MODEL / contract.LABELS_FILE).read_text().splitlines()
        for row in classes:
            scores = []
            for entry in row:
                score, index, label = entry.decode().split(":", 2)
                assert label == labels[int(index)]
                scores.append(float(score))
            assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_standard_client_asking_every_output_for_class_count_works(triton: RunningServer, protocol: str) -> None:
    """What Triton's image_client-style tools do: a batch of files as BYTES, class_count on all outputs."""
    lib = PROTOCOLS[protocol]
    with lib.InferenceServerClient(address(triton, protocol)) as client:
        metadata = client.get_model_metadata(contract.ENSEMBLE_MODEL)
        outputs = metadata.outputs if protocol == "grpc" else metadata["outputs"]
        names = [o.name if protocol == "grpc" else o["name"] for o in outputs]
        images = [product_jpeg(i) for i in range(4)]
        result = client.infer(contract.ENSEMBLE_MODEL, [image_batch(protocol, images)],
                              outputs=[lib.InferRequestedOutput(name, class_count=2) for name in names])
        for name in names:
            assert result.as_numpy(name).shape == (4, 2)
        assert b":" in result.as_numpy(contract.EMBEDDING)[0, 0]  # "score:index" without a label


def test_a_corrupt_image_fails_alone_among_concurrent_good_ones(triton: RunningServer) -> None:
    good = [[product_jpeg(300 + i)] for i in range(7)]
    truncated = product_jpeg(400)[:2000]
    results = infer_concurrently(triton, good[:3] + [[truncated]] + good[3:])
    failure = results[3]
    assert isinstance(failure, InferenceServerException)
    assert failure.status() == "StatusCode.INVALID_ARGUMENT"
    assert "cannot decode JPEG" in failure.message() and "truncated" in failure.message()
    for result in results[:3] + results[4:]:
        assert not isinstance(result, Exception)
        assert result.as_numpy(contract.EMBEDDING).shape == (1, 2048)
    assert grpcclient.InferenceServerClient(triton.grpc_address).is_server_ready()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_bytes_get_a_clear_invalid_argument_on_both_protocols(triton: RunningServer, protocol: str) -> None:
    lib = PROTOCOLS[protocol]
    with lib.InferenceServerClient(address(triton, protocol)) as client:
        with pytest.raises(InferenceServerException) as raised:
            client.infer(contract.ENSEMBLE_MODEL, [image_batch(protocol, [b"<html>not an image</html>"])])
        assert raised.value.status() in ("StatusCode.INVALID_ARGUMENT", "400")
        assert "not a supported image" in raised.value.message()
        assert client.is_server_ready()


def test_synthetic_weights_are_announced_in_config_and_log(triton: RunningServer) -> None:
    with httpclient.InferenceServerClient(triton.http_address) as client:
        parameters = client.get_model_config(contract.RESNET_MODEL)["parameters"]
        assert parameters["weights_synthetic"]["string_value"] == "true"
        assert parameters["weights_source"]["string_value"] == "synthetic"
        assert "SYNTHETIC WEIGHTS" in triton.log_text()
