"""``shopvision serve``: run tritonserver locally on this machine's CPUs."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from shopvision.cli._common import EXIT_FAILED, EXIT_OK, add_repository_argument
from shopvision.cli.api import add_api_arguments, serve_api
from shopvision.contract import CPU_CONFIG_NAME, MODEL_FILE, RESNET_MODEL


class _Terminated(Exception):
    pass


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser(
        "serve", help="run tritonserver (from the nvidia-pytriton wheel) on this machine",
        description="Start tritonserver with the model repository, wait until it is ready, and keep it "
                    "running until Ctrl-C or SIGTERM (in-flight requests are finished first).",
        epilog="example:\n  shopvision serve --http-port 8000 --grpc-port 8001 --metrics-port 8002",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_repository_argument(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for all)")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--config-name", default=CPU_CONFIG_NAME,
                       help=f"Triton --model-config-name (default {CPU_CONFIG_NAME}: resnet50 in the Python backend "
                            "on an engine from PyPI, what the container serves on a CPU node)")
    serve.add_argument("--log-verbose", type=int, default=0)
    serve.add_argument("--model-control", choices=["none", "explicit"], default="none",
                       help="explicit lets `shopvision model promote/rollback` swap versions live "
                            "(through the admin API, so set $SHOPVISION_ADMIN_KEY)")
    serve.add_argument("--api", action="store_true",
                       help="also serve the visual search API and page (`shopvision api`) once Triton is ready")
    add_api_arguments(serve, prefix="api-")
    serve.set_defaults(handler=run_serve)


def describe_runner(repository: Path, config_name: str) -> str:
    """What runs resnet50 under ``config_name``: the backend, and for the Python backend its engine."""
    from shopvision.contract import ENGINE_PARAMETER, ENGINES
    from shopvision.repository.configs import read_config

    path = repository / RESNET_MODEL / "configs" / f"{config_name}.pbtxt"
    config = read_config(path if path.exists() else repository / RESNET_MODEL / "config.pbtxt")
    if config.backend != "python":
        return f"Triton's {config.backend} backend"
    engine = config.parameters[ENGINE_PARAMETER].string_value if ENGINE_PARAMETER in config.parameters else ENGINES[0]
    return f"Python backend, {engine}"


def run_serve(args: argparse.Namespace) -> int:
    from shopvision.contract import ADMIN_KEY_ENV, ADMIN_KEY_HEADER
    from shopvision.repository.files import default_repository
    from shopvision.repository.records import read_weights_provenance
    from shopvision.server.tritonserver import (
        RESTRICTED_APIS,
        LocalTritonServer,
        ServerOptions,
        TritonInstallation,
    )

    repository = (args.repository or default_repository()).resolve()
    versions = sorted((repository / RESNET_MODEL).glob(f"[0-9]*/{MODEL_FILE}"))
    if not versions:
        print(f"no model built in {repository}: run `shopvision model build` first", file=sys.stderr)
        return EXIT_FAILED
    admin_key = os.environ.get(ADMIN_KEY_ENV) or None
    installation = TritonInstallation.from_wheel()
    options = ServerOptions(
        model_repository=repository, host=args.host, http_port=args.http_port, grpc_port=args.grpc_port,
        metrics_port=args.metrics_port, config_name=args.config_name, log_verbose=args.log_verbose,
        admin_key=admin_key, model_control=args.model_control,
    )
    server = LocalTritonServer(options, installation=installation)

    def terminate(signum: int, frame: object) -> None:
        raise _Terminated

    signal.signal(signal.SIGTERM, terminate)
    try:
        server.start()
        for model_file in versions:
            provenance = read_weights_provenance(model_file.parent)
            source = provenance.source if provenance else "unknown provenance"
            synthetic = provenance is not None and provenance.synthetic
            banner = "  <<< SYNTHETIC WEIGHTS: outputs are meaningless >>>" if synthetic else ""
            print(f"resnet50 version {model_file.parent.name}: {source}{banner}", flush=True)
        print(f"resnet50 configuration: {args.config_name} ({describe_runner(repository, args.config_name)})",
              flush=True)
        print(f"ready: HTTP {server.http_url}  gRPC {server.grpc_url}  metrics {server.metrics_url}", flush=True)
        access = (f"open with header '{ADMIN_KEY_HEADER}' (${ADMIN_KEY_ENV})" if admin_key
                  else f"closed (set ${ADMIN_KEY_ENV} to open them with header '{ADMIN_KEY_HEADER}')")
        print(f"admin APIs ({', '.join(RESTRICTED_APIS)}): {access}", flush=True)
        print("Ctrl-C to stop", flush=True)
        if args.api:
            serve_api(args, triton_url=server.grpc_url)  # returns on Ctrl-C or SIGTERM, then Triton stops
            return EXIT_OK
        return server.wait()
    except (KeyboardInterrupt, _Terminated):
        print("stopping (finishing in-flight requests)...", file=sys.stderr, flush=True)
        return EXIT_OK
    finally:
        server.stop()
