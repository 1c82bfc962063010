"""Helpers shared by the CLI commands: image discovery, progress, server URL."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from shopvision.catalog.feeds import SyncReport

from shopvision.errors import ShopvisionError
from shopvision.images import IMAGE_SUFFIXES
from shopvision.repository.files import REPOSITORY_ENV, default_repository

URL_ENV = "SHOPVISION_URL"
DEFAULT_URL = "grpc://localhost:8001"

# Exit statuses, the same for every command (docs/development.md "Errors and exit statuses").
EXIT_OK = 0
EXIT_FAILED = 1  # the operation failed, or some of its items did (each one named on stderr)
EXIT_USAGE = 2  # the command line itself is wrong (argparse's own status, and UsageError)
EXIT_UNAVAILABLE = 3  # the server could not be reached or is not ready
EXIT_INTERRUPTED = 130  # Ctrl-C: what was committed before it is kept (128 + SIGINT, as a shell reports it)


class UsageError(ShopvisionError):
    """Options that parse but do not go together, or a value out of range: exit status 2, like argparse's."""


def add_url_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", default=os.environ.get(URL_ENV, DEFAULT_URL),
        help=f"server: grpc://host:8001 or http://host:8000 (default: ${URL_ENV} or {DEFAULT_URL})",
    )


def add_repository_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=None, metavar="DIR",
                        help=f"the built model repository (default: ${REPOSITORY_ENV} or {default_repository()})")


def add_json_option(parser: argparse.ArgumentParser, what: str = "the result") -> None:
    """``--json``: what the command reports, as one JSON document on stdout instead of prose (warnings and
    per-item failures stay on stderr, so the document is all stdout holds)."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON instead of prose")


def print_json(document: object) -> None:
    print(json.dumps(document, indent=2, default=str))


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


class SyncProgress:
    """One status line of a feed sync on a terminal, redrawn at most 4 times a second; silent when redirected.

    The feed's length in rows is unknown until it is read, so the ETA comes from the share of its bytes read."""

    def __init__(self, *, stream: TextIO = sys.stderr, interval_s: float = 0.25) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._interval_s = interval_s
        self._drawn_at = 0.0
        self._drawn = False

    def __call__(self, report: SyncReport) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._drawn_at < self._interval_s:
            return
        self._drawn_at, self._drawn = now, True
        rate = report.rows / report.elapsed_s if report.elapsed_s > 0 else 0.0
        eta = ""
        if report.feed_read and 0 < report.feed_read < 1:
            left = report.elapsed_s * (1 - report.feed_read) / report.feed_read
            eta = f"  ETA {int(left // 60)}m{int(left % 60):02d}s"
        self._stream.write(f"\rsync  rows {report.rows}  fetched {report.fetched}  not modified "
                           f"{report.not_modified}  embedded {report.embedded}  failed {len(report.failed)}  "
                           f"{rate:.1f} rows/s{eta}\x1b[K")
        self._stream.flush()

    def end(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
