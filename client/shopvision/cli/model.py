"""``shopvision model build|promote|rollback``: assemble the served repository, swap versions live."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from shopvision.cli._common import EXIT_OK, add_json_option, add_url_option, print_json
from shopvision.serving.repository import DEFAULT_TEMPLATE, REPOSITORY_ENV, default_repository
from shopvision.serving.weights import DEFAULT_ZOO_MODEL, ZOO_MODELS

if TYPE_CHECKING:
    from shopvision.serving.lifecycle import PromotionReport


def add_repository_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, default=None, metavar="DIR",
                        help=f"the built model repository (default: ${REPOSITORY_ENV} or {default_repository()})")


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
    from shopvision.serving.build import AUTO, build_model
    from shopvision.serving.repository import assemble

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
    add_lifecycle_actions(
        actions, handler=run_lifecycle,
        texts={"promote": "check a built version on the running server, then serve it",
               "rollback": "serve again the version that served before the last promotion"},
        epilog="examples:\n  shopvision model build --weights resnet50-v1-12-int8 --version 2\n"
               "  shopvision model promote 2 --url grpc://localhost:8001\n"
               "  shopvision model rollback --url grpc://localhost:8001")


def add_lifecycle_actions(actions: argparse._SubParsersAction, *, texts: dict[str, str], epilog: str,
                          handler: Callable[[argparse.Namespace], int]) -> None:
    """``promote VERSION`` and ``rollback``: the same options for resnet50 versions and categories heads."""
    for name, text in texts.items():
        action = actions.add_parser(
            name, help=text,
            description=f"{text[0].upper()}{text[1:]}. Needs `shopvision serve --model-control explicit`, the admin "
                        "key in $SHOPVISION_ADMIN_KEY and the server's model repository on this filesystem. "
                        "No request is dropped; a failed check leaves what served serving.",
            epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "promote":
            action.add_argument("version", type=int)
        add_repository_argument(action)
        add_url_option(action)
        add_json_option(action, "the outcome and each check")
        action.set_defaults(handler=handler)


def run_lifecycle(args: argparse.Namespace) -> int:
    from shopvision.serving.lifecycle import promote, rollback

    return run_promotion(args, promote=promote, rollback=rollback, subject="resnet50 version")


def run_promotion(args: argparse.Namespace, *, promote: Callable[..., PromotionReport],
                  rollback: Callable[..., PromotionReport], subject: str) -> int:
    """``promote VERSION`` or ``rollback`` on the server at ``--url``, then what serves now."""
    repository = args.repository or default_repository()
    if getattr(args, "version", None) is not None:
        report = promote(repository, args.version, url=args.url, admin_key=admin_key())
    else:
        report = rollback(repository, url=args.url, admin_key=admin_key())
    return print_promotion(report, subject=subject, as_json=args.json)


def admin_key() -> str:
    import os

    from shopvision.contract import ADMIN_KEY_ENV
    from shopvision.serving.lifecycle import PromotionError

    key = os.environ.get(ADMIN_KEY_ENV)
    if not key:
        raise PromotionError(f"set ${ADMIN_KEY_ENV} to the server's admin key: loading models is an admin API")
    return key


def print_promotion(report: PromotionReport, *, subject: str, as_json: bool = False) -> int:
    """The checks, then one line: what serves now (or all of it as one JSON document)."""
    from shopvision.cli._common import EXIT_FAILED

    failed = not report.promoted and report.version != report.previous
    if as_json:
        print_json({"subject": subject, **asdict(report)})
        return EXIT_FAILED if failed else EXIT_OK
    for check, outcome in report.checks.items():
        print(f"check {check}: {outcome}")
    if report.promoted:
        print(f"{subject} {report.version} is serving (was {report.previous})")
        return EXIT_OK
    if report.version == report.previous:
        print(f"nothing to do: {report.reason}")
        return EXIT_OK
    print(f"{subject} {report.version} NOT promoted: {report.reason}; {subject} {report.previous} keeps serving",
          file=sys.stderr)
    return EXIT_FAILED
