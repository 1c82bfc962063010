"""Entry point of the ``shopvision`` command."""

from __future__ import annotations

import argparse
import sys
import warnings

from shopvision import __version__
from shopvision.cli import api, catalog, categories, evaluate, infer, model, serve
from shopvision.cli._common import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNAVAILABLE, EXIT_USAGE, UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shopvision",
        description="ResNet50 classification and visual search served by NVIDIA Triton.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (model, serve, api, infer, catalog, categories, evaluate):
        module.register(commands)
    return parser


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    return f"WARNING: {message}\n"


def main(argv: list[str] | None = None) -> int:
    """Run a command; its exit status: 0 done, 1 failed, 2 usage, 3 server unavailable, 130 interrupted.

    Only shopvision's own errors (and the operating system's, which name the file or address) become one line
    on stderr. Any other exception is a bug, and its traceback is what a report needs, so it is not caught.
    """
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    from shopvision.errors import ServerUnavailableError, ShopvisionError

    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as error:
        print(f"usage error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ServerUnavailableError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except (ShopvisionError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
