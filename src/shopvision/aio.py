"""The asyncio client; :class:`shopvision.Client` is its synchronous twin."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

from shopvision import images as image_inputs
from shopvision._protocol import (
    DEFAULT_RETRY,
    Endpoint,
    RetryPolicy,
    Tls,
    check_contract,
    chunks,
    provenance_from_config,
    results_from_outputs,
    warn_if_synthetic,
)
from shopvision._transport import AsyncTransport
from shopvision.contract import CATEGORY_PROBABILITIES, ENSEMBLE_MODEL, RESNET_MODEL
from shopvision.errors import (
    ClientClosedError,
    InvalidArgumentError,
    InvalidImageError,
    ModelMismatchError,
    ServerUnavailableError,
)
from shopvision.images import ImageInput
from shopvision.types import ImageResult, Prediction, ServerInfo, WeightsProvenance

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each request completes."""
OnError = Literal["raise", "report"]
T = TypeVar("T")


@dataclass(frozen=True)
class _Session:
    """What the client learns from the server once, on connect."""

    max_batch_size: int
    provenance: WeightsProvenance


class AsyncClient:
    """Classify and embed images with a shopvision server, over gRPC or HTTP.

    ``url`` picks the transport: ``grpc://host:8001`` or ``http://host:8000`` (``grpcs://`` and
    ``https://`` for TLS). A bare ``host:port`` means gRPC, or HTTP on port 8000. ``admin_key``
    opens the server's restricted APIs (model load/unload, repository index) for this client.
    """

    def __init__(
        self,
        url: str = "grpc://localhost:8001",
        *,
        model: str = ENSEMBLE_MODEL,
        timeout_s: float = 60.0,
        max_in_flight: int = 4,
        batch_size: int | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
        headers: Mapping[str, str] | None = None,
        tls: Tls | None = None,
        admin_key: str | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise InvalidArgumentError("max_in_flight must be at least 1")
        self._endpoint = Endpoint.parse(url)
        self._model = model
        self._max_in_flight = max_in_flight
        self._batch_size = batch_size
        self._retry = retry
        self._transport = AsyncTransport(self._endpoint, timeout_s=timeout_s, max_in_flight=max_in_flight,
                                         headers=headers, tls=tls, admin_key=admin_key)
        self._session: _Session | None = None
        self._closed = False

    @property
    def url(self) -> str:
        return str(self._endpoint)

    async def wait_until_ready(self, *, timeout_s: float = 60.0) -> None:
        """Wait until the model is ready, then check that it is shopvision's ensemble."""
        self._ensure_open()
        deadline = time.monotonic() + timeout_s
        while not await self._transport.is_model_ready(self._model):
            if time.monotonic() >= deadline:
                raise ServerUnavailableError(f"model '{self._model}' at {self.url} not ready after {timeout_s:.0f} s")
            await asyncio.sleep(0.25)
        await self._connect()

    async def is_ready(self) -> bool:
        self._ensure_open()
        return await self._transport.is_model_ready(self._model)

    async def provenance(self) -> WeightsProvenance:
        """Where the served weights came from (and whether they are synthetic)."""
        return (await self._connect()).provenance

    async def info(self) -> ServerInfo:
        session = await self._connect()
        server = await self._with_retry(self._transport.server_metadata)
        metadata = await self._with_retry(lambda: self._transport.model_metadata(self._model))
        resnet = await self._with_retry(lambda: self._transport.model_config(RESNET_MODEL))
        return ServerInfo(
            url=self.url,
            server_version=str(server.get("version", "")),
            model=self._model,
            model_versions=list(metadata.get("versions", [])),
            max_batch_size=session.max_batch_size,
            provenance=session.provenance,
            dynamic_batching=dict(resnet.get("dynamic_batching", {})),
        )

    async def classify(self, images: Sequence[ImageInput], *, top_k: int = 5,
                       progress: Progress | None = None) -> list[list[Prediction]]:
        """Top-k ImageNet predictions per image, in input order. Raises on the first bad image."""
        results = await self.analyze(images, top_k=top_k, progress=progress)
        return [result.predictions for result in results]

    async def categorize(self, images: Sequence[ImageInput], *, top_k: int = 3,
                         progress: Progress | None = None) -> list[list[Prediction]]:
        """Top-k of the shop's own categories per image, in input order. Raises on the first bad image, and
        :class:`NoCategoriesError` when the server serves no categories head."""
        results = await self.analyze(images, top_k=0, categories=top_k, progress=progress)
        return [result.categories for result in results]

    async def embed(self, images: Sequence[ImageInput], *, progress: Progress | None = None) -> NDArray[np.float32]:
        """L2-normalised embeddings, float32 (n, the served width), in input order. Raises on the first bad image."""
        results = await self.analyze(images, top_k=0, progress=progress)
        if not results:
            return np.empty((0, (await self._connect()).provenance.embedding_dim), dtype=np.float32)
        return np.stack([result.embedding for result in results if result.embedding is not None]).astype(
            np.float32, copy=False)

    async def analyze(self, images: Sequence[ImageInput], *, top_k: int = 5, categories: int = 0,
                      on_error: OnError = "raise", progress: Progress | None = None) -> list[ImageResult]:
        """Predictions and embedding of every image from one pass of the model.

        ``categories`` > 0 also asks for that many of the shop's own categories (``ImageResult.categories``);
        it raises :class:`NoCategoriesError` when the server serves no categories head.

        ``on_error="raise"`` raises :class:`InvalidImageError` (with ``index``) for the first
        bad image; ``"report"`` returns every result, failed ones with ``error`` set.
        Images are sent in requests of at most the server's ``max_batch_size``, with at most
        ``max_in_flight`` requests outstanding; files are read only when their request is sent.
        """
        if on_error not in ("raise", "report"):
            raise InvalidArgumentError(f"on_error must be 'raise' or 'report', not {on_error!r}")
        items = list(images)
        session = await self._connect()
        results: list[ImageResult | None] = [None] * len(items)
        slots = asyncio.Semaphore(self._max_in_flight)
        done = 0

        async def run(indices: range) -> None:
            nonlocal done
            async with slots:
                chunk_results = await self._analyze_chunk(items, indices, top_k=top_k, categories=categories)
            for index, result in zip(indices, chunk_results, strict=True):
                if result.error is not None and on_error == "raise":
                    raise result.error
                results[index] = result
            done += len(indices)
            if progress is not None:
                progress(done, len(items))

        await _gather_or_cancel([run(indices) for indices in chunks(len(items), self._batch_size or
                                                                     session.max_batch_size)])
        return [result for result in results if result is not None]

    async def serves_categories(self) -> bool:
        """Whether the server serves a categories head now (the ensemble has its output); asked each call."""
        metadata = await self._with_retry(lambda: self._transport.model_metadata(self._model))
        return any(tensor.get("name") == CATEGORY_PROBABILITIES for tensor in metadata.get("outputs", []))

    async def model_config(self, model: str) -> dict[str, Any]:
        """Any model's configuration as Triton serves it (JSON form of ``config.pbtxt``)."""
        self._ensure_open()
        return await self._with_retry(lambda: self._transport.model_config(model))

    async def is_model_ready(self, model: str, *, version: int | None = None) -> bool:
        self._ensure_open()
        return await self._transport.is_model_ready(model, "" if version is None else str(version))

    async def infer_tensors(self, model: str, inputs: Mapping[str, NDArray[Any]], outputs: Sequence[str], *,
                            version: int | None = None) -> dict[str, NDArray[Any]]:
        """One request with named tensors to any model (a composing step or a pinned version); not retried."""
        self._ensure_open()
        return await self._transport.infer_tensors(model, inputs, list(outputs),
                                                   version="" if version is None else str(version))

    async def repository_index(self) -> list[dict[str, Any]]:
        """Every model and version in the server's repository, with its state. Needs ``admin_key``."""
        self._ensure_open()
        return await self._transport.repository_index()

    async def load_model(self, model: str) -> None:
        """(Re)load a model from the server's repository (explicit model control). Needs ``admin_key``."""
        self._ensure_open()
        await self._transport.load_model(model)

    async def unload_model(self, model: str) -> None:
        """Unload a model (explicit model control). Needs ``admin_key``."""
        self._ensure_open()
        await self._transport.unload_model(model)

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _analyze_chunk(self, items: list[ImageInput], indices: range, *, top_k: int,
                             categories: int) -> list[ImageResult]:
        results: dict[int, ImageResult] = {}
        encoded: dict[int, bytes] = {}
        for index in indices:
            try:
                encoded[index] = image_inputs.encode(items[index])
            except InvalidImageError as error:
                results[index] = ImageResult(error=InvalidImageError(error.reason, index=index))
        if encoded:
            try:
                output = await self._with_retry(lambda: self._transport.infer(
                    self._model, list(encoded.values()), top_k=top_k, categories=categories))
                results.update(zip(encoded, results_from_outputs(output.classes, output.embeddings, output.categories),
                                   strict=True))
            except InvalidImageError as rejection:
                results.update(await self._isolate_rejected(encoded, top_k=top_k, categories=categories,
                                                            rejection=rejection))
        return [results[index] for index in indices]

    async def _isolate_rejected(self, encoded: dict[int, bytes], *, top_k: int, categories: int,
                                rejection: InvalidImageError) -> dict[int, ImageResult]:
        """A rejected request fails as a whole; resend its images one by one to find the bad ones."""
        if len(encoded) == 1:
            (index,) = encoded
            return {index: ImageResult(error=InvalidImageError(rejection.reason, index=index))}

        async def single(index: int, data: bytes) -> ImageResult:
            try:
                output = await self._with_retry(lambda: self._transport.infer(self._model, [data], top_k=top_k,
                                                                              categories=categories))
            except InvalidImageError as error:
                return ImageResult(error=InvalidImageError(error.reason, index=index))
            return results_from_outputs(output.classes, output.embeddings, output.categories)[0]

        singles = await asyncio.gather(*(single(index, data) for index, data in encoded.items()))
        return dict(zip(encoded, singles, strict=True))

    async def _connect(self) -> _Session:
        self._ensure_open()
        if self._session is None:
            metadata = await self._with_retry(lambda: self._transport.model_metadata(self._model))
            width = check_contract(metadata, self._model)
            config = await self._with_retry(lambda: self._transport.model_config(self._model))
            try:
                provenance = provenance_from_config(await self._transport.model_config(RESNET_MODEL))
            except ModelMismatchError:
                provenance = WeightsProvenance(source="unknown", synthetic=False)
            provenance = dataclasses.replace(provenance, embedding_dim=width)
            warn_if_synthetic(provenance, self.url)
            self._session = _Session(max_batch_size=max(1, int(config.get("max_batch_size", 1))),
                                     provenance=provenance)
        return self._session

    async def _with_retry(self, call: Callable[[], Awaitable[T]]) -> T:
        """Retry only transient unavailability (e.g. a restart); never bad input or timeouts."""
        for delay in itertools.chain(self._retry.delays(), [None]):
            self._ensure_open()
            try:
                return await call()
            except ServerUnavailableError:
                if delay is None:
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last delay re-raises")

    def _ensure_open(self) -> None:
        if self._closed:
            raise ClientClosedError(f"the client for {self.url} is closed")


async def _gather_or_cancel(coroutines: list[Awaitable[None]]) -> None:
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


__all__ = ["AsyncClient", "OnError", "Progress"]
