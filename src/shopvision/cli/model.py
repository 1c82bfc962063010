"""``shopvision model build|promote|rollback``: assemble the served repository, swap versions live."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from shopvision.cli._common import EXIT_OK, add_json_option, add_repository_argument, print_json
from shopvision.cli.promotion import RESNET_VERSIONS, add_promotion_actions
from shopvision.modelbuild.weights import DEFAULT_ZOO_MODEL, ZOO_MODELS
from shopvision.repository.files import DEFAULT_TEMPLATE, default_repository


def register(commands: argparse._SubParsersAction) -> None:
    model = commands.add_parser("model", help="build model versions, promote them on a running server, roll back")
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build", help="assemble the served model repository from the template, with a backbone's weights",
        description="Assemble the model repository tritonserver serves from the template in git (configs, "
                    "Python models, labels; the template is never written), then download, copy or generate the "
                    "backbone (ResNet50 by default; any ImageNet-style ONNX classifier), add the softmax and the "
                    "L2-normalised embedding (its global-average pool) as outputs, and write them with their "
                    "provenance. Every config takes the backbone's embedding width. Rerun it after editing the "
                    "template: built weights and promotions are kept.",
        epilog="weights:\n"
               f"  auto                  {DEFAULT_ZOO_MODEL} when the network allows, else synthetic (with a warning)\n"
               + "".join(f"  {name:<21} {zoo.architecture}, ONNX Model Zoo, top-1 {zoo.top1} published, "
                         "sha256-verified\n"
                         for name, zoo in ZOO_MODELS.items())
               + "  synthetic             exact ResNet50 v1.5 architecture, seeded random weights: TESTS ONLY\n"
               "  PATH                  any ImageNet ONNX classifier: NCHW float input at 224, 1000 classes,\n"
               "                        fp32 or quantised (torchvision, timm, zoo; a known file keeps its name)\n"
               "  (none)                keep the built weights; build version 1 with auto if none is built\n"
               "examples:\n  shopvision model build\n  shopvision model build --weights auto\n"
               "  shopvision model build --weights ./resnet50_torchvision.onnx --version 2\n"
               "  shopvision model build --weights ../shared/data/mobilenetv2-12-int8/model.onnx",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--weights", metavar="SOURCE")
    build.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE,
                       help=f"the repository template (default: ./{DEFAULT_TEMPLATE})")
    add_repository_argument(build)
    build.add_argument("--version", type=int, default=1)
    build.add_argument("--seed", type=int, default=0, help="seed of synthetic weights")
    build.add_argument("--embedding-node", metavar="NAME",
                       help="the node (or tensor) whose output is the embedding, where inspection cannot find the "
                            "global-average pool above the classifier")
    add_json_option(build, "the repository and the version built, with its provenance,")
    build.set_defaults(handler=run_build)
    register_lifecycle(actions)


def run_build(args: argparse.Namespace) -> int:
    from shopvision.modelbuild.build import AUTO, build_model
    from shopvision.repository.files import assemble

    repository = args.repository or default_repository()
    files = assemble(args.template, repository)
    if args.weights is None and files.built_versions():
        if args.json:
            print_json({"repository": str(repository), "template": str(args.template),
                        "built_versions": files.built_versions(), "built": None})
        else:
            print(f"assembled {repository} from {args.template} (built versions kept: {files.built_versions()})")
        return EXIT_OK
    result = build_model(args.weights or AUTO, repository, version=args.version, seed=args.seed,
                         embedding_node=args.embedding_node)
    provenance = result.provenance
    if result.fallback_reason:
        print(f"WARNING: real weights unavailable ({result.fallback_reason})", file=sys.stderr)
    if provenance.synthetic:
        print("WARNING: built SYNTHETIC weights (seeded random): classes and embeddings are meaningless; "
              "for tests and offline demos only.", file=sys.stderr)
    if args.json:
        print_json({"repository": str(repository), "template": str(args.template),
                    "built_versions": files.built_versions(),
                    "built": {"version": args.version, "model_path": str(result.model_path),
                              "fallback_reason": result.fallback_reason, "provenance": asdict(provenance)}})
        return EXIT_OK
    print(f"wrote {result.model_path}: {provenance.backbone} from {provenance.source}, "
          f"{provenance.embedding_dim}-d embedding (model sha256 {provenance.model_sha256})")
    return EXIT_OK


def register_lifecycle(actions: argparse._SubParsersAction) -> None:
    add_promotion_actions(
        actions, target=RESNET_VERSIONS,
        texts={"promote": "check a built version on the running server, then serve it",
               "rollback": "serve again the version that served before the last promotion"},
        epilog="examples:\n  shopvision model build --weights resnet50-v1-12-int8 --version 2\n"
               "  shopvision model promote 2 --url grpc://localhost:8001\n"
               "  shopvision model rollback --url grpc://localhost:8001")
