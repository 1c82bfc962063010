"""``classify``, ``embed``, ``health`` and ``info``: talk to a running server."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from shopvision.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    ProgressBar,
    add_json_option,
    add_url_option,
    collect_images,
    print_json,
)

if TYPE_CHECKING:
    from shopvision.types import ImageResult


def register(commands: argparse._SubParsersAction) -> None:
    classify = commands.add_parser(
        "classify", help="top-k ImageNet classes of images",
        description="Classify image files (directories are searched recursively).",
        epilog="examples:\n  shopvision classify shoe.jpg bag.png --top-k 3\n"
               "  shopvision classify shoe.jpg --categories        # and the shop's own top 3 categories\n"
               "  shopvision classify catalog/ --json > classes.jsonl\n"
               "  shopvision classify photo.jpg --url http://triton:8000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    classify.add_argument("images", nargs="+", metavar="IMG|DIR")
    classify.add_argument("--top-k", type=int, default=5, metavar="K")
    classify.add_argument("--categories", type=int, nargs="?", const=3, default=0, metavar="K",
                          help="also the top K (default 3) of the shop's own categories (a trained head must serve)")
    classify.add_argument("--json", action="store_true", help="one JSON object per image and line")
    add_url_option(classify)
    classify.set_defaults(handler=run_classify)

    embed = commands.add_parser(
        "embed", help="embeddings of images (the served backbone's width) into a .npy file",
        description="Embed image files; writes FILE.npy (float32, n x the served backbone's width, L2-normalised) and "
                    "FILE.files.txt (the image of each row, in order). Failed images are left out and reported.",
        epilog="example:\n  shopvision embed catalog/ --out catalog.npy",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    embed.add_argument("images", nargs="+", metavar="IMG|DIR")
    embed.add_argument("--out", required=True, type=Path, metavar="FILE.npy")
    add_json_option(embed, "the files written and the counts")
    add_url_option(embed)
    embed.set_defaults(handler=run_embed)

    health = commands.add_parser("health", help="is the server live and the model ready?")
    add_url_option(health)
    add_json_option(health, "the URL and whether it is ready")
    health.set_defaults(handler=run_health)

    info = commands.add_parser("info", help="server version, model, batching and weights provenance")
    add_json_option(info, "the server, model and weights")
    add_url_option(info)
    info.set_defaults(handler=run_info)


def _analyze_files(args: argparse.Namespace, *, top_k: int, label: str,
                   categories: int = 0) -> tuple[list[Path], list[ImageResult]]:
    import shopvision

    paths = collect_images(args.images)
    if not paths:
        return [], []
    with shopvision.Client(args.url) as client:
        return paths, client.analyze(paths, top_k=top_k, categories=categories, on_error="report",
                                     progress=ProgressBar(label))


def run_classify(args: argparse.Namespace) -> int:
    paths, results = _analyze_files(args, top_k=args.top_k, label="classify", categories=args.categories)
    if not paths:
        print("no images found", file=sys.stderr)
        return EXIT_FAILED
    failures = 0
    for path, result in zip(paths, results, strict=True):
        if result.error is not None:
            failures += 1
            print(f"{path}: FAILED: {result.error.reason}", file=sys.stderr)
            if args.json:
                print(json.dumps({"image": str(path), "error": result.error.reason}))
            continue
        if args.json:
            line = {"image": str(path), "predictions": [asdict(p) for p in result.predictions]}
            if args.categories:
                line["categories"] = [asdict(p) for p in result.categories]
            print(json.dumps(line))
            continue
        ranked = "   ".join(f"{rank}. {p.label} {p.score:.3f}" for rank, p in enumerate(result.predictions, 1))
        shop = "   ".join(f"{p.label} {p.score:.3f}" for p in result.categories)
        print(f"{path}\t{ranked}" + (f"\tcategories: {shop}" if args.categories else ""))
    return _summarise(failures, len(paths))


def run_embed(args: argparse.Namespace) -> int:
    paths, results = _analyze_files(args, top_k=0, label="embed")
    if not paths:
        print("no images found", file=sys.stderr)
        return EXIT_FAILED
    kept = [(path, result.embedding) for path, result in zip(paths, results, strict=True)
            if result.embedding is not None]
    for path, result in zip(paths, results, strict=True):
        if result.error is not None:
            print(f"{path}: FAILED: {result.error.reason}", file=sys.stderr)
    if not kept:
        print("no image could be embedded; nothing written", file=sys.stderr)
        return _summarise(len(paths), len(paths))
    out = args.out if args.out.suffix == ".npy" else args.out.with_suffix(".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    vectors = np.stack([vector for _, vector in kept])
    np.save(out, vectors.astype(np.float32))
    out.with_suffix(".files.txt").write_text("".join(f"{path}\n" for path, _ in kept))
    if args.json:
        print_json({"embeddings": str(out), "files": str(out.with_suffix(".files.txt")), "embedded": len(kept),
                    "failed": len(paths) - len(kept)})
    else:
        print(f"wrote {len(kept)} embeddings to {out} and their files to {out.with_suffix('.files.txt')}")
    return _summarise(len(paths) - len(kept), len(paths))


def run_health(args: argparse.Namespace) -> int:
    import shopvision

    with shopvision.Client(args.url, retry=shopvision.NO_RETRY, timeout_s=5) as client:
        ready = client.is_ready()
    if args.json:
        print_json({"url": args.url, "ready": ready})
    else:
        print(f"{args.url}: {'ready' if ready else 'NOT READY'}")
    return EXIT_OK if ready else EXIT_UNAVAILABLE


def run_info(args: argparse.Namespace) -> int:
    import shopvision

    with shopvision.Client(args.url, retry=shopvision.NO_RETRY, timeout_s=10) as client:
        info = client.info()
    if args.json:
        print_json(asdict(info))
        return EXIT_OK
    weights = info.provenance
    print(f"server        {info.url} (Triton {info.server_version})")
    print(f"model         {info.model} versions {', '.join(info.model_versions)}")
    print(f"batching      max_batch_size {info.max_batch_size}; resnet50 dynamic batching {info.dynamic_batching}")
    print(f"weights       {weights.source}{'  <<< SYNTHETIC: meaningless outputs >>>' if weights.synthetic else ''}")
    print(f"backbone      {weights.backbone}, {weights.embedding_dim}-d embeddings")
    print(f"model sha256  {weights.model_sha256}")
    return EXIT_OK


def _summarise(failures: int, total: int) -> int:
    if failures:
        print(f"{failures} of {total} images failed", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
