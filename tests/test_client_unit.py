"""Client logic against a scripted stand-in transport: splitting, order, retries, errors."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image
from tritonclient.utils import InferenceServerException

import shopvision
from shopvision import _transport, aio, contract
from shopvision._protocol import Endpoint, RetryPolicy, chunks, decode_predictions
from shopvision._transport import InferenceOutput, translate

FAST_RETRY = RetryPolicy(attempts=4, initial_backoff_s=0.001, max_backoff_s=0.002)
GOOD_METADATA = {
    "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1, 1]}],
    "outputs": [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]},
        {"name": "embedding", "datatype": "FP32", "shape": [-1, 2048]},
    ],
}


class StubTransport:
    """Answers like the server would: each image's embedding encodes its first byte."""

    def __init__(self, *, max_batch_size: int = 4, metadata: dict = GOOD_METADATA, synthetic: bool = False) -> None:
        self.max_batch_size = max_batch_size
        self.metadata = metadata
        self.synthetic = synthetic
        self.batches: list[list[bytes]] = []
        self.in_flight = 0
        self.max_seen_in_flight = 0
        self.failures: list[Exception] = []
        """Raised by the next infer calls, in order, before answering normally."""

    async def infer(self, model: str, images: list[bytes], *, top_k: int, categories: int = 0) -> InferenceOutput:
        self.in_flight += 1
        self.max_seen_in_flight = max(self.max_seen_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.002)
            if self.failures:
                raise self.failures.pop(0)
            bad = [data for data in images if data.startswith(b"BAD")]
            if bad:
                raise shopvision.InvalidImageError("not a supported image")
            self.batches.append(list(images))
            embeddings = np.zeros((len(images), 2048), dtype=np.float32)
            embeddings[:, 0] = [data[0] for data in images]
            classes = np.array([[f"0.9:{data[0]}:label{data[0]}".encode()] * top_k for data in images], dtype=object)
            return InferenceOutput(classes=classes if top_k else None, embeddings=embeddings)
        finally:
            self.in_flight -= 1

    async def is_model_ready(self, model: str) -> bool:
        return True

    async def model_metadata(self, model: str) -> dict:
        return self.metadata

    async def model_config(self, model: str) -> dict:
        if model == contract.RESNET_MODEL:
            return {"parameters": {"weights_source": {"string_value": "synthetic" if self.synthetic else "zoo"},
                                   "weights_synthetic": {"string_value": str(self.synthetic).lower()}}}
        return {"max_batch_size": self.max_batch_size}

    async def server_metadata(self) -> dict:
        return {"version": "2.51.0"}

    async def close(self) -> None:
        pass


@pytest.fixture()
def stub(monkeypatch: pytest.MonkeyPatch) -> StubTransport:
    transport = StubTransport()
    monkeypatch.setattr(aio, "AsyncTransport", lambda *args, **kwargs: transport)
    return transport


def images(count: int) -> list[bytes]:
    return [bytes([i % 256]) + b"jpeg" for i in range(count)]


def test_large_inputs_are_split_by_max_batch_size_and_returned_in_order(stub: StubTransport) -> None:
    with shopvision.Client("grpc://stub:8001", max_in_flight=3) as client:
        vectors = client.embed(images(10))
    assert sorted(len(batch) for batch in stub.batches) == [2, 4, 4]
    assert list(vectors[:, 0]) == list(range(10))
    assert stub.max_seen_in_flight <= 3


def test_in_flight_requests_are_bounded(stub: StubTransport) -> None:
    stub.max_batch_size = 1
    with shopvision.Client("grpc://stub:8001", max_in_flight=2) as client:
        client.embed(images(20))
    assert stub.max_seen_in_flight == 2


def test_progress_reports_every_request(stub: StubTransport) -> None:
    seen: list[tuple[int, int]] = []
    with shopvision.Client("grpc://stub:8001", max_in_flight=1) as client:
        client.classify(images(9), top_k=1, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 9), (8, 9), (9, 9)]


def test_unavailable_is_retried_with_backoff(stub: StubTransport) -> None:
    stub.failures = [shopvision.ServerUnavailableError("restarting")] * 3
    with shopvision.Client("grpc://stub:8001", retry=FAST_RETRY) as client:
        assert client.embed(images(2)).shape == (2, 2048)


def test_unavailable_gives_up_after_the_last_attempt(stub: StubTransport) -> None:
    stub.failures = [shopvision.ServerUnavailableError("down")] * 4
    with shopvision.Client("grpc://stub:8001", retry=FAST_RETRY) as client, \
            pytest.raises(shopvision.ServerUnavailableError):
        client.embed(images(2))


@pytest.mark.parametrize("error", [shopvision.RequestTimeoutError("slow"), shopvision.InvalidImageError("bad")])
def test_timeouts_and_bad_input_are_never_retried(stub: StubTransport, error: Exception) -> None:
    stub.failures = [error]
    calls_before = len(stub.batches)
    with shopvision.Client("grpc://stub:8001", retry=FAST_RETRY) as client, pytest.raises(type(error)):
        client.embed(images(1))
    assert len(stub.batches) == calls_before


def test_bad_images_are_reported_per_image_and_good_ones_still_answered(stub: StubTransport) -> None:
    batch = images(6)
    batch[2] = b"BAD bytes"
    with shopvision.Client("grpc://stub:8001") as client:
        results = client.analyze(batch + ["/no/such/file.jpg"], top_k=2, on_error="report")
        with pytest.raises(shopvision.InvalidImageError) as raised:
            client.embed(batch)
    assert [result.ok for result in results] == [True, True, False, True, True, True, False]
    assert results[2].error.index == 2 and "not a supported image" in results[2].error.reason
    assert "cannot read /no/such/file.jpg" in results[6].error.reason
    assert results[3].predictions[0].index == 3
    assert raised.value.index == 2


def test_inputs_of_every_kind_are_encoded(stub: StubTransport, tmp_path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(b"\x07jpeg")
    pil = Image.new("RGB", (2, 2))
    with shopvision.Client("grpc://stub:8001") as client:
        vectors = client.embed([path, str(path), b"\x05raw", io.BytesIO(b"\x06file"), pil])
    assert list(vectors[:4, 0]) == [7, 7, 5, 6]
    sent = [data for batch in stub.batches for data in batch]
    assert sum(data.startswith(b"\x89PNG") for data in sent) == 1  # PIL images travel as lossless PNG


def test_model_mismatch_fails_early(stub: StubTransport) -> None:
    stub.metadata = {"inputs": [{"name": "INPUT0", "datatype": "FP32"}], "outputs": []}
    with shopvision.Client("grpc://stub:8001") as client, pytest.raises(shopvision.ModelMismatchError, match="image"):
        client.classify(images(1))
    assert stub.batches == []


def test_synthetic_weights_warn_and_are_exposed(stub: StubTransport) -> None:
    stub.synthetic = True
    with shopvision.Client("grpc://stub:8001") as client, pytest.warns(shopvision.SyntheticWeightsWarning):
        provenance = client.provenance()
    assert provenance.synthetic and provenance.source == "synthetic"


def test_a_closed_client_refuses_work(stub: StubTransport) -> None:
    client = shopvision.Client("grpc://stub:8001")
    client.close()
    client.close()  # idempotent
    with pytest.raises(shopvision.ClientClosedError):
        client.embed(images(1))


def test_async_client_has_the_same_methods(stub: StubTransport) -> None:
    public = lambda cls: {n for n in dir(cls) if not n.startswith("_")}  # noqa: E731
    assert public(shopvision.Client) == public(shopvision.AsyncClient)

    async def run() -> np.ndarray:
        async with shopvision.AsyncClient("http://stub:8000") as client:
            return await client.embed(images(5))

    assert asyncio.run(run()).shape == (5, 2048)


@pytest.mark.parametrize(
    ("url", "protocol", "address"),
    [
        ("grpc://triton:8001", "grpc", "triton:8001"),
        ("http://triton", "http", "triton:8000"),
        ("https://triton:443", "http", "triton:443"),
        ("triton:8001", "grpc", "triton:8001"),
        ("localhost:8000", "http", "localhost:8000"),
    ],
)
def test_url_picks_the_transport(url: str, protocol: str, address: str) -> None:
    endpoint = Endpoint.parse(url)
    assert (endpoint.protocol, endpoint.address) == (protocol, address)


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(ValueError, match="ftp"):
        Endpoint.parse("ftp://triton:21")


@pytest.mark.parametrize(
    ("status", "message", "expected"),
    [
        ("StatusCode.INVALID_ARGUMENT", "invalid image: cannot decode JPEG image", shopvision.InvalidImageError),
        ("400", "in ensemble 'shopvision', invalid image 2 of 3: empty image", shopvision.InvalidImageError),
        # Triton itself refusing the request's size or shape: no image is to blame.
        ("StatusCode.INVALID_ARGUMENT", "inference request batch-size must be <= 32 for 'shopvision'",
         shopvision.RequestRejectedError),
        ("400", "unexpected shape for input 'image' for model 'shopvision'", shopvision.RequestRejectedError),
        ("StatusCode.RESOURCE_EXHAUSTED", "Received message larger than max", shopvision.RequestRejectedError),
        ("403", "This API is restricted, expecting header 'shopvision-admin-key'", shopvision.PermissionDeniedError),
        ("StatusCode.UNAVAILABLE", "This API is restricted", shopvision.PermissionDeniedError),
        ("StatusCode.UNAVAILABLE", "explicit model load / unload is not allowed if polling is enabled",
         shopvision.RequestRejectedError),
        ("StatusCode.UNAVAILABLE", "boom", shopvision.ServerUnavailableError),
        ("StatusCode.CANCELLED", "boom", shopvision.ServerUnavailableError),
        ("503", "boom", shopvision.ServerUnavailableError),
        ("StatusCode.DEADLINE_EXCEEDED", "boom", shopvision.RequestTimeoutError),
        ("StatusCode.NOT_FOUND", "boom", shopvision.ModelMismatchError),
        ("StatusCode.INTERNAL", "boom", shopvision.ServerError),
    ],
)
def test_tritonclient_errors_are_translated(status: str, message: str, expected: type) -> None:
    translated = translate(InferenceServerException(message, status=status), context="infer")
    assert type(translated) is expected, translated


def test_a_model_being_unloaded_is_transient_not_a_mismatch() -> None:
    error = InferenceServerException("Request for unknown model: 'shopvision' has no available versions",
                                     status="StatusCode.NOT_FOUND")
    assert isinstance(translate(error, context="infer"), shopvision.ServerUnavailableError)


@pytest.mark.parametrize(
    ("error", "expected"),
    [(ConnectionRefusedError(111, "refused"), shopvision.ServerUnavailableError),
     (TimeoutError(), shopvision.RequestTimeoutError)],
)
def test_os_errors_are_translated(error: Exception, expected: type) -> None:
    assert isinstance(translate(error, context="infer"), expected)


def test_transport_call_chains_the_original_error() -> None:
    async def failing(*args, **kwargs):
        raise InferenceServerException("refused", status="StatusCode.UNAVAILABLE")

    transport = _transport.AsyncTransport.__new__(_transport.AsyncTransport)
    transport.endpoint = Endpoint.parse("grpc://x:1")
    transport._translatable = _transport._transient_types()
    with pytest.raises(shopvision.ServerUnavailableError) as raised:
        asyncio.run(transport._call("infer", failing))
    assert isinstance(raised.value.__cause__, InferenceServerException)


def test_classification_strings_are_decoded() -> None:
    (predictions,) = decode_predictions(np.array([[b"0.5:504:coffee mug", b"0.25:968:cup"]], dtype=object))
    assert [(p.label, p.index, p.score) for p in predictions] == [("coffee mug", 504, 0.5), ("cup", 968, 0.25)]


def test_chunks_cover_the_input_exactly() -> None:
    assert chunks(10, 4) == [range(0, 4), range(4, 8), range(8, 10)]
    assert chunks(0, 4) == []


def test_importing_the_client_pulls_in_only_tritonclient_numpy_and_pillow() -> None:
    import subprocess
    import sys

    code = ("import sys, shopvision; shopvision.Client; shopvision.AsyncClient; "
            "heavy = ('onnx', 'onnxruntime', 'faiss', 'pymilvus', 'pytriton', 'torch'); "
            "print(','.join(m for m in heavy if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == ""
