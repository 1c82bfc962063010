"""Helpers shared by the CLI commands: image discovery, progress, server URL."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TextIO

from shopvision.images import IMAGE_SUFFIXES

URL_ENV = "SHOPVISION_URL"
DEFAULT_URL = "grpc://localhost:8001"

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3


def add_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"server: grpc://host:8001 or http://host:8000 (default: ${URL_ENV} or {DEFAULT_URL})",
    )


def collect_images(targets: list[str]) -> list[Path]:
    """Files as given, and image files under directories (recursively, sorted)."""
    found: list[Path] = []
    for target in targets:
        path = Path(target)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            found.append(path)
    return found


class ProgressBar:
    """A one-line progress bar on a terminal; silent when output is redirected or short."""

    def __init__(self, label: str, *, stream: TextIO = sys.stderr, min_total: int = 32) -> None:
        self._label = label
        self._stream = stream
        self._min_total = min_total
        self._enabled = stream.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self._enabled or total < self._min_total:
            return
        width = 30
        filled = width * done // total
        self._stream.write(f"\r{self._label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            self._stream.write("\n")
        self._stream.flush()
