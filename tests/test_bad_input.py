"""A public upload endpoint gets every kind of file: each bad one fails alone and clearly."""

from __future__ import annotations

import io
import struct
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

import shopvision
from shopvision import contract
from shopvision.backend.preprocessing import DecodeLimits, ImageRejected, Preprocessor
from shopvision.samples import encode, product_image, product_jpeg
from tests.support.images import cutout_rgba_png, sixteen_bit_png
from tests.support.servers import RunningServer

PROTOCOLS = {"grpc": grpcclient, "http": httpclient}
INVALID = {"grpc": "StatusCode.INVALID_ARGUMENT", "http": "400"}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels: a decompression bomb's calling card."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def corrupt_png() -> bytes:
    data = bytearray(encode(product_image(3, size=(200, 150)), "PNG"))
    start = data.index(b"IDAT") + 4
    data[start + 10 : start + 400] = bytes(range(256)) + bytes(134)
    return bytes(data)


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.jpg", b"not really")
    return buffer.getvalue()


# name -> (bytes, words the error message must contain)
BAD_INPUTS = {
    "empty": (b"", "0 bytes"),
    "random-bytes": (np.random.default_rng(0).bytes(4096), "not a supported image"),
    "text": (b"just some text, not a photo\n" * 20, "not a supported image"),
    "html": (b"<!doctype html><html><body><img src=x></body></html>", "not a supported image"),
    "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>', "not a supported image"),
    "pdf": (b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF", "not a supported image"),
    "zip": (zip_bytes(), "not a supported image"),
    "truncated-jpeg": (product_jpeg(5)[:3000], "truncated"),
    "corrupt-png": (corrupt_png(), "cannot decode PNG"),
    "decompression-bomb": (png_declaring(100_000, 100_000), f"over the limit of {contract.MAX_IMAGE_PIXELS} pixels"),
    "over-byte-limit": (b"\xff\xd8\xff\xe0" + bytes(contract.MAX_IMAGE_BYTES + 1024),
                        f"over the limit of {contract.MAX_IMAGE_BYTES} bytes"),
}


def send_all(triton: RunningServer, protocol: str, requests: list[bytes]) -> list[object]:
    """One request per image, all at once; each entry is an InferResult or the exception."""
    lib = PROTOCOLS[protocol]
    address = triton.grpc_address if protocol == "grpc" else triton.http_address

    def send(data: bytes) -> object:
        client = lib.InferenceServerClient(address)
        tensor = lib.InferInput(contract.IMAGE_INPUT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[data]], dtype=object))
        try:
            return client.infer(contract.ENSEMBLE_MODEL, [tensor])
        except InferenceServerException as error:
            return error
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(send, requests))


GOOD_IMAGES = [product_jpeg(600 + i, size=(320, 240)) for i in range(4)]


@pytest.fixture(scope="module")
def good_embeddings(triton: RunningServer) -> np.ndarray:
    """The good images' embeddings, each asked for alone (the SDK, one request an image)."""
    with shopvision.Client(triton.grpc_url, batch_size=1) as client:
        return client.embed(GOOD_IMAGES)


@pytest.mark.integration
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_fails_alone_with_a_clear_invalid_argument(triton: RunningServer, protocol: str, case: str,
                                                             good_embeddings: np.ndarray) -> None:
    bad, expected_words = BAD_INPUTS[case]
    good = GOOD_IMAGES
    results = send_all(triton, protocol, good[:2] + [bad] + good[2:])
    failure = results[2]
    assert isinstance(failure, InferenceServerException), f"{case} was accepted"
    assert failure.status() == INVALID[protocol]
    assert expected_words in failure.message(), failure.message()
    for result, expected in zip(results[:2] + results[3:], good_embeddings, strict=True):
        assert not isinstance(result, Exception), result
        np.testing.assert_allclose(result.as_numpy(contract.EMBEDDING)[0], expected, atol=1e-4)  # their own answer
    assert grpcclient.InferenceServerClient(triton.grpc_address).is_server_ready()


@pytest.mark.integration
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_wrong_dtype_or_shape_sent_straight_to_the_models_is_refused(triton: RunningServer, protocol: str) -> None:
    lib = PROTOCOLS[protocol]
    with lib.InferenceServerClient(triton.grpc_address if protocol == "grpc" else triton.http_address) as client:
        floats = lib.InferInput(contract.IMAGE_INPUT, [1, 1], "FP32")
        floats.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
        with pytest.raises(InferenceServerException) as wrong_dtype:
            client.infer(contract.ENSEMBLE_MODEL, [floats])
        assert "FP32" in wrong_dtype.value.message() and "BYTES" in wrong_dtype.value.message()

        pixels = lib.InferInput(contract.PIXELS, [1, 3, 100, 100], "FP32")
        pixels.set_data_from_numpy(np.zeros((1, 3, 100, 100), dtype=np.float32))
        with pytest.raises(InferenceServerException) as wrong_shape:
            client.infer(contract.RESNET_MODEL, [pixels])
        assert "shape" in wrong_shape.value.message()
        assert client.is_server_ready()


def test_limits_are_enforced_before_decoding() -> None:
    small = Preprocessor(limits=DecodeLimits(max_bytes=10_000, max_pixels=100 * 100))
    with pytest.raises(ImageRejected, match="over the limit of 10000 bytes"):
        small.crop(product_jpeg(1, size=(640, 480)))
    with pytest.raises(ImageRejected, match="over the limit of 10000 pixels"):
        small.crop(encode(Image.new("RGB", (101, 100)), "PNG"))


def test_the_pixel_limit_is_the_contracts_and_read_from_the_header() -> None:
    width, height = 6000, contract.MAX_IMAGE_PIXELS // 6000
    preprocessor = Preprocessor()
    with pytest.raises(ImageRejected, match=f"declares 6000x{height + 1} = .* over the limit of "
                                            f"{contract.MAX_IMAGE_PIXELS} pixels"):
        preprocessor.crop(png_declaring(width, height + 1))
    # At the limit the header passes, and only then is decoding tried (this PNG has no pixel data to decode).
    with pytest.raises(ImageRejected, match="cannot decode"):
        preprocessor.crop(png_declaring(width, height))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparent_images_are_composited_in_bands_exactly_as_in_one_piece(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shopvision.backend import preprocessing

    rgba = Image.open(io.BytesIO(cutout_rgba_png()))
    source = {"RGBA": rgba, "LA": rgba.convert("LA"), "P": rgba.convert("RGB").quantize(colors=64)}[mode]
    if mode == "P":
        source.info["transparency"] = source.getpixel((0, 0))
    whole = Image.alpha_composite(Image.new("RGBA", source.size, (255, 255, 255, 255)), source.convert("RGBA"))
    monkeypatch.setattr(preprocessing, "BAND_PIXELS", source.width * 50)  # 8 bands of 50 rows, the last short
    banded = preprocessing._to_rgb(source)
    assert banded.mode == "RGB" and banded.size == source.size
    assert np.array_equal(np.asarray(banded), np.asarray(whole.convert("RGB")))
    assert np.asarray(banded).min() < 250 and (np.asarray(banded) == 255).all(axis=2).any()  # object and white


def test_sixteen_bit_images_are_rescaled_in_bands_exactly_as_in_one_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    from shopvision.backend import preprocessing

    wide = Image.open(io.BytesIO(sixteen_bit_png()))
    assert wide.mode in {"I;16", "I"}
    whole = np.clip(np.rint(np.asarray(wide, dtype=np.float32) / 257.0), 0, 255).astype(np.uint8)
    monkeypatch.setattr(preprocessing, "BAND_PIXELS", wide.width * 7)  # 35 bands of 7 rows, the last short
    banded = preprocessing._to_rgb(wide)
    assert np.array_equal(np.asarray(banded), np.repeat(whole[:, :, None], 3, axis=2))
    assert len(np.unique(whole)) > 50


def test_the_pixel_limit_leaves_pillows_own_bomb_check_alone_for_other_code() -> None:
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # Pillow's default, after importing shopvision
    permissive = Preprocessor(limits=DecodeLimits(max_pixels=10**12))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's warning between its two thresholds must not escape
        with pytest.raises(ImageRejected, match="cannot decode"):
            permissive.crop(png_declaring(10_000, 10_000))  # past Pillow's warning threshold, tiny IDAT
    with pytest.raises(ImageRejected, match="refused before decoding.*decompression bomb"):
        permissive.crop(png_declaring(20_000, 20_000))  # past twice Pillow's threshold: it refuses


def test_extreme_aspect_ratios_never_build_the_full_resized_image(monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[tuple[int, int]] = []
    original = Image.Image.resize

    def recording_resize(self, size, *args, **kwargs):
        sizes.append(tuple(size))
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", recording_resize)
    crop = Preprocessor().crop(encode(product_image(1, size=(10000, 10)), "PNG"))
    assert crop.shape == (224, 224, 3)
    assert sizes == [(224, 224)]  # resized straight into the crop, not to 256000 x 256 first
