"""The SDK and CLI against the real server, over both transports."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import shopvision
from shopvision.samples import encode, product_image, product_jpeg
from shopvision.server.tritonserver import free_ports
from tests.support.images import write_catalog
from tests.support.servers import RunningServer, start_server
from tests.support.threads import RecordingThread

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *(ROOT / "docs" / name for name in ("client.md", "catalog.md", "search-service.md"))]


@pytest.fixture(scope="module")
def many_images() -> list[bytes]:
    return [product_jpeg(1000 + i, size=(320, 240)) for i in range(150)]


@pytest.fixture(scope="module")
def expected(triton: RunningServer, many_images: list[bytes]) -> np.ndarray:
    with shopvision.Client(triton.grpc_url, batch_size=1) as client:
        return client.embed(many_images[:20])


def url(triton: RunningServer, protocol: str) -> str:
    return triton.grpc_url if protocol == "grpc" else triton.http_url


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sync_client_handles_150_images_in_one_call(triton, many_images, expected, protocol) -> None:
    with shopvision.Client(url(triton, protocol), max_in_flight=3) as client:
        results = client.analyze(many_images, top_k=3)
    assert len(results) == 150 and all(result.ok for result in results)
    vectors = np.stack([result.embedding for result in results])
    np.testing.assert_allclose(vectors[:20], expected, atol=1e-4)  # input order kept
    assert all(len(result.predictions) == 3 for result in results)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_async_client_gives_the_same_answers(triton, many_images, expected, protocol) -> None:
    async def run() -> np.ndarray:
        async with shopvision.AsyncClient(url(triton, protocol), max_in_flight=4, batch_size=3) as client:
            await client.wait_until_ready(timeout_s=10)
            return await client.embed(many_images[:20])

    np.testing.assert_allclose(asyncio.run(run()), expected, atol=1e-4)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_mixed_good_and_bad_images(triton, many_images, expected, protocol) -> None:
    batch = many_images[:10]
    batch[3] = b"GIF89a-but-not-really"
    batch[7] = many_images[7][:500]
    with shopvision.Client(url(triton, protocol)) as client:
        results = client.analyze(batch, on_error="report")
        with pytest.raises(shopvision.InvalidImageError) as raised:
            client.classify(batch)
    assert [i for i, result in enumerate(results) if not result.ok] == [3, 7]
    assert "truncated" in results[7].error.reason.lower()
    assert raised.value.index in (3, 7)
    # The good images' answers are their own, as if the bad ones had not been there.
    good = [position for position in range(10) if position not in (3, 7)]
    np.testing.assert_allclose(np.stack([results[position].vector for position in good]), expected[good], atol=1e-4)


def test_synthetic_weights_warning_and_provenance(triton) -> None:
    with shopvision.Client(triton.http_url) as client, pytest.warns(shopvision.SyntheticWeightsWarning):
        info = client.info()
    assert info.provenance.synthetic and info.max_batch_size == 32 and info.server_version == "2.51.0"


def test_unreachable_server_is_a_clear_error() -> None:
    (port,) = free_ports(1)
    retry = shopvision.RetryPolicy(attempts=2, initial_backoff_s=0.01)
    with shopvision.Client(f"grpc://127.0.0.1:{port}", retry=retry) as client, \
            pytest.raises(shopvision.ServerUnavailableError, match="unavailable"):
        client.embed([b"x"])


def test_restart_in_the_middle_of_a_long_embed_run_loses_nothing(built_repository, many_images, expected,
                                                                  tmp_path) -> None:
    running = start_server(built_repository, tmp_path / "restart.log")
    restarted = threading.Event()
    progress_at_restart: list[int] = []
    restarter = RecordingThread(lambda: (running.server.kill(), running.server.start()), daemon=True)

    def restart_once(done: int, total: int) -> None:
        if done >= 40 and not restarted.is_set():
            restarted.set()
            progress_at_restart.append(done)
            restarter.start()

    try:
        with shopvision.Client(running.grpc_url, batch_size=8, max_in_flight=2,
                               retry=shopvision.RetryPolicy(attempts=30, max_backoff_s=1.0)) as client:
            vectors = client.embed(many_images, progress=restart_once)
        assert restarted.is_set() and progress_at_restart[0] < 150
        restarter.join_checked(timeout=120)
        assert vectors.shape == (150, 2048)
        np.testing.assert_allclose(vectors[:20], expected, atol=1e-4)
        with shopvision.Client(running.grpc_url) as client:
            np.testing.assert_allclose(client.embed(many_images[100:110]), vectors[100:110], atol=1e-4)
    finally:
        running.server.stop()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_request_refused_as_a_whole_is_not_blamed_on_its_images(triton, many_images, protocol) -> None:
    # Batches of 64 are over the ensemble's max_batch_size: Triton refuses the request, not an image in it,
    # so the client must neither report 64 invalid images nor resend them one by one.
    with shopvision.Client(url(triton, protocol), batch_size=64) as client, \
            pytest.raises(shopvision.RequestRejectedError, match="batch-size must be <= 32"):
        client.analyze(many_images[:64], on_error="report")


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shopvision.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


def test_cli_classify_table_json_and_failures(triton, tmp_path) -> None:
    catalog = write_catalog(tmp_path / "catalog", 3, size=(320, 240))
    (tmp_path / "catalog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    table = run_cli("classify", str(catalog[0]), "--top-k", "2", "--url", triton.http_url)
    assert table.returncode == 0 and table.stdout.startswith(str(catalog[0])) and "1. " in table.stdout
    lines = run_cli("classify", str(tmp_path / "catalog"), "--json", "--url", triton.grpc_url)
    assert lines.returncode == 1
    records = [json.loads(line) for line in lines.stdout.splitlines()]
    assert len(records) == 4 and sum("error" in record for record in records) == 1
    assert "broken.jpg: FAILED" in lines.stderr and "1 of 4 images failed" in lines.stderr


def test_cli_embed_writes_each_files_vector_in_the_file_lists_order(triton, tmp_path) -> None:
    catalog = write_catalog(tmp_path / "catalog", 5, size=(320, 240))
    (tmp_path / "catalog" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = run_cli("embed", str(tmp_path / "catalog"), "--out", str(tmp_path / "vectors.npy"), "--json",
                     "--url", triton.grpc_url)
    assert result.returncode == 1 and "broken.jpg: FAILED" in result.stderr, result.stderr
    assert json.loads(result.stdout) == {"embeddings": str(tmp_path / "vectors.npy"),
                                         "files": str(tmp_path / "vectors.files.txt"), "embedded": 5, "failed": 1}
    vectors = np.load(tmp_path / "vectors.npy")
    files = (tmp_path / "vectors.files.txt").read_text().splitlines()
    assert vectors.shape == (5, 2048) and vectors.dtype == np.float32 and files == [str(p) for p in catalog]
    # Row i is file i's embedding: the SDK's, one file at a time (a shuffled or shifted row fails here).
    with shopvision.Client(triton.grpc_url) as client:
        expected = np.concatenate([client.embed([path]) for path in files])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)


def test_cli_health_and_info(triton) -> None:
    health = run_cli("health", "--url", triton.http_url)
    assert health.returncode == 0 and health.stdout.strip() == f"{triton.http_url}: ready"
    health = run_cli("health", "--json", "--url", triton.http_url)
    assert health.returncode == 0 and json.loads(health.stdout) == {"url": triton.http_url, "ready": True}
    info = run_cli("info", "--json", "--url", triton.grpc_url)
    assert json.loads(info.stdout)["provenance"]["synthetic"] is True
    down = run_cli("health", "--url", "grpc://127.0.0.1:1")
    assert down.returncode == 3


def readme_blocks(language: str) -> list[str]:
    """The code blocks of the README and of the docs that show the SDK and the CLI."""
    return [block for document in DOCUMENTS
            for block in re.findall(rf"```{language}\n(.*?)```", document.read_text(), flags=re.DOTALL)]


def readme_workspace(tmp_path: Path) -> Path:
    (tmp_path / "shoe.jpg").write_bytes(product_jpeg(1))
    (tmp_path / "bag.png").write_bytes(encode(product_image(2), "PNG"))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    write_catalog(tmp_path / "catalog", 3, size=(320, 240))
    photos = write_catalog(tmp_path / "photos", 8, size=(320, 240))
    (tmp_path / "query.jpg").write_bytes(photos[3].read_bytes())
    (tmp_path / "products.csv").write_text("product_id,image_path,title\n" + "".join(
        f"sku-{123 + index},{path.relative_to(tmp_path)},Product {index}\n" for index, path in enumerate(photos)))
    return tmp_path


def against(triton: RunningServer, text: str) -> str:
    return text.replace("localhost:8001", triton.grpc_address).replace("localhost:8000", triton.http_address)


@pytest.mark.parametrize("block", range(len(readme_blocks("python"))))
def test_readme_python_examples_run(triton, tmp_path, block) -> None:
    code = against(triton, readme_blocks("python")[block])
    result = subprocess.run([sys.executable, "-c", code], cwd=readme_workspace(tmp_path), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def cli_blocks() -> list[str]:
    """The blocks that run against the session's server: the categories ones need a head (test_categories_served)."""
    return [block for block in readme_blocks("bash") if ("shopvision classify" in block or "shopvision index" in block)
            and "shopvision categories" not in block]


@pytest.mark.parametrize("block", range(len(cli_blocks())))
def test_readme_cli_examples_run(triton, tmp_path, block) -> None:
    workspace = readme_workspace(tmp_path)
    for line in cli_blocks()[block].splitlines():
        command = against(triton, line.split("  #")[0].strip())
        if not command.startswith("shopvision "):
            continue
        result = subprocess.run(command, shell=True, cwd=workspace, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "SHOPVISION_URL": triton.grpc_url,
                                     "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
        assert result.returncode == 0, f"{command}: {result.stderr}"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_call_slower_than_its_timeout_raises_request_timeout(triton, many_images, protocol) -> None:
    with shopvision.Client(url(triton, protocol), timeout_s=0.001) as client, \
            pytest.raises(shopvision.RequestTimeoutError):
        client.embed(many_images[:32])
