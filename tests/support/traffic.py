"""Shoppers during a promotion: clients sending one photo non-stop through the ensemble, over real gRPC.

Every client asks for its outputs and judges each answer: what the answer says (which version served it, how
many categories it has) or :class:`Unexpected` for one that must not come. A failed request or an unexpected
answer is a failure; none may happen while a promotion switches what serves. The first client's judged answers
are kept in order in ``sequence`` (answers of concurrent clients complete out of send order)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from shopvision.contract import ENSEMBLE_MODEL, IMAGE_INPUT
from tests.support.servers import RunningServer
from tests.support.threads import RecordingThread, join_all

SETTLE_S = 2.0
"""How long the clients send before and after what the test does, so both sides of a switch are seen."""


class Unexpected(Exception):  # noqa: N818 (an answer, not an error of the test's)
    """An answer that must not come while what serves is switched."""


def answered(result: grpcclient.InferResult) -> None:
    """The judge of a client that only needs an answer."""


@dataclass(frozen=True)
class Asking:
    """What one client asks for, and how it judges the answer."""

    outputs: tuple[str, ...]
    judge: Callable[[grpcclient.InferResult], object] = answered


class Traffic:
    def __init__(self, running: RunningServer, image: bytes, clients: list[Asking]) -> None:
        self._address, self._image = running.grpc_address, image
        self.sequence: list[object] = []
        self.failures: list[str] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [RecordingThread(self._send, args=(asking, index == 0)) for index, asking in enumerate(clients)]

    def _send(self, asking: Asking, first: bool) -> None:
        client = grpcclient.InferenceServerClient(self._address)
        tensor = grpcclient.InferInput(IMAGE_INPUT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[self._image]], dtype=object))
        outputs = [grpcclient.InferRequestedOutput(name) for name in asking.outputs]
        while not self._stop.is_set():
            failure = None
            try:
                answer = asking.judge(client.infer(ENSEMBLE_MODEL, [tensor], outputs=outputs))
            except InferenceServerException as error:
                answer = failure = f"FAILED {error.status()} {error.message()}"
            except Unexpected as unexpected:
                answer = failure = f"unexpected: {unexpected}"
            with self._lock:
                self.requests += 1
                if failure is not None:
                    self.failures.append(failure)
                if first:
                    self.sequence.append(answer)
        client.close()

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        time.sleep(SETTLE_S)
        return self

    def __exit__(self, *exc_info: object) -> None:
        time.sleep(SETTLE_S)
        self._stop.set()
        join_all(self._threads, timeout=60)


def switches(answers: list[object]) -> list[object]:
    """The sequence of distinct consecutive answers (1, 2, 1 means two switches)."""
    return [answer for index, answer in enumerate(answers) if index == 0 or answers[index - 1] != answer]
