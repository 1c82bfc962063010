"""A closed-loop HTTP load generator: the same client for Triton and the naive baseline.

``concurrency`` threads, each with one keep-alive connection, send one image per request until
``requests`` answers are in; the first round (one request per thread) is a warm-up.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

RequestBuilder = Callable[[bytes], tuple[str, dict[str, str], bytes]]
"""image -> (path, headers, body)."""


@dataclass(frozen=True)
class LoadPoint:
    target: str
    concurrency: int
    requests: int
    failures: int
    throughput: float
    p50_ms: float
    p99_ms: float


def closed_loop(target: str, url: str, build: RequestBuilder, images: list[bytes], *, concurrency: int,
                requests: int) -> LoadPoint:
    parts = urlsplit(url)
    latencies: list[float] = []
    window = [float("inf"), 0.0]  # first measured send, last measured answer
    failures = 0
    issued = 0
    lock = threading.Lock()

    def worker(offset: int) -> None:
        nonlocal failures, issued
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
        sent = offset
        warm = False
        while True:
            with lock:
                if warm and issued >= requests:
                    break
                if warm:
                    issued += 1
            path, headers, body = build(images[sent % len(images)])
            started = time.perf_counter()
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            finished = time.perf_counter()
            if warm:
                with lock:
                    latencies.append(finished - started)
                    window[0], window[1] = min(window[0], started), max(window[1], finished)
                    failures += response.status != 200
            warm = True
            sent += concurrency
        connection.close()

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = np.array(latencies) * 1000
    return LoadPoint(target, concurrency, len(latencies), failures, round(len(latencies) / (window[1] - window[0]), 1),
                     round(float(np.percentile(samples, 50)), 1), round(float(np.percentile(samples, 99)), 1))
