"""``eval``: accuracy on a labelled sample, optionally against a second server, and embedding drift."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from shopvision.cli._common import EXIT_FAILED, EXIT_OK, ProgressBar, add_json_option, add_url_option, print_json

if TYPE_CHECKING:
    from shopvision.evaluation import EvalReport


def register(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "eval", help="top-1/top-5 accuracy on a labelled sample; compare two servers; embedding drift",
        description="DATASET is a folder tree class_name/*.jpg or a CSV image_path,label with ImageNet class "
                    "names (or indices). Writes eval.json and eval.md to --out.",
        epilog="examples:\n  shopvision eval labelled/ --out eval/\n"
               "  shopvision eval sample.csv --url grpc://fp32:8001 --compare-url grpc://int8:8001\n"
               "  shopvision eval labelled/ --save-reference reference.npz       # once, on checked photos\n"
               "  shopvision eval this-week/ --reference reference.npz           # later: drift\n"
               "  shopvision eval shop.csv --label-map shop-to-imagenet.csv      # shop_label,imagenet_label",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("dataset", metavar="DATASET")
    evaluate.add_argument("--compare-url", help="a second server (e.g. the int8 model) evaluated on the same data")
    evaluate.add_argument("--label-map", type=Path, metavar="CSV", help="shop_label,imagenet_label rows")
    evaluate.add_argument("--out", type=Path, default=Path("eval"), help="folder for eval.json and eval.md")
    add_json_option(evaluate, "eval.json's document")
    evaluate.add_argument("--reference", type=Path, metavar="NPZ", help="embedding statistics to measure drift against")
    evaluate.add_argument("--save-reference", type=Path, metavar="NPZ", help="store this sample's embedding statistics")
    add_url_option(evaluate)
    evaluate.set_defaults(handler=run_eval)


def _label_map(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    with path.open(newline="", encoding="utf-8-sig") as stream:
        return {row[0]: row[1] for row in csv.reader(stream) if len(row) >= 2 and row[0] != "shop_label"}


def run_eval(args: argparse.Namespace) -> int:
    import shopvision
    from shopvision.evaluation import EmbeddingStats, evaluate, read_dataset

    dataset = read_dataset(args.dataset)
    label_map = _label_map(args.label_map)
    reports, drift = [], None
    for url in filter(None, [args.url, args.compare_url]):
        with shopvision.Client(url) as client:
            report, embeddings = evaluate(client, dataset, label_map=label_map, progress=ProgressBar(f"eval {url}"))
        reports.append(report)
        if url == args.url:
            stats = EmbeddingStats.of(embeddings) if len(embeddings) else None
            if stats and args.save_reference:
                stats.save(args.save_reference)
            if stats and args.reference:
                drift = stats.drift_from(EmbeddingStats.load(args.reference))
    args.out.mkdir(parents=True, exist_ok=True)
    document = {"dataset": args.dataset, "reports": [asdict(report) for report in reports], "drift": drift}
    (args.out / "eval.json").write_text(json.dumps(document, indent=2))
    text = markdown(args.dataset, reports, drift)
    (args.out / "eval.md").write_text(text)
    if args.json:
        print_json(document)
    else:
        print(text)
    for report in reports:
        for path, reason in report.failed:
            print(f"{path}: FAILED: {reason}", file=sys.stderr)
    return EXIT_FAILED if any(report.failed for report in reports) else EXIT_OK


def markdown(dataset: str, reports: list[EvalReport], drift: dict | None) -> str:
    lines = [f"# Evaluation of {dataset}", "", "| server | weights | images | top-1 | top-5 | images/s | failed |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r.url} | {r.model_source} | {r.images} | {r.top1_accuracy:.2%} | {r.top5_accuracy:.2%} | "
              f"{r.images_per_s} | {len(r.failed)} |" for r in reports]
    if len(reports) == 2:
        first, second = reports
        lines += ["", f"Difference (second − first): top-1 {second.top1_accuracy - first.top1_accuracy:+.2%}, "
                      f"top-5 {second.top5_accuracy - first.top5_accuracy:+.2%}, speed "
                      f"{second.images_per_s / first.images_per_s:.2f}×."]
    if any(r.failed for r in reports):
        lines += ["", "Images the server could not read count as misses: the accuracies divide by every image."]
    if any("synthetic" in r.model_source for r in reports):
        lines += ["", "**Synthetic weights: these accuracies are meaningless.**"]
    lines += ["", f"## Per class ({reports[0].url})", "", "| class | images | top-1 | top-5 | most confused with |",
              "|---|---|---|---|---|"]
    for label, stats in reports[0].per_class.items():
        worst = sorted(stats.confused_with.items(), key=lambda item: (-item[1], item[0]))[:3]
        confused = ", ".join(f"{name} ({count})" for name, count in worst)
        lines.append(f"| {label} | {stats.images} | {stats.top1 / stats.images:.0%} | "
                     f"{stats.top5 / stats.images:.0%} | "
                     f"{confused or '–'} |")
    if drift is not None:
        lines += ["", "## Embedding drift against the reference", "",
                  f"Centre shift (cosine distance between mean embeddings): {drift['centre_shift_cosine_distance']}; "
                  f"spread {drift['spread']} vs {drift['reference_spread']} (ratio {drift['spread_ratio']})."]
    return "\n".join(lines) + "\n"
