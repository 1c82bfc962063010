"""Locust load test for a shopvision server: a gRPC user and an HTTP user sending real JPEGs.

    locust -f benchmarks/locustfile.py --host http://triton:8000 --grpc-url triton:8001 \\
        --headless -u 16 -r 4 --run-time 2m --csv results/run          # both users, fixed load
    locust -f benchmarks/locustfile.py,benchmarks/locust_step_shape.py --host ... \\
        --headless --step-users 4 --step-seconds 30 --steps 4 --csv results/step   # step load
    locust -f benchmarks/locustfile.py GrpcUser --grpc-url triton:8001 ...          # one protocol
    locust -f benchmarks/locustfile.py SearchApiUser --api-url http://api:8080 ...  # the search service

Works against any URL. Locust needs its own environment (``make locust-venv``): tritonclient's
HTTP half pins geventhttpclient below what Locust requires, so the HTTP user speaks Triton's
binary-tensor HTTP protocol itself and the gRPC user uses ``tritonclient.grpc`` only.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()  # before any channel: gRPC must cooperate with gevent, or one call blocks all users

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `benchmarks` when run as `locust -f FILE`

import numpy as np  # noqa: E402
import tritonclient.grpc as grpcclient  # noqa: E402
from geventhttpclient import URL, HTTPClient  # noqa: E402
from locust import User, constant, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from benchmarks import search_http  # noqa: E402
from benchmarks.kserve_http import INFER_PATH, TOP_K, classes_in, classify_request  # noqa: E402
from shopvision.contract import ENSEMBLE_MODEL, IMAGE_INPUT, PROBABILITIES  # noqa: E402
from shopvision.samples import product_jpeg  # noqa: E402

REQUEST_NAME = f"{ENSEMBLE_MODEL} classify top-{TOP_K}"


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--grpc-url", default="localhost:8001", help="host:port of Triton's gRPC endpoint")
    parser.add_argument("--images", default="", help="folder of JPEGs to send (default: generated product photos)")
    parser.add_argument("--image-size", default="640x480", help="size of generated photos, WIDTHxHEIGHT")
    parser.add_argument("--api-url", default="http://localhost:8080", help="the search service, for SearchApiUser")


@events.init.add_listener
def _load_images(environment: Environment, **_: object) -> None:
    options = environment.parsed_options
    if options is None:
        return
    if options.images:
        images = [path.read_bytes() for path in sorted(Path(options.images).glob("*.jp*g"))]
        if not images:
            raise SystemExit(f"no JPEG files in {options.images}")
    else:
        width, height = (int(side) for side in options.image_size.split("x"))
        images = [product_jpeg(seed, size=(width, height)) for seed in range(16)]
    environment.shopvision_images = images


class _ClosingOnceClient(grpcclient.InferenceServerClient):
    """tritonclient closes its channel again in ``__del__``. Under gevent each close decrements grpc's
    channel count, and the extra decrement deadlocks the garbage collector at exit (Locust then hangs
    after "Shutting down"), so only the first close reaches the channel."""

    _closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            super().close()


class GrpcTransport:
    name = "gRPC"

    def __init__(self, environment: Environment) -> None:
        self._client = _ClosingOnceClient(environment.parsed_options.grpc_url)

    def classify(self, image: bytes) -> int:
        tensor = grpcclient.InferInput(IMAGE_INPUT, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[image]], dtype=object))
        result = self._client.infer(ENSEMBLE_MODEL, [tensor], outputs=[
            grpcclient.InferRequestedOutput(PROBABILITIES, class_count=TOP_K)])
        return result.as_numpy(PROBABILITIES).size

    def close(self) -> None:
        self._client.close()


class HttpTransport:
    """Triton's HTTP protocol with the binary-data extension (see benchmarks/kserve_http.py)."""

    name = "HTTP"

    def __init__(self, environment: Environment) -> None:
        url = URL(environment.host or "http://localhost:8000")
        self._client = HTTPClient.from_url(url, concurrency=1, network_timeout=120)
        self._path = url.path.rstrip("/") + INFER_PATH

    def classify(self, image: bytes) -> int:
        headers, body = classify_request(image)
        response = self._client.post(self._path, body=body, headers=headers)
        answer = response.read()
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {answer[:200].decode(errors='replace')}")
        return classes_in(answer)

    def close(self) -> None:
        self._client.close()


class SearchApiTransport:
    """The search service's multipart uploads (`shopvision api`): /v1/classify and /v1/search."""

    name = "search API"

    def __init__(self, environment: Environment) -> None:
        url = URL(environment.parsed_options.api_url)
        self._client = HTTPClient.from_url(url, concurrency=1, network_timeout=120)
        self._prefix = url.path.rstrip("/")

    def _post(self, request: tuple[str, dict[str, str], bytes]) -> bytes:
        path, headers, body = request
        response = self._client.post(self._prefix + path, body=body, headers=headers)
        answer = response.read()
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {answer[:300].decode(errors='replace')}")
        return answer

    def classify(self, image: bytes) -> int:
        return len(json.loads(self._post(search_http.classify_request(image, top_k=TOP_K)))["predictions"])

    def search(self, image: bytes) -> int:
        return len(json.loads(self._post(search_http.search_request(image)))["results"])

    def close(self) -> None:
        self._client.close()


class TritonUser(User):
    """Classifies one image per request through a transport and reports each call to Locust."""

    abstract = True
    transport_class: type[GrpcTransport] | type[HttpTransport] | type[SearchApiTransport]

    def on_start(self) -> None:
        self._transport = self.transport_class(self.environment)
        self._sent = 0

    def on_stop(self) -> None:
        self._transport.close()

    def classify(self) -> None:
        self._measure(REQUEST_NAME, self._transport.classify, expected=TOP_K)

    def _measure(self, name: str, call: Callable[[bytes], int], *, expected: int | None) -> None:
        images = self.environment.shopvision_images
        image = images[self._sent % len(images)]
        self._sent += 1
        started = time.perf_counter()
        error: Exception | None = None
        try:
            count = call(image)
            if expected is not None and count != expected:
                error = ValueError(f"{count} items in the response, expected {expected}")
        except Exception as caught:  # every failure belongs in Locust's statistics; the user keeps going
            error = caught
        self.environment.events.request.fire(
            request_type=self._transport.name, name=name, context={}, exception=error,
            response_time=(time.perf_counter() - started) * 1000, response_length=len(image))


class GrpcTritonUser(TritonUser):
    abstract = True
    transport_class = GrpcTransport


class HttpTritonUser(TritonUser):
    abstract = True
    transport_class = HttpTransport


class GrpcUser(GrpcTritonUser):
    wait_time = constant(0)

    @task
    def classify_image(self) -> None:
        self.classify()


class HttpUser(HttpTritonUser):
    wait_time = constant(0)

    @task
    def classify_image(self) -> None:
        self.classify()


class SearchServiceUser(TritonUser):
    """A shopper on the search service: mostly look-alike searches, some classifications."""

    abstract = True
    transport_class = SearchApiTransport

    def search(self) -> None:
        self._measure("search API /v1/search k=12", self._transport.search, expected=None)


class SearchApiUser(SearchServiceUser):
    wait_time = constant(0)

    @task(3)
    def search_image(self) -> None:
        self.search()

    @task(1)
    def classify_image(self) -> None:
        self.classify()
