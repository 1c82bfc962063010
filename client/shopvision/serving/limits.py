"""Deployment limits derived from the serving contract, in one place.

The gateway's nginx template, the Helm chart and docker-compose spell these numbers in their own
syntax; ``tests/test_limits.py`` checks each of them against this module.
"""

from __future__ import annotations

from shopvision.contract import (
    BYTES_ELEMENT_PREFIX,
    CROP_SIZE,
    MAX_BATCH_SIZE,
    MAX_IMAGE_BYTES,
    MIB,
    max_request_bytes,
)

PIXEL_BYTES = 3 * CROP_SIZE * CROP_SIZE * 4
"""One preprocessed image: FP32, 3 x 224 x 224."""
SHM_OTHER_MODELS_BYTES = 64 * MIB
"""The other Python-backend regions (quality_monitor's instances, 1 MiB each at start) and their growth."""


def proxy_size(byte_count: int) -> str:
    """nginx's spelling of a size in whole MiB (``client_max_body_size``, ingress-nginx's ``proxy-body-size``)."""
    if byte_count % MIB:
        raise ValueError(f"{byte_count} bytes is not a whole number of MiB")
    return f"{byte_count // MIB}m"


def request_body_limit() -> str:
    """What the gateway and the Ingress let through: :func:`shopvision.contract.max_request_bytes`."""
    return proxy_size(max_request_bytes())


def preprocess_batch_bytes() -> int:
    """Shared memory one full preprocess batch occupies: its images in, its pixels out."""
    return MAX_BATCH_SIZE * (MAX_IMAGE_BYTES + BYTES_ELEMENT_PREFIX + PIXEL_BYTES)


def shm_size_bytes(preprocess_instances: int) -> int:
    """The ``/dev/shm`` a server needs, rounded up to 512 MiB.

    The Python backend's pool per instance grows to hold the largest batch it was handed and is never
    given back (benchmarks/results/limits: about one full batch at the byte limit after a burst of them);
    twice that per instance leaves room for a fragmented pool. Past ``/dev/shm`` a request fails fast
    with "Failed to increase the shared memory pool size" instead of the pool growing on."""
    needed = preprocess_instances * 2 * preprocess_batch_bytes() + SHM_OTHER_MODELS_BYTES
    step = 512 * MIB
    return -(-needed // step) * step
