"""Fixtures only (what they are built from lives in tests/support/): a synthetic model built once, a real
tritonserver serving it on free ports, the search service over it, a stub Triton, a browser."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shopvision.api.settings import ApiSettings
from shopvision.modelbuild.build import build_model
from tests.support.search_service import ServiceThread, index_photos
from tests.support.servers import API_KEY, ARTIFACTS, TEMPLATE, RunningServer, start_server
from tests.support.stub_triton import StubTriton

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository assembled from the template with synthetic weights (seed 0) built into version 1."""
    repository = tmp_path_factory.mktemp("repo") / "model_repository"
    build_model("synthetic", repository, template=TEMPLATE, seed=0)
    return repository


@pytest.fixture(scope="session")
def stub_triton() -> Iterator[StubTriton]:
    """A KServe v2 stand-in for Triton over real HTTP, for the service's offline tests (support/stub_triton.py)."""
    with StubTriton() as running:
        yield running


@pytest.fixture(scope="session")
def triton(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real tritonserver (nvidia-pytriton wheel, the cpu config) for the whole session."""
    running = start_server(built_repository, tmp_path_factory.mktemp("logs") / "tritonserver.log")
    try:
        yield running
    finally:
        running.server.stop()
    # A client some test left open keeps its HTTP connection, and Triton waits its whole exit timeout for it (30 s
    # of every run, before the test that leaked it was found). Close clients with `with`.
    left_open = re.search(r"Found [1-9]\d* HTTP service connections", running.log_text())
    assert left_open is None, f"a test left an HTTP client connected to the session's server: {left_open.group()}"


@pytest.fixture(scope="session")
def resnet_onnx(built_repository: Path) -> Path:
    return built_repository / "resnet50" / "1" / "model.onnx"


@pytest.fixture(scope="session")
def catalog_photos(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Generated product photos, 24 of them, as a shop's photo folder."""
    from tests.support.images import write_catalog

    return write_catalog(tmp_path_factory.mktemp("shop") / "photos", 24, size=(400, 400), seed=500)


@pytest.fixture(scope="module")
def search_service(triton: RunningServer, catalog_photos: list[Path], tmp_path_factory: pytest.TempPathFactory
                   ) -> Iterator[ServiceThread]:
    """The search service over the session's Triton and a catalog of ``catalog_photos`` (key ``test-key``)."""
    catalog = tmp_path_factory.mktemp("api") / "catalog"
    index_photos(catalog, catalog_photos, triton.grpc_url)
    settings = ApiSettings(triton_url=triton.grpc_url, catalog=str(catalog), api_key=API_KEY)
    with ServiceThread(settings) as service:
        yield service


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """Headless Chromium (Debian `chromium` + `chromedriver`, driven by Selenium), one per test module."""
    from selenium import webdriver  # here: only the page tests pay for importing Selenium
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("the page tests need Debian's chromium and chromium-driver (scripts/install-system-deps.sh)")
    options = Options()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--window-size=1280,1000",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(driver), options=options)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield browser
    finally:
        browser.quit()
