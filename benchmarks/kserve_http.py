"""Triton's HTTP inference request with the binary-data extension, built by hand.

Shared by the Locust HTTP user and the closed-loop load generator, so both measure Triton with the
same bytes on the wire as the naive baseline gets: one JPEG per request, top-5 classes back.
"""

from __future__ import annotations

import json
import struct

from shopvision.contract import ENSEMBLE_MODEL, IMAGE_INPUT, PROBABILITIES

TOP_K = 5
INFER_PATH = f"/v2/models/{ENSEMBLE_MODEL}/infer"


def classify_request(image: bytes, *, top_k: int = TOP_K) -> tuple[dict[str, str], bytes]:
    """Headers and body: a JSON header naming the binary input, then the BYTES element (length-prefixed)."""
    element = struct.pack("<I", len(image)) + image
    header = json.dumps({
        "inputs": [{"name": IMAGE_INPUT, "shape": [1, 1], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(element)}}],
        "outputs": [{"name": PROBABILITIES, "parameters": {"classification": top_k, "binary_data": False}}],
    }).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    return headers, header + element


def classes_in(response_body: bytes) -> int:
    """How many classes a successful response carries."""
    return len(json.loads(response_body)["outputs"][0]["data"])
