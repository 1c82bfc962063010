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
from tritonclient.utils import InferenceServerException

from shopvision._protocol import Endpoint, Tls
from shopvision.contract import EMBEDDING, IMAGE_INPUT, PROBABILITIES
from shopvision.errors import (
    InvalidImageError,
    ModelMismatchError,
    RequestTimeoutError,
    ServerError,
    ServerUnavailableError,
    ShopvisionError,
)

_UNAVAILABLE = {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED", "502", "503"}
_TIMEOUT = {"StatusCode.DEADLINE_EXCEEDED", "504"}
_INVALID = {"StatusCode.INVALID_ARGUMENT", "400"}
_NOT_FOUND = {"StatusCode.NOT_FOUND", "404"}


@dataclass(frozen=True)
class InferenceOutput:
    classes: np.ndarray | None
    """Triton classification strings, (n, top_k), or None when top_k is 0."""
    embeddings: np.ndarray


def translate(error: BaseException, *, context: str) -> ShopvisionError:
    """The shopvision error for a failure raised by tritonclient, grpc, aiohttp or the OS."""
    if isinstance(error, InferenceServerException):
        status, message = str(error.status() or ""), error.message() or str(error)
        if status in _INVALID:
            return InvalidImageError(message)
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
                 headers: Mapping[str, str] | None = None, tls: Tls | None = None) -> None:
        self.endpoint = endpoint
        self._headers = dict(headers or {})
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

    async def infer(self, model: str, images: list[bytes], *, top_k: int) -> InferenceOutput:
        batch = self._lib.InferInput(IMAGE_INPUT, [len(images), 1], "BYTES")
        batch.set_data_from_numpy(np.array(images, dtype=object).reshape(len(images), 1))
        outputs = [self._requested_output(EMBEDDING)]
        if top_k > 0:
            outputs.append(self._requested_output(PROBABILITIES, class_count=top_k))
        result = await self._call(
            f"infer {model}", self._client.infer, model, [batch], outputs=outputs, headers=self._headers,
            **self._timeout,
        )
        classes = result.as_numpy(PROBABILITIES) if top_k > 0 else None
        return InferenceOutput(classes=classes, embeddings=result.as_numpy(EMBEDDING))

    async def is_model_ready(self, model: str) -> bool:
        try:
            return bool(await self._call("model ready", self._client.is_model_ready, model, headers=self._headers))
        except ShopvisionError:
            return False

    async def server_metadata(self) -> dict:
        return await self._call("server metadata", self._client.get_server_metadata, headers=self._headers,
                                **self._as_json)

    async def model_metadata(self, model: str) -> dict:
        return await self._call(f"metadata of {model}", self._client.get_model_metadata, model,
                                headers=self._headers, **self._as_json)

    async def model_config(self, model: str) -> dict:
        config = await self._call(f"config of {model}", self._client.get_model_config, model,
                                  headers=self._headers, **self._as_json)
        # gRPC wraps the config in {"config": ...}; HTTP returns it bare.
        return config.get("config", config)

    async def close(self) -> None:
        await self._client.close()

    async def _call(self, context: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except self._translatable as error:
            raise translate(error, context=f"{context} at {self.endpoint}") from error
