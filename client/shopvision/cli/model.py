"""``shopvision model build``: put ResNet50 weights into the model repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shopvision.cli._common import EXIT_OK
from shopvision.modeltools.sources import DEFAULT_ZOO_MODEL, ZOO_MODELS

DEFAULT_REPOSITORY = Path("model_repository")


def register(commands: argparse._SubParsersAction) -> None:
    model = commands.add_parser("model", help="build model versions, promote them on a running server, roll back")
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build", help="write resnet50/<version>/model.onnx",
        description="Download or generate ResNet50 weights, add the softmax and L2-normalised embedding "
                    "outputs, and write them with their provenance into the model repository.",
        epilog="weights:\n"
               f"  auto                  {DEFAULT_ZOO_MODEL} when the network allows, else synthetic (with a warning)\n"
               + "".join(f"  {name:<21} ONNX Model Zoo, top-1 {zoo.top1} published, sha256-verified\n"
                         for name, zoo in ZOO_MODELS.items())
               + "  synthetic             exact ResNet50 v1.5 architecture, seeded random weights: TESTS ONLY\n"
               "  PATH                  any local ResNet50 ONNX export (torchvision, timm, zoo)\n"
               "examples:\n  shopvision model build --weights auto\n"
               "  shopvision model build --weights ./resnet50_torchvision.onnx --version 2",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--weights", required=True, metavar="SOURCE")
    build.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    build.add_argument("--version", type=int, default=1)
    build.add_argument("--seed", type=int, default=0, help="seed of synthetic weights")
    build.set_defaults(handler=run_build)
    register_lifecycle(actions)


def run_build(args: argparse.Namespace) -> int:
    from shopvision.modeltools.build import build_model

    result = build_model(args.weights, args.repository, version=args.version, seed=args.seed)
    provenance = result.provenance
    if result.fallback_reason:
        print(f"WARNING: real weights unavailable ({result.fallback_reason})", file=sys.stderr)
    if provenance.synthetic:
        print("WARNING: built SYNTHETIC weights (seeded random): classes and embeddings are meaningless; "
              "for tests and offline demos only.", file=sys.stderr)
    print(f"wrote {result.model_path} from {provenance.source} (model sha256 {provenance.model_sha256})")
    return EXIT_OK


def register_lifecycle(actions: argparse._SubParsersAction) -> None:
    for name, text in (("promote", "check a built version on the running server, then serve it"),
                       ("rollback", "serve again the version that served before the last promotion")):
        action = actions.add_parser(
            name, help=text,
            description=f"{text[0].upper()}{text[1:]}. Needs `shopvision serve --model-control explicit`, the admin "
                        "key in $SHOPVISION_ADMIN_KEY and the server's model repository on this filesystem. "
                        "No request is dropped; a failed check leaves the current version serving.",
            epilog="examples:\n  shopvision model build --weights resnet50-v1-12-int8 --version 2\n"
                   "  shopvision model promote 2 --url http://localhost:8000\n"
                   "  shopvision model rollback --url http://localhost:8000",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "promote":
            action.add_argument("version", type=int)
        action.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
        action.add_argument("--url", default="http://localhost:8000", help="the server's HTTP endpoint")
        action.set_defaults(handler=run_lifecycle)


def run_lifecycle(args: argparse.Namespace) -> int:
    import json
    import os

    from shopvision.cli._common import EXIT_SOME_FAILED
    from shopvision.modeltools.lifecycle import PromotionError, promote, rollback
    from shopvision.server import ADMIN_KEY_ENV, ADMIN_KEY_HEADER

    key = os.environ.get(ADMIN_KEY_ENV)
    if not key:
        raise PromotionError(f"set ${ADMIN_KEY_ENV} to the server's admin key: loading models is an admin API")
    common = {"url": args.url, "admin_key": key, "headers_key": ADMIN_KEY_HEADER}
    if args.model_command == "promote":
        report = promote(args.repository, args.version, **common)
    else:
        report = rollback(args.repository, **common)
    print(json.dumps(report.checks, indent=2))
    if report.promoted:
        print(f"resnet50 version {report.version} is serving (was {report.previous})")
        return EXIT_OK
    print(f"version {report.version} NOT promoted: {report.reason}; version {report.previous} keeps serving",
          file=sys.stderr)
    return EXIT_SOME_FAILED
