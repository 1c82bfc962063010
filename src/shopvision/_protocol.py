"""Transport-independent logic shared by the sync and async clients (no I/O here)."""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
from numpy.typing import NDArray

from shopvision.contract import (
    EMBEDDING,
    ENSEMBLE_MODEL,
    IMAGE_INPUT,
    NUM_CLASSES,
    PROBABILITIES,
    PROVENANCE_PARAMETER_PREFIX,
)
from shopvision.errors import InvalidArgumentError, ModelMismatchError
from shopvision.types import ImageResult, Prediction, WeightsProvenance

DEFAULT_GRPC_PORT = 8001
DEFAULT_HTTP_PORT = 8000


class SyntheticWeightsWarning(UserWarning):
    """The server serves seeded random weights: its classes and embeddings mean nothing."""


@dataclass(frozen=True)
class Endpoint:
    protocol: str
    """``grpc`` or ``http``."""
    address: str
    """``host:port`` as tritonclient expects it."""
    ssl: bool = False

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """``grpc://host:8001``, ``http://host:8000``, ``https://...``, ``grpcs://...`` or bare ``host:port``.

        A bare ``host:port`` means gRPC, except on port 8000 (Triton's HTTP default).
        """
        parsed = urlparse(url if "://" in url else f"//{url}")
        scheme = parsed.scheme or ""
        if scheme not in ("", "grpc", "grpcs", "http", "https"):
            raise InvalidArgumentError(f"unsupported URL scheme '{scheme}' in {url!r}; use grpc://, http:// or https://")
        if not parsed.hostname:
            raise InvalidArgumentError(f"no host in {url!r}")
        if scheme.startswith("grpc") or (scheme == "" and parsed.port != DEFAULT_HTTP_PORT):
            protocol, default_port = "grpc", DEFAULT_GRPC_PORT
        else:
            protocol, default_port = "http", DEFAULT_HTTP_PORT
        host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        return cls(protocol, f"{host}:{parsed.port or default_port}", ssl=scheme in ("grpcs", "https"))

    def __str__(self) -> str:
        return f"{self.protocol}{'s' if self.ssl else ''}://{self.address}"


@dataclass(frozen=True, kw_only=True)
class Tls:
    """Certificates for ``grpcs://`` and ``https://`` URLs: a private CA, and a client certificate for mutual TLS.

    Without it, TLS URLs trust the system's CAs.
    """

    ca_file: str | None = None
    certificate_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """Exponential backoff with jitter, for transient failures (server unavailable) only."""

    attempts: int = 8
    initial_backoff_s: float = 0.25
    max_backoff_s: float = 4.0

    def delays(self) -> Iterator[float]:
        """Sleep before each retry; exhausted after ``attempts - 1`` retries."""
        backoff = self.initial_backoff_s
        for _ in range(self.attempts - 1):
            yield backoff * (0.5 + random.random() / 2)
            backoff = min(backoff * 2, self.max_backoff_s)


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)


def chunks(count: int, size: int) -> list[range]:
    """Consecutive index ranges of at most ``size`` covering ``range(count)``."""
    if size < 1:
        raise InvalidArgumentError(f"chunk size must be at least 1, got {size}")
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def decode_predictions(classes: NDArray[Any]) -> list[list[Prediction]]:
    """Triton's classification strings ``b"score:index:label"`` -> predictions per image."""
    decoded = []
    for row in classes.reshape(classes.shape[0], -1):
        predictions = []
        for item in row:
            score, index, label = (item.decode() if isinstance(item, bytes) else str(item)).split(":", 2)
            predictions.append(Prediction(label=label, index=int(index), score=float(score)))
        decoded.append(predictions)
    return decoded


def results_from_outputs(classes: NDArray[Any] | None, embeddings: NDArray[np.float32],
                         categories: NDArray[Any] | None = None) -> list[ImageResult]:
    nothing: list[list[Prediction]] = [[] for _ in range(len(embeddings))]
    predictions = decode_predictions(classes) if classes is not None else nothing
    shop_categories = decode_predictions(categories) if categories is not None else nothing
    return [ImageResult(predictions=p, embedding=e, categories=c)
            for p, e, c in zip(predictions, embeddings, shop_categories, strict=True)]


def check_contract(metadata: Mapping[str, Any], model: str = ENSEMBLE_MODEL) -> int:
    """Fail early, with a clear message, if the model is not shopvision's ensemble; returns its embedding's width
    (the backbone's: any fixed width, read from the served model rather than assumed)."""
    inputs = {tensor["name"]: tensor for tensor in metadata.get("inputs", [])}
    outputs = {tensor["name"]: tensor for tensor in metadata.get("outputs", [])}
    problems = []
    if inputs.get(IMAGE_INPUT, {}).get("datatype") != "BYTES":
        problems.append(f"input '{IMAGE_INPUT}' (BYTES)")
    probabilities, embedding = (outputs.get(name, {}) for name in (PROBABILITIES, EMBEDDING))
    if probabilities.get("datatype") != "FP32" or _last_dim(probabilities) != NUM_CLASSES:
        problems.append(f"output '{PROBABILITIES}' (FP32, {NUM_CLASSES} wide)")
    width = _last_dim(embedding)
    if embedding.get("datatype") != "FP32" or width < 1:
        problems.append(f"output '{EMBEDDING}' (FP32, a fixed width)")
    if problems:
        found = {"inputs": sorted(inputs), "outputs": sorted(outputs)}
        raise ModelMismatchError(f"model '{model}' lacks {', '.join(problems)}; it has {found}")
    return width


def _last_dim(tensor: Mapping[str, Any]) -> int:
    shape = [int(d) for d in tensor.get("shape", [])]
    return shape[-1] if shape else -1


def provenance_from_config(config: Mapping[str, Any]) -> WeightsProvenance:
    return WeightsProvenance.from_parameters({
        key[len(PROVENANCE_PARAMETER_PREFIX):]: value.get("string_value", "")
        for key, value in config.get("parameters", {}).items()
        if key.startswith(PROVENANCE_PARAMETER_PREFIX)
    })


def warn_if_synthetic(provenance: WeightsProvenance, url: str) -> None:
    if provenance.synthetic:
        warnings.warn(
            f"{url} serves SYNTHETIC ResNet50 weights (seeded random, source '{provenance.source}'): "
            "classes and embeddings are meaningless. Build real ones with "
            "`shopvision model build --weights resnet50-v1-12`.",
            SyntheticWeightsWarning,
            stacklevel=4,
        )
