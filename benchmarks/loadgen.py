"""A closed-loop load generator: the same client loop for Triton (HTTP or gRPC) and the naive baseline.

``concurrency`` threads, each with its own connection, send one image per request until ``requests``
answers are in; the first round (one request per thread) is a warm-up.
"""

from __future__ import annotations

import http.client
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np

from shopvision.contract import ENSEMBLE_MODEL, IMAGE_INPUT, PROBABILITIES

RequestBuilder = Callable[[bytes], tuple[str, dict[str, str], bytes]]
"""image -> (path, headers, body)."""
Send = Callable[[bytes], bool]
"""Sends one image and waits for the whole answer: True when it succeeded."""
Connect = Callable[[], tuple[Send, Callable[[], None]]]
"""Opens one worker's connection: its send, and what closes it."""
TOP_K = 5


@dataclass(frozen=True)
class LoadPoint:
    target: str
    concurrency: int
    requests: int
    failures: int
    throughput: float
    p50_ms: float
    p99_ms: float


def http_connection(url: str, build: RequestBuilder) -> Connect:
    """A keep-alive HTTP/1.1 connection per worker, posting what ``build`` makes of each image."""
    parts = urlsplit(url)

    def connect() -> tuple[Send, Callable[[], None]]:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)

        def send(image: bytes) -> bool:
            path, headers, body = build(image)
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status == 200

        return send, connection.close
    return connect


def triton_grpc_connection(address: str, *, top_k: int = TOP_K) -> Connect:
    """A gRPC channel per worker to Triton's ensemble, asking for the top ``top_k`` classes (the classification
    extension), as the HTTP client does: the same answer on the wire as the naive server's.

    Raw protobuf on grpcio, each image's request built once: tritonclient's own gRPC client spends several
    milliseconds of Python per call, which on a small machine is CPU taken from the server it measures."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    built: dict[bytes, service_pb2.ModelInferRequest] = {}

    def request_for(image: bytes) -> service_pb2.ModelInferRequest:
        request = service_pb2.ModelInferRequest(model_name=ENSEMBLE_MODEL)
        request.inputs.add(name=IMAGE_INPUT, datatype="BYTES", shape=[1, 1])
        request.outputs.add(name=PROBABILITIES).parameters["classification"].int64_param = top_k
        request.raw_input_contents.append(struct.pack("<I", len(image)) + image)
        return request

    def connect() -> tuple[Send, Callable[[], None]]:
        channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", -1),
                                                          ("grpc.max_receive_message_length", -1)])
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def send(image: bytes) -> bool:
            request = built.get(image) or built.setdefault(image, request_for(image))
            try:
                stub.ModelInfer(request, timeout=300)
            except grpc.RpcError:
                return False
            return True

        return send, channel.close
    return connect


def closed_loop(target: str, connect: Connect, images: list[bytes], *, concurrency: int,
                requests: int) -> LoadPoint:
    latencies: list[float] = []
    window = [float("inf"), 0.0]  # first measured send, last measured answer
    failures = 0
    issued = 0
    lock = threading.Lock()

    def worker(offset: int) -> None:
        nonlocal failures, issued
        send, close = connect()
        sent = offset
        warm = False
        try:
            while True:
                with lock:
                    if warm and issued >= requests:
                        break
                    if warm:
                        issued += 1
                started = time.perf_counter()
                succeeded = send(images[sent % len(images)])
                finished = time.perf_counter()
                if warm:
                    with lock:
                        latencies.append(finished - started)
                        window[0], window[1] = min(window[0], started), max(window[1], finished)
                        failures += not succeeded
                warm = True
                sent += concurrency
        finally:
            close()

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = np.array(latencies) * 1000
    return LoadPoint(target, concurrency, len(latencies), failures, round(len(latencies) / (window[1] - window[0]), 1),
                     round(float(np.percentile(samples, 50)), 1), round(float(np.percentile(samples, 99)), 1))
