"""Run a real tritonserver locally: the binary inside the ``nvidia-pytriton`` wheel (CPU only).

That build has the Python backend and no other. It serves the repository's ``cpu`` configuration
(``--model-config-name=cpu``), the one the official container serves on a CPU node: resnet50 runs in
the Python backend with an inference engine installed from PyPI. Used by ``shopvision serve``, the
tests and the benchmarks.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from shopvision._files import cache_dir
from shopvision.contract import ADMIN_KEY_HEADER, CPU_CONFIG_NAME
from shopvision.errors import InvalidArgumentError, LocalServerError

_STUB = "triton_python_backend_stub"
RESTRICTED_APIS = ("model-repository", "shared-memory", "trace", "logging")
"""Closed unless the request carries the admin key. Inference, health, metadata, config and
statistics stay open: they are what clients, probes and dashboards use."""


@dataclass(frozen=True)
class ServerOptions:
    model_repository: Path | str
    """A folder, or an object-store URL Triton reads itself (s3://, gs://, as://)."""
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    host: str = "127.0.0.1"
    config_name: str | None = CPU_CONFIG_NAME
    """``--model-config-name``; None serves each model's ``config.pbtxt`` (the GPU configuration)."""
    exit_timeout_s: int = 30
    log_verbose: int = 0
    admin_key: str | None = None
    """Key for RESTRICTED_APIS; None closes them with a random key nobody knows. Triton takes it only on
    its command line, where local users can read it (docs/security.md)."""
    grpc_tls: GrpcTls | None = None
    model_control: str = "none"
    """``none`` (production default: the repository cannot change under a running server) or
    ``explicit`` (``shopvision model promote``/``rollback`` load versions through the admin API)."""
    extra_args: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class GrpcTls:
    """PEM files for gRPC over TLS; with ``client_ca`` clients must present certificates (mutual TLS).

    Triton's HTTP endpoint has no TLS of its own: terminate HTTPS at an ingress or proxy.
    """

    certificate: Path
    private_key: Path
    client_ca: Path | None = None


def triton_arguments(options: ServerOptions) -> list[str]:
    """Every flag shopvision runs tritonserver with, for the wheel's binary and the official container alike."""
    arguments = [
        f"--model-repository={options.model_repository}",
        f"--http-address={options.host}", f"--http-port={options.http_port}",
        f"--grpc-address={options.host}", f"--grpc-port={options.grpc_port}",
        f"--metrics-address={options.host}", f"--metrics-port={options.metrics_port}",
        f"--exit-timeout-secs={options.exit_timeout_s}",
        f"--log-verbose={options.log_verbose}",
        f"--model-control-mode={options.model_control}",
        "--strict-readiness=true",
        # p50/p90/p99 per model (nv_inference_*_summary_us) for dashboards and alerts.
        "--metrics-config=summary_latencies=true",
        # gRPC request objects kept for reuse keep the capacity of the largest request they held, never
        # given back: without the pool the server holds less after requests at the size limit
        # (benchmarks/results/limits), and a 100 ms inference does not miss the reuse.
        "--grpc-infer-allocation-pool-size=0",
    ]
    if options.model_control == "explicit":
        arguments.append("--load-model=*")
    elif options.model_control != "none":
        raise InvalidArgumentError(f"model_control must be none or explicit, not {options.model_control!r}")
    if options.config_name:
        arguments.append(f"--model-config-name={options.config_name}")
    restriction = f"{','.join(RESTRICTED_APIS)}:{ADMIN_KEY_HEADER}={options.admin_key or secrets.token_urlsafe(32)}"
    arguments += [f"--http-restricted-api={restriction}", f"--grpc-restricted-protocol={restriction}"]
    if options.grpc_tls is not None:
        tls = options.grpc_tls
        arguments += ["--grpc-use-ssl=true", f"--grpc-server-cert={tls.certificate}",
                      f"--grpc-server-key={tls.private_key}"]
        if tls.client_ca is not None:
            arguments += ["--grpc-use-ssl-mutual=true", f"--grpc-root-cert={tls.client_ca}"]
    return [*arguments, *options.extra_args]


@dataclass(frozen=True)
class TritonInstallation:
    """The pieces of the nvidia-pytriton wheel that make a standalone tritonserver."""

    binary: Path
    python_backend: Path
    stub: Path
    libraries: Path

    @classmethod
    def from_wheel(cls) -> TritonInstallation:
        try:
            import pytriton
        except ImportError as error:
            raise LocalServerError(
                "no tritonserver found: install the server extra (`pip install 'shopvision[server]'`), "
                "or run the official nvcr.io/nvidia/tritonserver container (see docs/serving-modes.md)"
            ) from error
        root = Path(pytriton.__file__).parent / "tritonserver"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        installation = cls(
            binary=root / "bin" / "tritonserver",
            python_backend=root / "backends" / "python",
            stub=root / "python_backend_stubs" / version / _STUB,
            libraries=Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs",
        )
        missing = [str(path) for path in vars(installation).values() if not path.exists()]
        if missing:
            raise LocalServerError(f"the nvidia-pytriton wheel is incomplete for Python {version}: missing {missing}")
        return installation

    def backend_directory(self, root: Path) -> Path:
        """``root/python``: the backend library, its utils and the stub for this Python."""
        _link_all(root / "python", [*self.python_backend.glob("*.so"), *self.python_backend.glob("*.py"), self.stub])
        return root

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(self.libraries), env.get("LD_LIBRARY_PATH")]))
        # The stub embeds Python and finds numpy/onnxruntime/Pillow/shopvision through the
        # `python3` it sees first on PATH: make that this interpreter's environment.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env


def _link_all(directory: Path, sources: list[Path]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for source in sources:
        name = source.name
        link = directory / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)


_HANDED_OUT_FILE = "free-ports.json"
"""In the user's cache directory (``shopvision._files.cache_dir``): theirs alone, unlike the shared /tmp."""
_HANDED_OUT_FOR_S = 120.0
"""Long enough for a server handed its ports to bind them (loading its models first)."""


def free_ports(count: int) -> list[int]:
    """Ports on 127.0.0.1 that were free a moment ago and that none of the user's processes was handed in the last
    two minutes (for tests and benchmarks).

    A port is free until the server it is for binds it, seconds later: processes that start servers side by side
    (the suite's workers) would otherwise be handed the same one, and a server could find another's port taken or,
    worse, answer its readiness probe with the other server. The handed-out ports are kept in a file under the
    user's cache directory, read and written under a lock; where that file cannot be used, ports are only free."""
    path = cache_dir(_HANDED_OUT_FILE)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        registry = path.open("a+")
    except OSError:
        return _bind_free_ports(count, taken=set())
    with registry:
        fcntl.flock(registry, fcntl.LOCK_EX)  # released when the file closes
        registry.seek(0)
        now = time.time()
        try:
            recent = {int(port): when for port, when in json.loads(registry.read() or "{}").items()
                      if now - when < _HANDED_OUT_FOR_S}
        except (ValueError, AttributeError, TypeError):  # not the record this writes: start it afresh
            recent = {}
        ports = _bind_free_ports(count, taken=set(recent))
        recent.update(dict.fromkeys(ports, now))
        registry.seek(0)
        registry.truncate()
        registry.write(json.dumps(recent))
    return ports


def _bind_free_ports(count: int, *, taken: set[int]) -> list[int]:
    """``count`` ports the kernel says are free, none in ``taken`` (each held bound until all are found, so that the
    kernel never hands one out twice)."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in taken:
                ports.append(port)
        return ports
    finally:
        for sock in sockets:
            sock.close()


class LocalTritonServer:
    """A tritonserver child process; a context manager that stops it gracefully."""

    def __init__(self, options: ServerOptions, *, log: IO[bytes] | None = None,
                 installation: TritonInstallation | None = None, work_dir: Path | None = None) -> None:
        self.options = options
        self._installation = installation or TritonInstallation.from_wheel()
        self._log = log
        self._work_dir = work_dir or Path(os.environ.get("SHOPVISION_CACHE_DIR", Path.home() / ".cache" / "shopvision"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """Process id of tritonserver (its backend stubs are its children), while it runs."""
        return None if self._process is None else self._process.pid

    @property
    def http_url(self) -> str:
        return f"http://{self.options.host}:{self.options.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.options.host}:{self.options.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.options.host}:{self.options.metrics_port}/metrics"

    def command(self) -> list[str]:
        backend_dir = self._installation.backend_directory(self._work_dir / "triton-backends")
        return [str(self._installation.binary), f"--backend-directory={backend_dir}", *triton_arguments(self.options)]

    def start(self, *, ready_timeout_s: float = 180.0) -> None:
        if self._process is not None and self._process.poll() is None:
            raise LocalServerError("the server is already running")
        if self.options.config_name is None:
            raise LocalServerError(
                "each model's config.pbtxt (the GPU configuration) needs Triton's onnxruntime backend, which only the "
                f"official container ships; this tritonserver serves --model-config-name={CPU_CONFIG_NAME}")
        self._process = subprocess.Popen(
            self.command(), env=self._installation.environment(),
            stdout=self._log, stderr=subprocess.STDOUT if self._log else None,
            start_new_session=True,
        )
        self.wait_until_ready(timeout_s=ready_timeout_s)

    def wait_until_ready(self, *, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                code = None if self._process is None else self._process.returncode
                raise LocalServerError(f"tritonserver exited with status {code} before becoming ready (see its log)")
            if self.is_ready():
                return
            time.sleep(0.25)
        raise LocalServerError(f"tritonserver was not ready after {timeout_s:.0f} s (see its log)")

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self, *, timeout_s: float | None = None) -> int | None:
        """SIGTERM (Triton finishes in-flight requests), then SIGKILL after the exit timeout."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=timeout_s or self.options.exit_timeout_s + 10)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        return self._process.returncode

    def kill(self) -> None:
        """Abrupt death of the whole process group (server and backend stubs), as in a crash."""
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()

    def wait(self) -> int:
        if self._process is None:
            raise LocalServerError("the server was never started")
        return self._process.wait()

    def __enter__(self) -> LocalTritonServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
