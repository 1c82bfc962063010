"""Worker threads for tests that keep whatever their target raised, so a crashed worker fails the test."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any


class RecordingThread(threading.Thread):
    def __init__(self, target: Callable[..., Any], args: Iterable[Any] = (), *, daemon: bool | None = None) -> None:
        super().__init__(target=target, args=tuple(args), daemon=daemon)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            super().run()
        except BaseException as error:  # everything, not only the errors a test expects
            self.error = error

    def join_checked(self, timeout: float | None = None) -> None:
        """Wait for the thread; fail if it is still running or if its target raised anything."""
        self.join(timeout)
        if self.is_alive():
            raise AssertionError(f"worker {self.name} still running after {timeout} s")
        if self.error is not None:
            raise AssertionError(f"worker {self.name} crashed: {self.error!r}") from self.error


def join_all(threads: Iterable[RecordingThread], timeout: float | None = None) -> None:
    for thread in threads:
        thread.join_checked(timeout)
