"""The gateway's own nginx configuration (the chart's files/gateway.conf.template, which compose mounts too), run by a
local nginx in front of a test server."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from string import Template

from shopvision.server.limits import GatewayLimits
from shopvision.server.tritonserver import free_ports
from tests.support import ROOT

DEFAULT_LIMITS = GatewayLimits()

TEMPLATE = ROOT / "deploy" / "helm" / "shopvision" / "files" / "gateway.conf.template"


TLS_INCLUDE = "/etc/nginx/gateway-tls/"
"""Where the template includes the gRPC listener's TLS directives from (the chart mounts them there)."""


def render(*, triton_http: str, triton_grpc: str, http_port: int, grpc_port: int,
           limits: GatewayLimits = DEFAULT_LIMITS, tls_folder: Path | None = None) -> str:
    """What the nginx image's envsubst makes of the template (it substitutes only these variables); with a
    ``tls_folder``, the gRPC listener and its way to Triton use TLS, with the directives of its ``*.conf``."""
    text = TEMPLATE.read_text()
    if tls_folder is not None:
        text = text.replace(TLS_INCLUDE, f"{tls_folder}/")
    return Template(text).safe_substitute(
        TRITON_HTTP_ADDRESS=triton_http, TRITON_GRPC_ADDRESS=triton_grpc,
        GATEWAY_HTTP_PORT=str(http_port), GATEWAY_GRPC_PORT=str(grpc_port), **limits.environment(),
        GATEWAY_GRPC_TLS="ssl" if tls_folder else "", GATEWAY_TRITON_GRPC_SCHEME="grpcs" if tls_folder else "grpc")


@dataclass(frozen=True)
class GatewayRequest:
    """One line of the gateway's access log."""

    port: int
    status: int
    request_bytes: int
    reached_triton: bool
    bytes_to_triton: int
    """What nginx sent upstream for this request, body included (0 when it never connected)."""


def main_configuration(prefix: Path, include: Path) -> str:
    """A minimal nginx.conf around the gateway's rendered file, everything nginx writes kept under ``prefix``."""
    # As root, nginx's workers switch to an unprivileged user that could not write the body files here.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    return f"""{user}
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    # What reached Triton of each request, counted by nginx: the limits tests read it (LocalGateway.requests).
    log_format upstream '$server_port $status $request_length $upstream_addr $upstream_bytes_sent';
    access_log {prefix}/access.log upstream;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    include {include};
}}
"""


def nginx_binary() -> str:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise RuntimeError("nginx is not installed (scripts/install-system-deps.sh installs nginx-light)")
    return binary


def nginx_test(prefix: Path, rendered: str) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on a rendered gateway file: whether nginx accepts it, certificates and all."""
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "triton.conf").write_text(rendered)
    (prefix / "nginx.conf").write_text(main_configuration(prefix, prefix / "triton.conf"))
    return subprocess.run([nginx_binary(), "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
                          capture_output=True, text=True, check=False)


class LocalGateway:
    """nginx with the rendered template inside a minimal main configuration, in a private prefix."""

    def __init__(self, prefix: Path, *, triton_http: str, triton_grpc: str,
                 limits: GatewayLimits = DEFAULT_LIMITS, tls_folder: Path | None = None) -> None:
        self.binary = nginx_binary()
        self.prefix = prefix
        self.http_port, self.grpc_port = free_ports(2)
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "triton.conf").write_text(render(triton_http=triton_http, triton_grpc=triton_grpc,
                                                   http_port=self.http_port, grpc_port=self.grpc_port,
                                                   limits=limits, tls_folder=tls_folder))
        (prefix / "nginx.conf").write_text(main_configuration(prefix, prefix / "triton.conf"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def requests(self) -> list[GatewayRequest]:
        """Every request the gateway answered, with what of it reached Triton, in the order they ended."""
        log = self.prefix / "access.log"
        entries = []
        for line in (log.read_text().splitlines() if log.exists() else []):
            port, status, length, upstream, sent = line.split(" ")
            entries.append(GatewayRequest(port=int(port), status=int(status), request_bytes=int(length),
                                          reached_triton=upstream != "-",
                                          bytes_to_triton=sum(int(part) for part in sent.replace(",", " ").replace(
                                              ":", " ").split() if part.isdigit())))
        return entries

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> LocalGateway:
        self._process = subprocess.Popen([self.binary, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self._process.returncode}: {self.error_log()}")
            try:
                for port in (self.http_port, self.grpc_port):
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not listen within 10 s: {self.error_log()}")

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            self._process.wait(timeout=10)
