"""Real tritonservers for the tests: the template, a repository assembled from it, a server on free ports."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shopvision.repository.files import assemble
from shopvision.server.tritonserver import LocalTritonServer, ServerOptions, free_ports
from tests.support import ROOT

TEMPLATE = ROOT / "model_repository"
API_KEY = "test-key"
ARTIFACTS = ROOT / "build" / "test-artifacts"
"""Screenshots of the page tests (kept by CI as artifacts)."""


def copy_repository(target: Path) -> Path:
    """A repository assembled from the template, with no weights built yet."""
    assemble(TEMPLATE, target)
    return target


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
