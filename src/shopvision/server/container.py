"""Entry point of the container image: the official image's tritonserver, with shopvision's flags.

Configured by environment variables, so the same image serves under docker, compose and Helm:

=============================== ===============================================================
SHOPVISION_MODEL_REPOSITORY     ``/models`` (baked in), a mounted folder, or ``s3://``/``gs://``
SHOPVISION_MODEL_CONFIG_NAME    ``auto`` (or empty): ``cpu`` when no GPU is visible (resnet50 in
                                the Python backend on the engine the image installs), else each
                                model's ``config.pbtxt`` (the onnxruntime backend on CUDA);
                                ``default`` forces ``config.pbtxt``; ``cpu`` forces ``cpu``
SHOPVISION_ADMIN_KEY            opens the restricted admin APIs to requests carrying it
SHOPVISION_GRPC_TLS_CERT/_KEY   PEM files: gRPC over TLS; ``SHOPVISION_GRPC_TLS_CLIENT_CA``
                                adds mutual TLS
SHOPVISION_EXIT_TIMEOUT_S       seconds in-flight requests get on SIGTERM (default 30)
SHOPVISION_MODEL_CONTROL        ``none`` (default) or ``explicit`` for ``shopvision model promote``
=============================== ===============================================================

Arguments are passed on to tritonserver (e.g. ``--log-verbose=1``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from shopvision.contract import ADMIN_KEY_ENV, CPU_CONFIG_NAME
from shopvision.server.tritonserver import GrpcTls, ServerOptions, triton_arguments

DEFAULT_REPOSITORY = "/models"
AUTO_CONFIG = "auto"
DEFAULT_CONFIG = "default"
"""Each model's own ``config.pbtxt``: Triton takes it when no ``--model-config-name`` is given."""


def gpu_visible(devices: Path = Path("/dev")) -> bool:
    """Whether the NVIDIA container runtime gave this container a GPU (it mounts /dev/nvidia<N>).

    NVIDIA_VISIBLE_DEVICES says nothing here: the official image sets it to ``all`` even on
    hosts without a GPU.
    """
    return any(devices.glob("nvidia[0-9]*"))


def config_name(requested: str | None, *, gpu: bool) -> str | None:
    """The ``--model-config-name`` to serve, or None for ``config.pbtxt``."""
    if requested in (None, "", AUTO_CONFIG):
        return None if gpu else CPU_CONFIG_NAME
    return None if requested == DEFAULT_CONFIG else requested


def options_from_environment(environ: dict[str, str], extra_args: list[str], *, gpu: bool) -> ServerOptions:
    certificate, private_key = environ.get("SHOPVISION_GRPC_TLS_CERT"), environ.get("SHOPVISION_GRPC_TLS_KEY")
    if bool(certificate) != bool(private_key):
        raise SystemExit("SHOPVISION_GRPC_TLS_CERT and SHOPVISION_GRPC_TLS_KEY must be set together")
    client_ca = environ.get("SHOPVISION_GRPC_TLS_CLIENT_CA")
    tls = None
    if certificate and private_key:
        tls = GrpcTls(Path(certificate), Path(private_key), Path(client_ca) if client_ca else None)
    return ServerOptions(
        model_repository=environ.get("SHOPVISION_MODEL_REPOSITORY") or DEFAULT_REPOSITORY,
        host="0.0.0.0",
        config_name=config_name(environ.get("SHOPVISION_MODEL_CONFIG_NAME"), gpu=gpu),
        exit_timeout_s=int(environ.get("SHOPVISION_EXIT_TIMEOUT_S", "30")),
        admin_key=environ.get(ADMIN_KEY_ENV) or None,
        model_control=environ.get("SHOPVISION_MODEL_CONTROL") or "none",
        grpc_tls=tls,
        extra_args=tuple(extra_args),
    )


def main() -> None:
    arguments = triton_arguments(options_from_environment(dict(os.environ), sys.argv[1:], gpu=gpu_visible()))
    # exec: tritonserver becomes the container's main process and gets SIGTERM directly.
    os.execvp("tritonserver", ["tritonserver", *arguments])


if __name__ == "__main__":
    main()
