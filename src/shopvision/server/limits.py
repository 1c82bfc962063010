"""Deployment limits derived from the serving contract, in one place.

The gateway's nginx template, the Helm chart and docker-compose spell these numbers in their own
syntax; ``tests/test_limits.py`` checks each of them against this module.
"""

from __future__ import annotations

from dataclasses import dataclass

from shopvision.contract import (
    BYTES_ELEMENT_PREFIX,
    CROP_SIZE,
    MAX_BATCH_SIZE,
    MAX_IMAGE_BYTES,
    MIB,
    max_request_bytes,
)
from shopvision.errors import InvalidArgumentError

PIXEL_BYTES = 3 * CROP_SIZE * CROP_SIZE * 4
"""One preprocessed image: FP32, 3 x 224 x 224."""
SHM_OTHER_MODELS_BYTES = 64 * MIB
"""The other Python-backend regions (quality_monitor's instances, 1 MiB each at start) and their growth."""


def proxy_size(byte_count: int) -> str:
    """nginx's spelling of a size in whole MiB (``client_max_body_size``, ingress-nginx's ``proxy-body-size``)."""
    if byte_count % MIB:
        raise InvalidArgumentError(f"{byte_count} bytes is not a whole number of MiB")
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


LARGE_REQUEST_BYTES = 10_000_000
"""The gateway counts a request as large past this many bytes (its Content-Length has more than 7 digits) or when
it does not say its length (a chunked body; every gRPC message). One image at the byte limit with its envelope
stays under it, so a single-image request, the common one, is never held back by the large-request bound."""


@dataclass(frozen=True, kw_only=True)
class GatewayLimits:
    """How much inference the gateway lets into one Triton at once (deploy/helm/shopvision/files/gateway.conf.template).

    The defaults are compose's and the chart's (``gateway.limits``); :meth:`memory_mib` is what they let Triton's
    memory reach, which ``tests/test_limits.py`` holds under the chart's memory limit with the figures of
    ``benchmarks/results/limits``."""

    large_requests: int = 4
    """In flight in total, over LARGE_REQUEST_BYTES or of unknown length: each may be at the request limit."""
    requests: int = 32
    """Inference requests in flight in total."""
    requests_per_client: int = 16
    """In flight from one client address: one client cannot take every slot."""
    rate_per_client: int = 50
    """Inference requests per second from one client address (with ``burst_per_client`` beyond it)."""
    burst_per_client: int = 100
    trusted_proxies: str = "127.0.0.1/32"
    """The proxies (a CIDR) whose X-Forwarded-For names the client; the chart trusts the Ingress controller."""

    def environment(self) -> dict[str, str]:
        """The template's limit variables, as the nginx image's envsubst reads them."""
        return {"GATEWAY_LARGE_REQUESTS": str(self.large_requests), "GATEWAY_REQUESTS": str(self.requests),
                "GATEWAY_REQUESTS_PER_CLIENT": str(self.requests_per_client),
                "GATEWAY_RATE_PER_CLIENT": str(self.rate_per_client),
                "GATEWAY_BURST_PER_CLIENT": str(self.burst_per_client),
                "GATEWAY_TRUSTED_PROXIES": self.trusted_proxies}

    def memory_mib(self, *, idle_mib: float, per_request_at_limit_mib: float, decode_mib: float) -> float:
        """Triton's memory with every slot taken: the large ones at the request limit, the rest just under
        LARGE_REQUEST_BYTES (a request's cost grows with its bytes), and one image decoding."""
        small = per_request_at_limit_mib * LARGE_REQUEST_BYTES / max_request_bytes()
        return (idle_mib + self.large_requests * per_request_at_limit_mib
                + (self.requests - self.large_requests) * small + decode_mib)
