"""Served answers equal an independent reference pipeline, for every kind of image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image

from shopvision import contract
from shopvision.backend.preprocessing import Preprocessor
from tests.support.images import PARITY_CASES, photo_jpeg
from tests.support.reference import reference_pixels
from tests.support.servers import RunningServer

pytestmark = pytest.mark.integration

# Largest |difference| of normalised pixels allowed against the reference, per case. Every format and colour mode
# is decoded, converted and resized exactly as the reference does (docs/models.md), so they match to float
# rounding (measured: 0.0 for all but one). The 12x6000 JPEG is the exception, and by one 8-bit level at most
# (measured: mean 0.00098, max 0.0175): its 224-pixel crop comes from a 12-pixel-wide strip.
FLOAT_ROUNDING = 1e-5
ONE_LEVEL = 1 / (255 * min(contract.IMAGENET_STD)) + 1e-6
PIXEL_TOLERANCE = {"12x6000-jpeg": ONE_LEVEL}
LARGE_PHOTOS = {"jpeg-1600x1200": (1600, 1200), "jpeg-4000x3000": (4000, 3000)}


@pytest.fixture(scope="module")
def cases() -> dict[str, bytes]:
    encoded = {name: make() for name, make in PARITY_CASES.items()}
    encoded.update({name: photo_jpeg(20 + i, size) for i, (name, size) in enumerate(LARGE_PHOTOS.items())})
    return encoded


@pytest.fixture(scope="module")
def reference(cases: dict[str, bytes], resnet_onnx: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (pixels, probabilities, embedding) from the reference recipe + onnxruntime."""
    session = ort.InferenceSession(str(resnet_onnx), providers=["CPUExecutionProvider"])
    out = {}
    for name, data in cases.items():
        pixels = reference_pixels(data)
        probabilities, embedding = session.run(None, {contract.PIXELS: pixels[None]})
        out[name] = (pixels, probabilities[0], embedding[0])
    return out


def infer_one(client: grpcclient.InferenceServerClient, model: str, data: bytes,
              outputs: list[str]) -> list[np.ndarray]:
    tensor = grpcclient.InferInput(contract.IMAGE_INPUT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[data]], dtype=object))
    result = client.infer(model, [tensor], outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
    return [result.as_numpy(o)[0] for o in outputs]


@pytest.fixture(scope="module")
def grpc_client(triton: RunningServer):
    client = grpcclient.InferenceServerClient(triton.grpc_address)
    yield client
    client.close()


@pytest.mark.parametrize("name", [*PARITY_CASES, *LARGE_PHOTOS])
def test_preprocess_model_output_matches_reference(name, cases, reference, grpc_client) -> None:
    (served,) = infer_one(grpc_client, contract.PREPROCESS_MODEL, cases[name], [contract.PIXELS])
    expected = reference[name][0]
    assert served.shape == expected.shape == (3, 224, 224)
    assert float(np.abs(served - expected).max()) <= PIXEL_TOLERANCE.get(name, FLOAT_ROUNDING)


def median_distance_between_different_images(reference) -> float:
    embeddings = np.stack([entry[2] for entry in reference.values()])
    distances = np.linalg.norm(embeddings[:, None] - embeddings[None], axis=-1)
    return float(np.median(distances[np.triu_indices(len(embeddings), k=1)]))


@pytest.mark.parametrize("name", [*PARITY_CASES, *LARGE_PHOTOS])
def test_ensemble_embedding_and_top5_match_reference(name, cases, reference, grpc_client) -> None:
    probabilities, embedding = infer_one(
        grpc_client, contract.ENSEMBLE_MODEL, cases[name], [contract.PROBABILITIES, contract.EMBEDDING]
    )
    _, expected_probabilities, expected_embedding = reference[name]
    # Synthetic weights put every image at cosine ~0.999 to every other, so the yardstick is
    # the spread between different images, not an absolute cosine.
    yardstick = median_distance_between_different_images(reference)
    distance = float(np.linalg.norm(embedding - expected_embedding))
    assert distance < 0.05 * yardstick
    assert list(np.argsort(-probabilities)[:5]) == list(np.argsort(-expected_probabilities)[:5])
    assert np.isclose(np.linalg.norm(embedding), 1.0, atol=1e-4)
    assert np.isclose(probabilities.sum(), 1.0, atol=1e-4)


def test_exif_orientation_is_applied(cases) -> None:
    """Orientation 6 means "rotate 90 degrees clockwise to view": the crop is that of the photo so turned, and
    neither that of the stored pixels nor of the photo turned the other way."""
    data = cases["exif-rotated-jpeg"]
    stored = Image.open(io.BytesIO(data)).convert("RGB")

    def crop_of(image: Image.Image) -> np.ndarray:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")  # lossless, and without the tag
        return Preprocessor().crop(buffer.getvalue()).astype(int)

    crop_with_tag = Preprocessor().crop(data).astype(int)
    clockwise = crop_of(stored.transpose(Image.Transpose.ROTATE_270))
    assert np.abs(crop_with_tag - clockwise).max() == 0
    for wrong in (stored, stored.transpose(Image.Transpose.ROTATE_90), stored.transpose(Image.Transpose.ROTATE_180)):
        assert np.abs(crop_with_tag - crop_of(wrong)).mean() > 5
