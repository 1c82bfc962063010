"""A client that asks the server about a photo once: for tests that send the same photos through the same model
again and again (a catalog built on each engine, heads trained on the same labelled photos).

The first ask goes to the real server, over the real protocol; a photo's later asks get that answer back. Answers
are keyed by the served model's sha256 and the photo's bytes, so a promoted model is asked afresh, and a refused
photo is never remembered (its error names its place in the call that sent it)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import shopvision
from shopvision.types import ImageResult

Answers = dict[tuple[str, bytes, int, int], ImageResult]


class RememberingClient:
    def __init__(self, client: shopvision.Client, answers: Answers | None = None) -> None:
        """``answers`` may be shared by several clients (each training opens its own, as a user's would)."""
        self._client = client
        self._answers: Answers = {} if answers is None else answers
        self.asked = 0
        """Photos sent to the server (the rest were answered from memory)."""

    def __getattr__(self, name: str) -> Any:  # everything else is the real client's
        return getattr(self._client, name)

    def analyze(self, images: Sequence[bytes | str | Path], *, top_k: int = 5, categories: int = 0,
                on_error: str = "raise", progress: Any = None) -> list[ImageResult]:
        model = self._client.provenance().model_sha256 or "unknown"
        photos = [image if isinstance(image, bytes) else Path(image).read_bytes() for image in images]
        keys = [(model, hashlib.sha256(photo).digest(), top_k, categories) for photo in photos]
        missing = [position for position, key in enumerate(keys) if key not in self._answers]
        fresh = self._client.analyze([photos[position] for position in missing], top_k=top_k, categories=categories,
                                     on_error=on_error, progress=progress) if missing else []
        self.asked += len(missing)
        answered = dict(zip(missing, fresh, strict=True))
        for position, result in answered.items():
            if result.error is None:
                self._answers[keys[position]] = result
        return [answered[position] if position in answered else self._answers[key]
                for position, key in enumerate(keys)]
