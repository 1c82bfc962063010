"""Entry point of the ``shopvision`` command."""

from __future__ import annotations

import argparse
import sys
import warnings

from shopvision.cli import api, catalog, categories, evaluate, infer, model, serve
from shopvision.cli._common import EXIT_UNAVAILABLE, EXIT_USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shopvision",
        description="ResNet50 classification and visual search served by NVIDIA Triton.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (model, serve, api, infer, catalog, categories, evaluate):
        module.register(commands)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    return f"WARNING: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    from shopvision.errors import ServerUnavailableError, ShopvisionError

    try:
        return args.handler(args)
    except ServerUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (ShopvisionError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
