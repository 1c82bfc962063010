"""Load, faults and soak against real servers: saturation, load shedding, graceful shutdown, memory."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

import shopvision
from benchmarks.soak import soak
from shopvision.api.settings import ApiSettings
from shopvision.contract import CPU_CONFIG_NAME, ENSEMBLE_MODEL, IMAGE_INPUT, PREPROCESS_MODEL, RESNET_MODEL
from shopvision.repository.configs import ModelConfig, edit_config
from shopvision.samples import product_jpeg
from shopvision.server.tritonserver import GrpcTls
from tests.support.certificates import self_signed_certificate
from tests.support.gateway import LocalGateway
from tests.support.search_service import ServiceThread
from tests.support.servers import RunningServer, start_server
from tests.support.threads import RecordingThread, join_all

pytestmark = pytest.mark.integration
SOAK_SECONDS = 120


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    return [product_jpeg(3000 + seed, size=(320, 240)) for seed in range(16)]


def infer_one(client: grpcclient.InferenceServerClient, image: bytes) -> None:
    tensor = grpcclient.InferInput(IMAGE_INPUT, [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[image]], dtype=object))
    client.infer(ENSEMBLE_MODEL, [tensor], client_timeout=120)


def test_saturation_at_high_concurrency_serves_every_request(triton: RunningServer, images) -> None:
    """64 single-image requests always outstanding (2 cores serve ~30 img/s): all succeed, nothing times out."""
    async def run() -> list:
        async with shopvision.AsyncClient(triton.grpc_url, max_in_flight=64, batch_size=1, timeout_s=120,
                                          retry=shopvision.NO_RETRY) as client:
            return await client.analyze(images * 12, top_k=1, on_error="report")

    results = asyncio.run(run())
    assert len(results) == 192 and all(result.ok for result in results)
    with shopvision.Client(triton.grpc_url) as client:
        assert client.is_ready()


@pytest.fixture(scope="module")
def shedding_server(built_repository: Path, tmp_path_factory) -> RunningServer:
    """The same repository with a queue bound of 2 requests per model, to watch shedding happen."""

    def bound_queue(config: ModelConfig) -> None:
        assert config.dynamic_batching.default_queue_policy.max_queue_size > 2
        config.dynamic_batching.default_queue_policy.max_queue_size = 2

    repository = tmp_path_factory.mktemp("shedding") / "model_repository"
    shutil.copytree(built_repository, repository, symlinks=True)
    for config in [repository / PREPROCESS_MODEL / "config.pbtxt",
                   repository / RESNET_MODEL / "configs" / f"{CPU_CONFIG_NAME}.pbtxt"]:
        edit_config(config, bound_queue)
    running = start_server(repository, tmp_path_factory.mktemp("logs") / "shedding.log")
    yield running
    running.server.stop()


def test_a_full_queue_sheds_load_at_once_with_a_clear_error(shedding_server: RunningServer, images) -> None:
    outcomes: list[str] = []
    lock = threading.Lock()

    def send(index: int) -> None:
        client = grpcclient.InferenceServerClient(shedding_server.grpc_address)
        started = time.monotonic()
        try:
            infer_one(client, images[index % len(images)])
            outcome = "ok"
        except InferenceServerException as error:
            outcome = f"{error.status()} {error.message()} after {time.monotonic() - started:.1f}s"
        finally:
            client.close()
        with lock:
            outcomes.append(outcome)

    threads = [RecordingThread(send, args=(index,)) for index in range(40)]
    for thread in threads:
        thread.start()
    join_all(threads)
    refused = [outcome for outcome in outcomes if outcome != "ok"]
    assert "ok" in outcomes and refused, outcomes
    for outcome in refused:
        assert outcome.startswith("StatusCode.UNAVAILABLE") and "Exceeds maximum queue size" in outcome, outcome
    with shopvision.Client(shedding_server.grpc_url) as client:
        assert client.is_ready()
        assert client.embed(images[:2]).shape == (2, 2048)  # and it serves normally once the burst is gone


def test_the_sdk_retries_shed_requests_until_they_are_served(shedding_server: RunningServer, images) -> None:
    async def run() -> np.ndarray:
        async with shopvision.AsyncClient(shedding_server.grpc_url, max_in_flight=24, batch_size=1,
                                          retry=shopvision.RetryPolicy(attempts=30, initial_backoff_s=0.2)) as client:
            return await client.embed(images * 2)

    served = asyncio.run(run())
    # Each row is its own image's embedding, in the order asked, however often its request was shed and retried.
    with shopvision.Client(shedding_server.grpc_url, max_in_flight=1) as client:
        one_at_a_time = client.embed(images)
    np.testing.assert_allclose(served, np.concatenate([one_at_a_time, one_at_a_time]), atol=1e-4)


def test_sigterm_finishes_started_work_refuses_the_rest_clearly_and_exits(built_repository: Path, tmp_path,
                                                                           images) -> None:
    """Under load, SIGTERM: work that reached the models finishes; an ensemble request caught between its
    steps is refused with a retryable UNAVAILABLE "Server is stopping" (Triton stops every scheduler at
    once), and a call still open when the gRPC endpoint closes is CANCELLED; never an internal error or a
    hang; the process exits 0 within its exit timeout. Deployments drain before SIGTERM (the Helm chart's
    preStop) so that nothing is caught in between."""
    running = start_server(built_repository, tmp_path / "sigterm.log")
    finished: list[tuple[float, str]] = []
    lock = threading.Lock()
    stop_sending = threading.Event()
    backoff_s = shopvision.RetryPolicy().initial_backoff_s

    def worker() -> None:
        client = grpcclient.InferenceServerClient(running.grpc_address)
        while not stop_sending.is_set():
            sent = time.monotonic()
            try:
                infer_one(client, images[0])
                outcome = "ok"
            except InferenceServerException as error:
                outcome = f"{error.status()} {error.message()}"
                # Back off like the SDK: Triton counts each refused ensemble request as in flight, and
                # clients retrying at once keep that count above zero until the exit timeout.
                stop_sending.wait(backoff_s)
            with lock:
                finished.append((sent, outcome))
        client.close()

    threads = [RecordingThread(worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    time.sleep(5)  # saturated: 8 requests in the server at any time
    signalled = time.monotonic()
    exit_code = running.server.stop()
    stopped_after = time.monotonic() - signalled
    stop_sending.set()
    join_all(threads, timeout=30)
    earlier = [outcome for sent, outcome in finished if sent < signalled - 2]
    assert len(earlier) >= 16 and set(earlier) == {"ok"}, earlier
    refused = {outcome for _, outcome in finished if outcome != "ok"}
    # Refusals Triton gives while stopping; the SDK retries each of them (tests/test_client_unit.py).
    transient = ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED", "has no available versions")
    assert all(any(marker in outcome for marker in transient) for outcome in refused), refused
    assert exit_code == 0 and stopped_after < running.server.options.exit_timeout_s, (
        f"exit {exit_code} after {stopped_after:.1f} s; server log:\n{running.log_text()[-3000:]}")


@pytest.mark.slow
def test_soak_at_saturation_without_errors_or_memory_growth(built_repository: Path, tmp_path: Path) -> None:
    """On a server of its own: the session's server carries whatever earlier tests left in its memory, and its
    growth would be judged against a level those tests set."""
    running = start_server(built_repository, tmp_path / "soak.log")
    try:
        result = soak(running.grpc_url, running.server.pid, seconds=SOAK_SECONDS, concurrency=8)
    finally:
        running.server.stop()
    print(f"soak: {result}")
    assert result.errors == 0 and result.images > 100
    assert result.memory_flat, result.rss_samples_mb


def test_grpc_over_tls_serves_clients_that_trust_the_certificate_only(built_repository: Path, tmp_path,
                                                                       images) -> None:
    certificate, key = self_signed_certificate(tmp_path)
    running = start_server(built_repository, tmp_path / "tls.log", grpc_tls=GrpcTls(certificate, key))
    try:
        secure_url = f"grpcs://{running.grpc_address}"
        with shopvision.Client(secure_url, tls=shopvision.Tls(ca_file=str(certificate))) as client:
            assert client.embed(images[:2]).shape == (2, 2048)
        with shopvision.Client(running.grpc_url, retry=shopvision.NO_RETRY, timeout_s=5) as plaintext, \
                pytest.raises(shopvision.ServerUnavailableError):
            plaintext.embed(images[:1])
        # The search service, as the chart runs it with tls.grpc on: TLS to Triton's own port, the CA given.
        settings = ApiSettings.from_environment({"SHOPVISION_URL": secure_url,
                                                 "SHOPVISION_TRITON_CA": str(certificate)})
        with ServiceThread(settings) as service, service.client() as http:
            answer = http.post("/v1/classify", files={"image": ("p.jpg", images[0])})
            assert answer.status_code == 200, answer.text
        # The chart's gateway with tls.grpc on: TLS from the client to it, and from it to Triton.
        directives = tmp_path / "gateway-tls" / "tls.conf"
        directives.parent.mkdir()
        directives.write_text(f"ssl_certificate {certificate};\nssl_certificate_key {key};\n")
        with LocalGateway(tmp_path / "gateway", triton_http=running.http_address, triton_grpc=running.grpc_address,
                          tls_folder=tmp_path / "gateway-tls") as gateway:
            with shopvision.Client(f"grpcs://{gateway.grpc_address}", tls=shopvision.Tls(ca_file=str(certificate))) \
                    as client:
                assert client.embed(images[:2]).shape == (2, 2048)
            with shopvision.Client(f"grpc://{gateway.grpc_address}", retry=shopvision.NO_RETRY, timeout_s=5) as plain, \
                    pytest.raises(shopvision.ServerUnavailableError):
                plain.embed(images[:1])
    finally:
        running.server.stop()
