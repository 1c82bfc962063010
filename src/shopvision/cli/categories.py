"""``shopvision categories train|promote|rollback|list``: the shop's own categories as a served head."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from shopvision.cli._common import (
    EXIT_OK,
    ProgressBar,
    add_json_option,
    add_repository_argument,
    add_url_option,
    print_json,
)
from shopvision.cli.promotion import CATEGORIES_HEADS, add_promotion_actions
from shopvision.repository.files import DEFAULT_TEMPLATE, default_repository


def register(commands: argparse._SubParsersAction) -> None:
    categories = commands.add_parser("categories", help="train the shop's own categories and serve them")
    actions = categories.add_subparsers(dest="categories_command", required=True, metavar="ACTION")
    train = actions.add_parser(
        "train", help="fit a categories head on labelled photos and install it as a new version",
        description="Embed labelled photos through the server (or take their vectors from a catalog), fit a "
                    "multinomial logistic regression (scikit-learn; regularisation by cross-validation), report "
                    "held-out accuracy, per-category precision/recall, confusions and calibration, and install "
                    "the head (ONNX: Gemm + Softmax) as the next version of the categories model. It serves "
                    "once promoted (or, before any promotion, when the repository is next assembled).",
        epilog="SOURCE:\n  a folder with one sub-folder of photos per category (shoes/, bags/, ...)\n"
               "  a CSV with image_path,category (paths relative to the CSV)\n"
               "  the catalog's CSV (product_id,image_path,...) with a category column; with --catalog, the\n"
               "  catalog's vectors are reused for products whose photo is unchanged\n"
               "examples:\n  shopvision categories train labelled/\n"
               "  shopvision categories train products.csv --catalog catalog/\n"
               "  shopvision categories promote 1 --url grpc://localhost:8001",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("source", metavar="SOURCE")
    train.add_argument("--catalog", metavar="DIR", help="reuse this catalog's vectors (same served model)")
    train.add_argument("--skip-unreadable", action="store_true",
                       help="train without photos that cannot be read or are refused (listed in the report); "
                            "without it they stop the training")
    train.add_argument("--min-photos", type=int, default=None, metavar="N",
                       help="photos a category needs at least (default: 10)")
    train.add_argument("--seed", type=int, default=0, help="seed of the train/held-out split and the folds")
    train.add_argument("--report-dir", type=Path, metavar="DIR",
                       help="also write the report here (it is always written next to the head)")
    train.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE,
                       help=f"the repository template (default: ./{DEFAULT_TEMPLATE})")
    add_repository_argument(train)
    add_url_option(train)
    add_json_option(train, "the version installed and its training report")
    train.set_defaults(handler=run_train)

    add_promotion_actions(
        actions, target=CATEGORIES_HEADS,
        texts={"promote": "check a trained head on the running server, then serve it (0: no head)",
               "rollback": "serve again the head (or no head) that served before the last promotion"},
        epilog="examples:\n  shopvision categories promote 2 --url grpc://localhost:8001\n"
               "  shopvision categories promote 0                  # no head: the ensemble as without one\n"
               "  shopvision categories rollback")

    listing = actions.add_parser("list", help="trained heads: categories, held-out accuracy, the weights they were "
                                              "trained on, and which one serves (*)")
    add_repository_argument(listing)
    add_json_option(listing, "each head with its provenance")
    listing.set_defaults(handler=run_list)


def run_train(args: argparse.Namespace) -> int:
    import shopvision
    from shopvision.catalog import Catalog
    from shopvision.categories.dataset import MIN_PHOTOS_PER_CATEGORY
    from shopvision.categories.pipeline import train_and_install, write_report

    with contextlib.ExitStack() as stack:
        client = stack.enter_context(shopvision.Client(args.url))
        catalog = stack.enter_context(Catalog.open(args.catalog)) if args.catalog else None
        installed = train_and_install(
            args.source, client, repository=args.repository or default_repository(), template=args.template,
            catalog=catalog, seed=args.seed, minimum=args.min_photos or MIN_PHOTOS_PER_CATEGORY,
            skip_unusable=args.skip_unreadable, progress=ProgressBar("embed"))
    if args.report_dir:
        write_report(args.report_dir, installed.report, installed.markdown)
    if args.json:
        print_json({"version": installed.version, "report": installed.report.to_record()})
        return EXIT_OK
    print(installed.markdown)
    print(f"installed categories head {installed.version}; serve it with "
          f"`shopvision categories promote {installed.version}`")
    return EXIT_OK


def run_list(args: argparse.Namespace) -> int:
    from shopvision.repository.files import CategoryHeads

    heads = CategoryHeads(args.repository or default_repository())
    serving = heads.serving_version()
    if args.json:
        print_json([{"version": version, "serving": version == serving,
                     "provenance": heads.provenance(version).to_record()} for version in heads.built_versions()])
        return EXIT_OK
    if not heads.built_versions():
        print("no categories head trained: `shopvision categories train SOURCE`")
    for version in heads.built_versions():
        provenance = heads.provenance(version)
        synthetic = " SYNTHETIC" if provenance.embeddings.synthetic else ""
        marker = "*" if version == serving else " "
        print(f"{marker} {version}  held-out accuracy {provenance.held_out_accuracy:.3f} "
              f"(chance {provenance.chance:.3f})  {len(provenance.categories)} categories: "
              f"{', '.join(provenance.categories)}  trained on{synthetic} weights "
              f"{provenance.embeddings.source} {str(provenance.embeddings.model_sha256)[:12]}")
    return EXIT_OK
