"""Fixtures: a synthetic model built once and a real tritonserver serving it on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shopvision.serving.build import build_model
from shopvision.serving.repository import assemble
from shopvision.serving.server import LocalTritonServer, ServerOptions, free_ports

TEMPLATE = Path(__file__).resolve().parent.parent / "model_repository"


def copy_repository(target: Path) -> Path:
    """A repository assembled from the template, with no weights built yet."""
    assemble(TEMPLATE, target)
    return target


@pytest.fixture(scope="session")
def built_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repository assembled from the template with synthetic weights (seed 0) built into version 1."""
    repository = tmp_path_factory.mktemp("repo") / "model_repository"
    build_model("synthetic", repository, template=TEMPLATE, seed=0)
    return repository


@dataclass
class RunningServer:
    server: LocalTritonServer
    repository: Path
    log_path: Path

    @property
    def http_url(self) -> str:
        return self.server.http_url

    @property
    def grpc_url(self) -> str:
        return self.server.grpc_url

    @property
    def http_address(self) -> str:
        return self.server.http_url.removeprefix("http://")

    @property
    def grpc_address(self) -> str:
        return self.server.grpc_url.removeprefix("grpc://")

    @property
    def metrics_url(self) -> str:
        return self.server.metrics_url

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(repository: Path, log_path: Path, **options: object) -> RunningServer:
    http, grpc, metrics = free_ports(3)
    server = LocalTritonServer(
        ServerOptions(repository, http_port=http, grpc_port=grpc, metrics_port=metrics, **options),
        log=log_path.open("ab"),
    )
    server.start()
    return RunningServer(server, repository, log_path)


@pytest.fixture(scope="session")
def triton(built_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A real tritonserver (nvidia-pytriton wheel, python_ort config) for the whole session."""
    running = start_server(built_repository, tmp_path_factory.mktemp("logs") / "tritonserver.log")
    try:
        yield running
    finally:
        running.server.stop()


@pytest.fixture(scope="session")
def resnet_onnx(built_repository: Path) -> Path:
    return built_repository / "resnet50" / "1" / "model.onnx"
