"""A stand-in for Triton that speaks KServe v2 over real HTTP, for the search service's offline tests.

It answers what the SDK asks (health, metadata, config, inference) from a few lines of Python: a JPEG or PNG gets
a deterministic unit embedding and ImageNet-style classes; anything else the ensemble's "invalid image" error, as
preprocess words it. No model runs, so `make test-fast` covers the service's keys, limits and problem mapping in
seconds on a machine without tritonserver. What the real server does is the integration tests' business.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from shopvision.contract import (
    EMBEDDING,
    ENSEMBLE_MODEL,
    IMAGE_INPUT,
    NUM_CLASSES,
    PROBABILITIES,
    PROVENANCE_PARAMETER_PREFIX,
    REJECTED_IMAGE,
)

EMBEDDING_DIM = 16
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG")
SLOW_MARKER = b"stub:slow"
"""An image whose bytes end with this is answered after ``StubTriton.slow_s``: a request held in flight."""


def embedding_of(image: bytes) -> list[float]:
    """A unit vector from the image's bytes: equal bytes, equal vectors; others far apart."""
    vector = np.frombuffer(hashlib.sha512(image).digest()[: EMBEDDING_DIM * 4], dtype=np.uint32).astype(np.float64)
    vector -= vector.mean()
    return list((vector / np.linalg.norm(vector)).astype(np.float32).tolist())


def split_bytes_tensor(data: bytes) -> list[bytes]:
    """Triton's serialised BYTES tensor: a 4-byte little-endian length before each element."""
    elements, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        elements.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    return elements


class StubTriton:
    """The stub on 127.0.0.1 in a thread; ``url`` is what the service's SHOPVISION_URL takes."""

    def __init__(self, *, slow_s: float = 2.0) -> None:
        self.slow_s = slow_s
        self.inferences = 0
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self._answer(*stub.get(self.path))

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                header_length = int(self.headers.get("Inference-Header-Content-Length", len(body)))
                self._answer(*stub.infer(self.path, body[:header_length], body[header_length:]))

            def _answer(self, status: int, payload: object) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="stub-triton", daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StubTriton:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def get(self, path: str) -> tuple[int, object]:
        if re.fullmatch(r"/v2/health/(live|ready)|/v2/models/[^/]+(/versions/\d+)?/ready", path):
            return 200, {}
        if path == "/v2":
            return 200, {"name": "stub-triton", "version": "2.51.0", "extensions": ["classification"]}
        if path == f"/v2/models/{ENSEMBLE_MODEL}":
            return 200, {"name": ENSEMBLE_MODEL, "versions": ["1"], "platform": "ensemble",
                         "inputs": [{"name": IMAGE_INPUT, "datatype": "BYTES", "shape": [-1, 1]}],
                         "outputs": [{"name": PROBABILITIES, "datatype": "FP32", "shape": [-1, NUM_CLASSES]},
                                     {"name": EMBEDDING, "datatype": "FP32", "shape": [-1, EMBEDDING_DIM]}]}
        if path == f"/v2/models/{ENSEMBLE_MODEL}/config":
            return 200, {"name": ENSEMBLE_MODEL, "max_batch_size": 32}
        if path.endswith("/config"):  # resnet50's: the weights' provenance
            parameters = {"source": "stub", "synthetic": "false", "backbone": "stub", "model_sha256": "0" * 64}
            return 200, {"name": path.split("/")[3], "max_batch_size": 32, "parameters": {
                PROVENANCE_PARAMETER_PREFIX + key: {"string_value": value} for key, value in parameters.items()}}
        return 404, {"error": f"Request for unknown model: '{path}' is not found"}

    def infer(self, path: str, header: bytes, binary: bytes) -> tuple[int, object]:
        if path != f"/v2/models/{ENSEMBLE_MODEL}/infer":
            return 404, {"error": f"Request for unknown model: '{path}' is not found"}
        request = json.loads(header)
        (tensor,) = request["inputs"]
        images = split_bytes_tensor(binary) if "binary_data_size" in tensor.get("parameters", {}) else [
            item.encode() for item in tensor["data"]]
        for position, image in enumerate(images):
            if not image.startswith(IMAGE_MAGIC):
                return 400, {"error": f"in ensemble '{ENSEMBLE_MODEL}', {REJECTED_IMAGE} {position + 1} of "
                                      f"{len(images)}: not a supported image ({len(image)} bytes)"}
        if any(image.endswith(SLOW_MARKER) for image in images):
            time.sleep(self.slow_s)
        self.inferences += 1
        outputs = []
        for wanted in request.get("outputs", []):
            if wanted["name"] == EMBEDDING:
                data = [value for image in images for value in embedding_of(image)]
                outputs.append({"name": EMBEDDING, "datatype": "FP32", "shape": [len(images), EMBEDDING_DIM],
                                "data": data})
            elif wanted["name"] == PROBABILITIES:
                k = int(wanted.get("parameters", {}).get("classification", 1))
                data = [f"{0.9 / (rank + 1):.6f}:{rank}:stub class {rank}" for _ in images for rank in range(k)]
                outputs.append({"name": PROBABILITIES, "datatype": "BYTES", "shape": [len(images), k], "data": data})
        return 200, {"model_name": ENSEMBLE_MODEL, "model_version": "1", "outputs": outputs}
