"""``shopvision model build``: put ResNet50 weights into the model repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shopvision.cli._common import EXIT_OK
from shopvision.modeltools.sources import DEFAULT_ZOO_MODEL, ZOO_MODELS

DEFAULT_REPOSITORY = Path("model_repository")


def register(commands: argparse._SubParsersAction) -> None:
    model = commands.add_parser("model", help="build model weights into the repository")
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
