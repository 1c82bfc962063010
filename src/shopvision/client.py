"""The synchronous client: :class:`AsyncClient`'s methods, run on a private event loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from shopvision._protocol import DEFAULT_RETRY, RetryPolicy, Tls
from shopvision.aio import AsyncClient, OnError, Progress
from shopvision.contract import ENSEMBLE_MODEL
from shopvision.errors import ClientClosedError
from shopvision.images import ImageInput
from shopvision.types import ImageResult, Prediction, ServerInfo, WeightsProvenance

T = TypeVar("T")


class Client:
    """Classify and embed images with a shopvision server, over gRPC or HTTP.

    Same methods and options as :class:`shopvision.AsyncClient`. The client owns one
    background thread running an event loop, so requests are pipelined
    (``max_in_flight``) without the caller managing threads; ``progress`` callbacks run
    on that thread. Close it (or use ``with``) to stop the thread and the connections.

    >>> with Client("grpc://localhost:8001") as client:           # doctest: +SKIP
    ...     client.classify(["shoe.jpg"], top_k=3)[0][0].label
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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="shopvision-client", daemon=True)
        self._thread.start()
        self._closed = False

        async def create() -> AsyncClient:
            return AsyncClient(url, model=model, timeout_s=timeout_s, max_in_flight=max_in_flight,
                               batch_size=batch_size, retry=retry, headers=headers, tls=tls,
                               admin_key=admin_key)

        self._async = self._run(create())

    @property
    def url(self) -> str:
        return self._async.url

    def wait_until_ready(self, *, timeout_s: float = 60.0) -> None:
        """Wait until the model is ready, then check that it is shopvision's ensemble."""
        self._run(self._async.wait_until_ready(timeout_s=timeout_s))

    def is_ready(self) -> bool:
        return self._run(self._async.is_ready())

    def provenance(self) -> WeightsProvenance:
        """Where the served weights came from (and whether they are synthetic)."""
        return self._run(self._async.provenance())

    def info(self) -> ServerInfo:
        return self._run(self._async.info())

    def classify(self, images: Sequence[ImageInput], *, top_k: int = 5,
                 progress: Progress | None = None) -> list[list[Prediction]]:
        """Top-k ImageNet predictions per image, in input order. Raises on the first bad image."""
        return self._run(self._async.classify(images, top_k=top_k, progress=progress))

    def categorize(self, images: Sequence[ImageInput], *, top_k: int = 3,
                   progress: Progress | None = None) -> list[list[Prediction]]:
        """Top-k of the shop's own categories per image; see :meth:`AsyncClient.categorize`."""
        return self._run(self._async.categorize(images, top_k=top_k, progress=progress))

    def embed(self, images: Sequence[ImageInput], *, progress: Progress | None = None) -> NDArray[np.float32]:
        """L2-normalised embeddings, float32 (n, the served width), in input order. Raises on the first bad image."""
        return self._run(self._async.embed(images, progress=progress))

    def analyze(self, images: Sequence[ImageInput], *, top_k: int = 5, categories: int = 0,
                on_error: OnError = "raise", progress: Progress | None = None) -> list[ImageResult]:
        """Predictions and embedding per image from one pass; see :meth:`AsyncClient.analyze`."""
        return self._run(self._async.analyze(images, top_k=top_k, categories=categories, on_error=on_error,
                                             progress=progress))

    def serves_categories(self) -> bool:
        """Whether the server serves a categories head now (the ensemble has its output); asked each call."""
        return self._run(self._async.serves_categories())

    def model_config(self, model: str) -> dict[str, Any]:
        """Any model's configuration as Triton serves it (JSON form of ``config.pbtxt``)."""
        return self._run(self._async.model_config(model))

    def is_model_ready(self, model: str, *, version: int | None = None) -> bool:
        return self._run(self._async.is_model_ready(model, version=version))

    def infer_tensors(self, model: str, inputs: Mapping[str, NDArray[Any]], outputs: Sequence[str], *,
                      version: int | None = None) -> dict[str, NDArray[Any]]:
        """One request with named tensors to any model (a composing step or a pinned version); not retried."""
        return self._run(self._async.infer_tensors(model, inputs, outputs, version=version))

    def repository_index(self) -> list[dict[str, Any]]:
        """Every model and version in the server's repository, with its state. Needs ``admin_key``."""
        return self._run(self._async.repository_index())

    def load_model(self, model: str) -> None:
        """(Re)load a model from the server's repository (explicit model control). Needs ``admin_key``."""
        self._run(self._async.load_model(model))

    def unload_model(self, model: str) -> None:
        """Unload a model (explicit model control). Needs ``admin_key``."""
        self._run(self._async.unload_model(model))

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._async.close())
        finally:
            self._closed = True
            with contextlib.suppress(concurrent.futures.TimeoutError):
                asyncio.run_coroutine_threadsafe(_cancel_remaining(), self._loop).result(timeout=_UNWIND_S)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise ClientClosedError(f"the client for {self.url} is closed")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result()
        except BaseException:
            # Ctrl-C or an error: stop the work still queued on the loop, too.
            future.cancel()
            raise


_UNWIND_S = 10.0


async def _cancel_remaining() -> None:
    """Cancel the work still running on the loop (a call abandoned by Ctrl-C) and let it unwind: a task still
    pending when the loop closes is destroyed with a warning on stderr."""
    current = asyncio.current_task()
    remaining = [task for task in asyncio.all_tasks() if task is not current]
    for task in remaining:
        task.cancel()
    await asyncio.gather(*remaining, return_exceptions=True)
