"""``shopvision backend build``: Triton's native ONNX Runtime backend for the local tritonserver."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shopvision.cli._common import EXIT_OK, EXIT_USAGE
from shopvision.contract import STAND_IN_CONFIG_NAME


def register(commands: argparse._SubParsersAction) -> None:
    from shopvision.serving.native_backend import MIRROR_ENV, ONNXRUNTIME_VERSION, TRITON_BRANCH

    backend = commands.add_parser("backend", help="build Triton's ONNX Runtime backend for `shopvision serve`")
    actions = backend.add_subparsers(dest="backend_command", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build", help="build it once into the cache (about a minute; needs cmake, g++, make, rapidjson-dev)",
        description=f"Build Triton's onnxruntime_backend ({TRITON_BRANCH}) against ONNX Runtime {ONNXRUNTIME_VERSION} "
                    "into $SHOPVISION_CACHE_DIR (default ~/.cache/shopvision), so that `shopvision serve` runs the "
                    "repository's native configuration as the official container does. Inputs come from GitHub "
                    f"(pinned commits) and npm (sha256-pinned), or from a mirror folder (--mirror or ${MIRROR_ENV}). "
                    f"Without a C++ toolchain it says so and `shopvision serve` falls back to {STAND_IN_CONFIG_NAME}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--mirror", type=Path, default=os.environ.get(MIRROR_ENV) or None,
                       help="folder with the pinned source tarballs and header (machines without GitHub)")
    build.add_argument("--require", action="store_true",
                       help="exit non-zero when it cannot be built (CI); by default a failed build is a warning and "
                            f"`shopvision serve` uses {STAND_IN_CONFIG_NAME}")
    build.set_defaults(handler=run_build)


def run_build(args: argparse.Namespace) -> int:
    from shopvision.serving.native_backend import BackendBuildError, build_native_backend

    try:
        directory = build_native_backend(mirror=args.mirror)
    except BackendBuildError as error:
        print(f"{'error' if args.require else 'warning'}: {error}", file=sys.stderr)
        if args.require:
            return EXIT_USAGE
        print(f"`shopvision serve` will use the {STAND_IN_CONFIG_NAME} stand-in (resnet50 in a Python stub) "
              "instead; rerun `shopvision backend build` once the cause above is fixed.", file=sys.stderr)
        return EXIT_OK
    print(f"native ONNX Runtime backend: {directory}")
    return EXIT_OK
