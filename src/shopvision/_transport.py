"""The tritonclient boundary: asyncio gRPC/HTTP calls in, shopvision errors out.

Every tritonclient, grpc and aiohttp exception is translated here (``raise ... from``), so
nothing above this module sees a tritonclient type.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tritonclient.utils import InferenceServerException

from shopvision._protocol import Endpoint, Tls
from shopvision.contract import (
    ADMIN_KEY_HEADER,
    CATEGORY_PROBABILITIES,
    EMBEDDING,
    IMAGE_INPUT,
    PROBABILITIES,
    REJECTED_IMAGE,
)
from shopvision.errors import (
    InvalidImageError,
    ModelMismatchError,
    NoCategoriesError,
    PermissionDeniedError,
    RequestRejectedError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    ShopvisionError,
)

# 429: a gateway's rate limit (deploy/helm/shopvision/files/gateway.conf.template), passed with backoff like a 503.
_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED", "429", "502", "503"}
_TIMEOUT = {"StatusCode.DEADLINE_EXCEEDED", "504"}
_INVALID = {"StatusCode.INVALID_ARGUMENT", "400"}
_NOT_FOUND = {"StatusCode.NOT_FOUND", "404"}
_TOO_LARGE = {"StatusCode.RESOURCE_EXHAUSTED", "413"}
_DENIED = {"StatusCode.PERMISSION_DENIED", "StatusCode.UNAUTHENTICATED", "401", "403"}
_NUMPY_TYPES = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32",
                np.dtype(np.uint8): "UINT8", np.dtype(object): "BYTES"}


@dataclass(frozen=True)
class InferenceOutput:
    classes: NDArray[np.object_] | None
    """Triton classification strings, (n, top_k), or None when top_k is 0."""
    embeddings: NDArray[np.float32]
    categories: NDArray[np.object_] | None = None
    """Classification strings of the shop's categories head, (n, k), or None when not asked for."""


def translate(error: BaseException, *, context: str) -> ShopvisionError:
    """The shopvision error for a failure raised by tritonclient, grpc, aiohttp or the OS."""
    if isinstance(error, InferenceServerException):
        status, message = str(error.status() or ""), error.message() or str(error)
        if status in _DENIED or "restricted" in message:
            return PermissionDeniedError(f"{context}: {message} (pass the server's admin key)")
        if status in _INVALID and REJECTED_IMAGE in message:
            return InvalidImageError(message)
        if "unexpected inference output" in message and CATEGORY_PROBABILITIES in message:
            return NoCategoriesError(f"{context}: the server serves no categories head; train one with "
                                     "`shopvision categories train` and promote it")
        # Triton answers UNAVAILABLE when its model control mode forbids loading: not transient, not retried.
        if status in _INVALID or status in _TOO_LARGE or "is not allowed" in message:
            return RequestRejectedError(f"{context}: the server refused the request: {message}")
        if status in _UNAVAILABLE or "failed to connect" in message.lower():
            return ServerUnavailableError(f"{context}: server unavailable: {message}")
        if "has no available versions" in message:
            # A model being unloaded (server stopping, or a version swap): transient, so retried.
            return ServerUnavailableError(f"{context}: model not available right now: {message}")
        if status in _TIMEOUT or "deadline exceeded" in message.lower():
            return RequestTimeoutError(f"{context}: timed out: {message}")
        if status in _NOT_FOUND or "unknown model" in message.lower():
            return ModelMismatchError(f"{context}: {message}")
        return ServerError(f"{context}: {status or 'error'}: {message}")
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return RequestTimeoutError(f"{context}: timed out")
    # Connection refused/reset (OSError) and aiohttp's client errors while a server restarts.
    return ServerUnavailableError(f"{context}: server unavailable: {type(error).__name__}: {error}")


def _transient_types() -> tuple[type[BaseException], ...]:
    import aiohttp

    return (InferenceServerException, OSError, asyncio.TimeoutError, aiohttp.ClientError)


def _ssl_context(tls: Tls) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.certificate_file:
        context.load_cert_chain(tls.certificate_file, tls.key_file)
    return context


class AsyncTransport:
    """One tritonclient aio client for one endpoint; safe to share between tasks of one loop."""

    def __init__(self, endpoint: Endpoint, *, timeout_s: float, max_in_flight: int,
                 headers: Mapping[str, str] | None = None, tls: Tls | None = None,
                 admin_key: str | None = None) -> None:
        self.endpoint = endpoint
        self._headers = dict(headers or {})
        admin_header = f"triton-grpc-protocol-{ADMIN_KEY_HEADER}" if endpoint.protocol == "grpc" else ADMIN_KEY_HEADER
        self._admin_headers = {**self._headers, **({admin_header: admin_key} if admin_key else {})}
        self._translatable = _transient_types()
        if endpoint.protocol == "grpc":
            import tritonclient.grpc.aio as lib

            files = tls or Tls()
            self._client: Any = lib.InferenceServerClient(
                endpoint.address, ssl=endpoint.ssl, root_certificates=files.ca_file, private_key=files.key_file,
                certificate_chain=files.certificate_file)
            self._timeout = {"client_timeout": timeout_s}
            self._as_json: dict[str, Any] = {"as_json": True}
            self._requested_output = lib.InferRequestedOutput
        else:
            import tritonclient.http.aio as lib

            self._client = lib.InferenceServerClient(
                endpoint.address, conn_limit=max_in_flight, conn_timeout=timeout_s, ssl=endpoint.ssl,
                ssl_context=_ssl_context(tls) if endpoint.ssl and tls is not None else None,
            )
            self._timeout = {}
            self._as_json = {}
            self._requested_output = lib.InferRequestedOutput
        self._lib = lib

    async def infer(self, model: str, images: list[bytes], *, top_k: int, categories: int = 0) -> InferenceOutput:
        batch = self._lib.InferInput(IMAGE_INPUT, [len(images), 1], "BYTES")
        batch.set_data_from_numpy(np.array(images, dtype=object).reshape(len(images), 1))
        outputs = [self._requested_output(EMBEDDING)]
        if top_k > 0:
            outputs.append(self._requested_output(PROBABILITIES, class_count=top_k))
        if categories > 0:
            outputs.append(self._requested_output(CATEGORY_PROBABILITIES, class_count=categories))
        result = await self._call(
            f"infer {model}", self._client.infer, model, [batch], outputs=outputs, headers=self._headers,
            **self._timeout,
        )
        return InferenceOutput(classes=result.as_numpy(PROBABILITIES) if top_k > 0 else None,
                               embeddings=result.as_numpy(EMBEDDING),
                               categories=result.as_numpy(CATEGORY_PROBABILITIES) if categories > 0 else None)

    async def infer_tensors(self, model: str, inputs: Mapping[str, NDArray[Any]], outputs: list[str], *,
                            version: str = "") -> dict[str, NDArray[Any]]:
        tensors = []
        for name, array in inputs.items():
            tensor = self._lib.InferInput(name, list(array.shape), _NUMPY_TYPES[array.dtype])
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        result = await self._call(
            f"infer {model}", self._client.infer, model, tensors, model_version=version,
            outputs=[self._requested_output(name) for name in outputs], headers=self._headers, **self._timeout,
        )
        return {name: result.as_numpy(name) for name in outputs}

    async def is_model_ready(self, model: str, version: str = "") -> bool:
        try:
            return bool(await self._call("model ready", self._client.is_model_ready, model, version,
                                         headers=self._headers))
        except ShopvisionError:
            return False

    async def repository_index(self) -> list[dict[str, Any]]:
        index = await self._call("model repository index", self._client.get_model_repository_index,
                                 headers=self._admin_headers, **self._as_json)
        # gRPC wraps the list in {"models": [...]}; HTTP returns it bare.
        return list(index.get("models", [])) if isinstance(index, dict) else list(index)

    async def load_model(self, model: str) -> None:
        await self._call(f"load {model}", self._client.load_model, model, headers=self._admin_headers)

    async def unload_model(self, model: str) -> None:
        await self._call(f"unload {model}", self._client.unload_model, model, headers=self._admin_headers)

    async def server_metadata(self) -> dict[str, Any]:
        metadata: dict[str, Any] = await self._call("server metadata", self._client.get_server_metadata,
                                                    headers=self._headers, **self._as_json)
        return metadata

    async def model_metadata(self, model: str) -> dict[str, Any]:
        metadata: dict[str, Any] = await self._call(f"metadata of {model}", self._client.get_model_metadata, model,
                                                    headers=self._headers, **self._as_json)
        return metadata

    async def model_config(self, model: str) -> dict[str, Any]:
        config = await self._call(f"config of {model}", self._client.get_model_config, model,
                                  headers=self._headers, **self._as_json)
        # gRPC wraps the config in {"config": ...}; HTTP returns it bare.
        return dict(config.get("config", config))

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, context: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except self._translatable as error:
            raise translate(error, context=f"{context} at {self.endpoint}") from error
